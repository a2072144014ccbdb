import t from 'tap'
import { convexHull, enhancedPrediction, gcRegion } from '../../src/maco/gc-region.ts'
import { seeded } from '../../src/util/rng.ts'

const UNLABELLED = 4

const blank = (w: number, h: number) => new Uint8Array(w * h).fill(UNLABELLED)
const count = (a: Uint8Array) => a.reduce((s, v) => s + v, 0)
type Pt = readonly number[]
const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b))
const points = (s: Uint8Array, w: number, value: number) => {
  const pts: [number, number][] = []
  s.forEach((v, i) => v === value && pts.push([i % w, Math.floor(i / w)]))
  return pts
}

t.test('the hull of a square loop fills the square, and only it', async (t) => {
  const [w, h] = [24, 20]
  const s = blank(w, h)
  for (let i = 5; i <= 15; i++) {
    s[5 * w + i] = 0
    s[15 * w + i] = 0
    s[i * w + 5] = 0
    s[i * w + 15] = 0
  }
  s[10 * w + 10] = 1 // foreground inside plays no part
  s[2 * w + 20] = 3 // nor outside
  const region = gcRegion(s, w, h)
  const expected = Uint8Array.from({ length: w * h }, (_, i) => {
    const [x, y] = [i % w, Math.floor(i / w)]
    return x >= 5 && x <= 15 && y >= 5 && y <= 15 ? 1 : 0
  })
  t.same(region, expected)
})

t.test('the hull of a rotated ellipse loop is the ellipse, to a pixel', async (t) => {
  const [w, h] = [128, 112]
  const [cx, cy, a, b, phi] = [60.3, 55.7, 40, 22, 0.6]
  const s = blank(w, h)
  for (let k = 0; k < 2000; k++) {
    const th = (2 * Math.PI * k) / 2000
    const x = cx + a * Math.cos(th) * Math.cos(phi) - b * Math.sin(th) * Math.sin(phi)
    const y = cy + a * Math.cos(th) * Math.sin(phi) + b * Math.sin(th) * Math.cos(phi)
    s[Math.round(y) * w + Math.round(x)] = 0
  }
  const region = gcRegion(s, w, h)
  // Ellipse "radius" of a pixel centre: 1 on the curve.
  const radius = (x: number, y: number, grow: number) => {
    const [dx, dy] = [x - cx, y - cy]
    const u = dx * Math.cos(phi) + dy * Math.sin(phi)
    const v = -dx * Math.sin(phi) + dy * Math.cos(phi)
    return (u / (a + grow)) ** 2 + (v / (b + grow)) ** 2
  }
  let misplaced = 0
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const inside = region[y * w + x] === 1
      // Loop pixels are rounded by up to 0.71 px, so a margin of 1 px either way.
      if ((inside && radius(x, y, 1) > 1) || (!inside && radius(x, y, -1) <= 1)) misplaced++
    }
  t.equal(misplaced, 0, 'every pixel well inside is in, every pixel well outside is out')
  // The hull's own area (shoelace) against the ellipse's; the pixel count against Pick's
  // theorem for a polygon with lattice vertices: pixels = area + boundary points / 2 + 1.
  const hull = convexHull(points(s, w, 0))
  const edges = hull.map((p, i) => [p, hull[(i + 1) % hull.length]])
  const hullArea = edges.reduce((acc, [p, q]) => acc + p[0] * q[1] - q[0] * p[1], 0) / 2
  const boundary = edges.reduce(
    (acc, [p, q]) => acc + gcd(Math.abs(q[0] - p[0]), Math.abs(q[1] - p[1])),
    0,
  )
  // Every loop pixel is within 0.71 px of the curve: the hull lies between the ellipses
  // with semi-axes 1 px shorter and 1 px longer.
  const [inner, outer] = [Math.PI * (a - 1) * (b - 1), Math.PI * (a + 1) * (b + 1)]
  t.ok(
    hullArea > inner && hullArea < outer,
    `hull area ${hullArea} in (${inner.toFixed(0)}, ${outer.toFixed(0)})`,
  )
  t.equal(count(region), hullArea + boundary / 2 + 1, 'Pick')
})

t.test('too few or collinear class-0 pixels mean GC everywhere', async (t) => {
  const [w, h] = [9, 7]
  const none = blank(w, h)
  t.same(gcRegion(none, w, h), new Uint8Array(w * h).fill(1))
  const two = blank(w, h)
  two[0] = 0
  two[20] = 0
  t.same(gcRegion(two, w, h), new Uint8Array(w * h).fill(1))
  const line = blank(w, h)
  for (let k = 0; k < 6; k++) line[k * w + k] = 0 // the diagonal
  t.same(gcRegion(line, w, h), new Uint8Array(w * h).fill(1))
  t.equal(
    convexHull([
      [0, 0],
      [1, 1],
      [2, 2],
      [3, 3],
    ]).length,
    2,
  )
  // One pixel off the line makes a triangle.
  line[2 * w + 4] = 0
  t.ok(count(gcRegion(line, w, h)) < w * h)
})

t.test('matches a brute-force "inside some triangle of the points" test', async (t) => {
  // Caratheodory: a point is in the convex hull of a planar set iff it lies in a triangle of
  // three of its points (a non-degenerate one when the set is not collinear).
  const inTriangle = (p: Pt, a: Pt, b: Pt, c: Pt) => {
    const side = (o: Pt, u: Pt) => (u[0] - o[0]) * (p[1] - o[1]) - (u[1] - o[1]) * (p[0] - o[0])
    const [d1, d2, d3] = [side(a, b), side(b, c), side(c, a)]
    return (d1 >= 0 && d2 >= 0 && d3 >= 0) || (d1 <= 0 && d2 <= 0 && d3 <= 0)
  }
  const [w, h] = [21, 17]
  for (let trial = 0; trial < 12; trial++) {
    const rng = seeded(31, 'gc', trial)
    const s = blank(w, h)
    const n = 4 + rng.int(8)
    for (let k = 0; k < n; k++) s[rng.int(w * h)] = 0
    const pts = points(s, w, 0)
    const triangles: Pt[][] = []
    for (let i = 0; i < pts.length; i++)
      for (let j = i + 1; j < pts.length; j++)
        for (let k = j + 1; k < pts.length; k++) {
          const [a, b, c] = [pts[i], pts[j], pts[k]]
          if ((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]) !== 0)
            triangles.push([a, b, c])
        }
    const expected = Uint8Array.from({ length: w * h }, (_, i) =>
      triangles.length === 0 ||
      triangles.some(([a, b, c]) => inTriangle([i % w, Math.floor(i / w)], a, b, c))
        ? 1
        : 0,
    )
    t.same(gcRegion(s, w, h), expected, `trial ${trial}: ${pts.length} points`)
  }
})

t.test('another class can serve as the loop', async (t) => {
  const s = blank(5, 5)
  s[0] = 2
  s[4] = 2
  s[20] = 2
  t.equal(count(gcRegion(s, 5, 5, 2)), 15, 'the lower-left triangle, diagonal included')
})

t.test('P_e keeps foreground inside GC and moves it to background outside', async (t) => {
  // Two pixels of one image: the first inside GC, the second outside.
  const po = [0.1, 0.2, 0.3, 0.4, 0.25, 0.5, 0.15, 0.1]
  const pe = enhancedPrediction(po, [1, 0], 4)
  const expected = [0.1, 0.2, 0.3, 0.4, 1, 0, 0, 0]
  t.equal(pe.length, 8)
  t.ok(
    pe.every((v, i) => Math.abs(v - expected[i]) < 1e-12),
    `${pe}`,
  )
})
