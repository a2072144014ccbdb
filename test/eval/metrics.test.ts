import t, { type Test } from 'tap'
import {
  binaryMetrics,
  classMetrics,
  dice,
  diagonalMm,
  meanMetrics,
  percentile,
  surfaceOf,
} from '../../src/eval/metrics.ts'

type P3 = [number, number, number]

/** A 3D mask (x fastest) holding the voxels where `inside(x, y, z)`. */
const maskWhere = (dims: P3, inside: (x: number, y: number, z: number) => boolean): Uint8Array => {
  const m = new Uint8Array(dims[0] * dims[1] * dims[2])
  for (let z = 0, i = 0; z < dims[2]; z++)
    for (let y = 0; y < dims[1]; y++)
      for (let x = 0; x < dims[0]; x++, i++) m[i] = inside(x, y, z) ? 1 : 0
  return m
}

const box = (dims: P3, lo: P3, hi: P3) =>
  maskWhere(
    dims,
    (x, y, z) => x >= lo[0] && x < hi[0] && y >= lo[1] && y < hi[1] && z >= lo[2] && z < hi[2],
  )

/** Ellipsoid-in-voxels sphere of radius r mm around c (voxel units) on an anisotropic grid. */
const sphere = (dims: P3, c: P3, r: number, sp: P3) =>
  maskWhere(dims, (x, y, z) => {
    const dx = (x - c[0]) * sp[0]
    const dy = (y - c[1]) * sp[1]
    const dz = (z - c[2]) * sp[2]
    return dx * dx + dy * dy + dz * dz <= r * r
  })

/**
 * The reference, independent of the EDT: surface voxels by the definition (in the mask, with a
 * face neighbour outside the mask or the grid), then every surface voxel against every other.
 */
const bruteForce = (a: Uint8Array, b: Uint8Array, dims: P3, sp: P3) => {
  const at = (m: Uint8Array, x: number, y: number, z: number) =>
    x >= 0 &&
    y >= 0 &&
    z >= 0 &&
    x < dims[0] &&
    y < dims[1] &&
    z < dims[2] &&
    m[x + dims[0] * (y + dims[1] * z)] === 1
  const faces: P3[] = [
    [1, 0, 0],
    [-1, 0, 0],
    [0, 1, 0],
    [0, -1, 0],
    [0, 0, 1],
    [0, 0, -1],
  ]
  const surface = (m: Uint8Array): P3[] => {
    const out: P3[] = []
    for (let z = 0; z < dims[2]; z++)
      for (let y = 0; y < dims[1]; y++)
        for (let x = 0; x < dims[0]; x++)
          if (at(m, x, y, z) && faces.some(([u, v, w]) => !at(m, x + u, y + v, z + w)))
            out.push([x, y, z])
    return out
  }
  const directed = (from: P3[], to: P3[]) =>
    from.map((p) =>
      Math.min(
        ...to.map((q) =>
          Math.hypot((p[0] - q[0]) * sp[0], (p[1] - q[1]) * sp[1], (p[2] - q[2]) * sp[2]),
        ),
      ),
    )
  const sa = surface(a)
  const sb = surface(b)
  const all = [...directed(sa, sb), ...directed(sb, sa)].sort((x, y) => x - y)
  // numpy's default percentile: linear between the two closest ranks
  const h = (all.length - 1) * 0.95
  const lo = Math.floor(h)
  const hd95 = all[lo] + (h - lo) * ((all[lo + 1] ?? all[lo]) - all[lo])
  return { hd95, asd: all.reduce((s, d) => s + d, 0) / all.length }
}

const near = (t: Test, got: number, want: number, what: string) =>
  t.ok(Math.abs(got - want) <= 1e-9 * Math.max(1, Math.abs(want)), `${what}: ${got} vs ${want}`)

t.test('percentile interpolates like numpy', async (t) => {
  near(t, percentile([1, 2, 3, 4, 10], 95), 8.8, 'np.percentile([1,2,3,4,10], 95)')
  t.equal(percentile([0.5], 95), 0.5)
  t.equal(percentile([1, 3], 95), 2.9)
})

t.test(
  'two cubes shifted by k voxels along x: Dice by hand, distances by brute force',
  async (t) => {
    const dims: P3 = [14, 12, 12]
    const side = 6
    for (const k of [0, 1, 2, 3, 5]) {
      const a = box(dims, [2, 2, 2], [2 + side, 8, 8])
      const b = box(dims, [2 + k, 2, 2], [2 + k + side, 8, 8])
      const m = binaryMetrics(a, b, dims, [1, 1, 1])
      near(t, m.dice, (side - k) / side, `Dice, shift ${k}`)
      const ref = bruteForce(a, b, dims, [1, 1, 1])
      near(t, m.hd95, ref.hd95, `HD95, shift ${k}`)
      near(t, m.asd, ref.asd, `ASD, shift ${k}`)
    }
  },
)

t.test(
  "matches scipy/numpy with medpy's algorithm (values computed outside this project)",
  async (t) => {
    // scipy.ndimage binary_erosion + distance_transform_edt(sampling), np.percentile, union mean
    const cubes = binaryMetrics(
      box([12, 12, 12], [2, 2, 2], [8, 8, 8]),
      box([12, 12, 12], [4, 2, 2], [10, 8, 8]),
      [12, 12, 12],
      [1, 1, 1],
    )
    near(t, cubes.dice, 2 / 3, 'cubes Dice')
    near(t, cubes.hd95, 2, 'cubes HD95')
    near(t, cubes.asd, 0.7368421052631579, 'cubes ASD')
    const sp: P3 = [1.2, 0.8, 3]
    const dims: P3 = [20, 18, 9]
    const a = sphere(dims, [9, 8, 4], 6, sp)
    const b = sphere(dims, [10.5, 9, 5], 5, sp)
    t.equal(
      a.reduce((s, v) => s + v, 0),
      297,
    )
    t.equal(
      b.reduce((s, v) => s + v, 0),
      184,
    )
    const m = binaryMetrics(a, b, dims, sp)
    near(t, m.dice, 0.4864864864864865, 'spheres Dice')
    near(t, m.hd95, 3.8418745424597094, 'spheres HD95')
    // medpy's assd (mean of the two directed means) would be 2.029888416466513
    near(t, m.asd, 2.086393787249305, 'spheres ASD (mean of the union)')
  },
)

t.test('spheres on anisotropic grids equal brute force', async (t) => {
  const cases: { dims: P3; sp: P3; a: [P3, number]; b: [P3, number] }[] = [
    { dims: [16, 16, 16], sp: [1, 1, 1], a: [[7, 7, 7], 5], b: [[8, 7, 6.5], 4] },
    { dims: [24, 20, 8], sp: [1.37, 1.37, 5], a: [[11, 10, 3.5], 12], b: [[13, 9, 4], 10] },
    { dims: [10, 30, 6], sp: [2, 0.7, 3.3], a: [[5, 14, 2], 7], b: [[4, 17, 3], 8] },
    // cut by the grid's border, which counts as outside
    { dims: [9, 8, 5], sp: [1, 1.5, 4], a: [[1, 1, 1], 7], b: [[7, 6, 3], 6] },
  ]
  for (const c of cases) {
    const a = sphere(c.dims, c.a[0], c.a[1], c.sp)
    const b = sphere(c.dims, c.b[0], c.b[1], c.sp)
    const m = binaryMetrics(a, b, c.dims, c.sp)
    const ref = bruteForce(a, b, c.dims, c.sp)
    near(t, m.hd95, ref.hd95, `HD95 ${c.sp}`)
    near(t, m.asd, ref.asd, `ASD ${c.sp}`)
  }
})

t.test('a one-slice plate shifted by one 5 mm slice is 5 mm away everywhere', async (t) => {
  const dims: P3 = [10, 10, 6]
  const m = binaryMetrics(
    box(dims, [2, 2, 2], [8, 8, 3]),
    box(dims, [2, 2, 3], [8, 8, 4]),
    dims,
    [1.37, 1.37, 5],
  )
  t.equal(m.dice, 0)
  near(t, m.hd95, 5, 'HD95')
  near(t, m.asd, 5, 'ASD')
})

t.test('two single voxels: the distance between them, in mm', async (t) => {
  const dims: P3 = [8, 9, 4]
  const m = binaryMetrics(
    box(dims, [2, 2, 1], [3, 3, 2]),
    box(dims, [5, 6, 1], [6, 7, 2]),
    dims,
    [1, 2, 5],
  )
  near(t, m.hd95, Math.sqrt(9 + 64), 'HD95')
  near(t, m.asd, Math.sqrt(9 + 64), 'ASD')
})

t.test('empty masks: defined values, never NaN', async (t) => {
  const dims: P3 = [4, 5, 3]
  const sp: P3 = [1.5, 1.5, 10]
  const empty = new Uint8Array(60)
  const some = box(dims, [1, 1, 1], [3, 3, 2])
  const diagonal = Math.hypot(6, 7.5, 30)
  t.equal(diagonalMm(dims, sp), diagonal)
  t.same(binaryMetrics(empty, empty, dims, sp), { dice: 1, hd95: 0, asd: 0 }, 'both empty')
  t.same(
    binaryMetrics(empty, some, dims, sp),
    { dice: 0, hd95: diagonal, asd: diagonal },
    'empty prediction',
  )
  t.same(
    binaryMetrics(some, empty, dims, sp),
    { dice: 0, hd95: diagonal, asd: diagonal },
    'empty ground truth',
  )
  t.same(binaryMetrics(some, some, dims, sp), { dice: 1, hd95: 0, asd: 0 }, 'identical')
})

t.test('surfaces: 3D uses 6 neighbours, 2D uses 4, the grid border is outside', async (t) => {
  const cube = box([5, 5, 5], [1, 1, 1], [4, 4, 4])
  const s = surfaceOf(cube, [5, 5, 5])
  t.equal(
    s.reduce((a, v) => a + v, 0),
    26,
    'a 3x3x3 cube minus its centre',
  )
  t.equal(s[2 + 5 * (2 + 5 * 2)], 0)
  const square = Uint8Array.from({ length: 9 }, () => 1)
  t.same([...surfaceOf(square, [3, 3])], [1, 1, 1, 1, 0, 1, 1, 1, 1], '2D: the centre is interior')
  t.ok(
    surfaceOf(square, [3, 3, 1]).every((v) => v === 1),
    'one slice in 3D: all surface',
  )
})

t.test('per class metrics on label maps and their means', async (t) => {
  const dims: P3 = [6, 6, 2]
  const gt = new Uint8Array(72)
  const pred = new Uint8Array(72)
  gt.fill(1, 0, 12) // class 1: two rows of slice 0
  pred.fill(1, 0, 6) // predicted: one row
  gt[40] = 2
  pred[40] = 2 // class 2 right
  // class 3 absent from both
  const r = classMetrics(pred, gt, dims, [1, 1, 1])
  t.same(
    r.map((c) => c.name),
    ['RV', 'MYO', 'LV'],
  )
  near(t, r[0].dice, (2 * 6) / 18, 'RV Dice')
  t.same(r[1], { name: 'MYO', value: 2, dice: 1, hd95: 0, asd: 0 })
  t.same(r[2], { name: 'LV', value: 3, dice: 1, hd95: 0, asd: 0 })
  t.equal(dice(pred, gt, 1), r[0].dice, 'dice() alone agrees')
  t.equal(dice(pred, gt, 3), 1, 'dice() of an absent class')
  const other = classMetrics(gt, gt, dims, [1, 1, 1])
  const m = meanMetrics([r, other])
  near(t, m.classes[0].dice, (r[0].dice + 1) / 2, 'class mean over volumes')
  near(t, m.dice, (m.classes[0].dice + 1 + 1) / 3, 'overall = mean of class means')
  near(t, m.hd95, r[0].hd95 / 2 / 3, 'overall HD95')
  t.throws(() => meanMetrics([]), /no volumes/)
  t.throws(
    () => binaryMetrics(new Uint8Array(3), new Uint8Array(4), [2, 2], [1, 1]),
    /need 4 voxels/,
  )
})
