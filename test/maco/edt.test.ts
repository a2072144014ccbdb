import t from 'tap'
import { squaredEdt, squaredEdtInPlace } from '../../src/maco/edt.ts'
import { elementCount } from '../../src/util/shape.ts'

/** mulberry32: a small seeded generator so every run draws the same grids. */
const rng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296
}

/** O(n^2): every voxel against every feature voxel, coordinates from the flat index. */
const bruteForce = (features: Uint8Array, dims: number[], spacing: number[]): Float64Array => {
  const coords = (i: number) =>
    dims.map((_, a) => Math.floor(i / dims.slice(0, a).reduce((p, q) => p * q, 1)) % dims[a])
  const feats = [...features.keys()].filter((i) => features[i]).map(coords)
  return Float64Array.from(features, (_, i) => {
    const c = coords(i)
    let best = Infinity
    for (const f of feats) {
      let s = 0
      for (let a = 0; a < dims.length; a++) s += ((c[a] - f[a]) * spacing[a]) ** 2
      best = Math.min(best, s)
    }
    return best
  })
}

const close = (a: Float64Array, b: Float64Array): boolean =>
  a.length === b.length &&
  a.every((x, i) => x === b[i] || Math.abs(x - b[i]) <= 1e-12 * Math.max(1, Math.abs(b[i])))

t.test('a hand-computed anisotropic grid', async (t) => {
  // feature at (0, 0); pixels 2 mm wide, 1 mm high
  t.same([...squaredEdt(new Uint8Array([1, 0, 0, 0, 0, 0]), [3, 2], [2, 1])], [0, 4, 16, 1, 5, 17])
  t.same([...squaredEdt([false, false, true, false], [4])], [4, 1, 0, 1])
})

t.test('no feature gives Infinity everywhere', async (t) => {
  t.ok(squaredEdt(new Uint8Array(12), [3, 4]).every((x) => x === Infinity))
  t.ok(squaredEdt(new Uint8Array(24), [2, 3, 4], [1, 1, 5]).every((x) => x === Infinity))
})

t.test('equals brute force on random 2D and 3D grids, sparse to dense, anisotropic', async (t) => {
  const next = rng(7)
  const shapes = [
    [1, 1],
    [1, 9],
    [9, 1],
    [1, 1, 7],
    [2, 2],
    [17, 5],
    [5, 17],
    [23, 19],
    [6, 7, 5],
    [1, 8, 3],
    [9, 4, 6],
  ]
  const spacings = (n: number) => [
    Array(n).fill(1),
    Array.from({ length: n }, () => 0.3 + next() * 4),
    n === 3 ? [1.37, 1.37, 5] : [0.7, 3],
  ]
  let checked = 0
  for (const dims of shapes) {
    const total = elementCount(dims)
    for (const density of [0, 0.01, 0.1, 0.5, 0.95, 1]) {
      for (const spacing of spacings(dims.length)) {
        const features = Uint8Array.from({ length: total }, () => (next() < density ? 1 : 0))
        const got = squaredEdt(features, dims, spacing)
        if (!close(got, bruteForce(features, dims, spacing)))
          t.fail(`dims ${dims} density ${density} spacing ${spacing.map((s) => s.toFixed(2))}`)
        checked++
      }
    }
  }
  t.equal(checked, shapes.length * 6 * 3, 'every case ran')
})

t.test('a single feature pixel anywhere', async (t) => {
  const dims = [7, 6]
  for (const at of [0, 5, 20, 41]) {
    const features = new Uint8Array(42)
    features[at] = 1
    t.ok(
      close(squaredEdt(features, dims, [1.5, 0.5]), bruteForce(features, dims, [1.5, 0.5])),
      `at ${at}`,
    )
  }
})

t.test('sampled functions: the lower envelope of the parabolas', async (t) => {
  // d(q) = min_r (q - r)^2 + f(r) with f = [5, Infinity, 0.5, Infinity]
  const got = squaredEdtInPlace(Float64Array.from([5, Infinity, 0.5, Infinity]), [4])
  t.same([...got], [4.5, 1.5, 0.5, 1.5])
})

t.test('rejects inconsistent dims and spacing', async (t) => {
  t.throws(() => squaredEdt(new Uint8Array(5), [2, 3]), /need 6 values/)
  t.throws(() => squaredEdt(new Uint8Array(6), [2, 3], [1, 0]), /positive/)
  t.throws(() => squaredEdt(new Uint8Array(6), [2, 3], [1]), /positive/)
})
