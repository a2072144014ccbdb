import t from 'tap'
import { matrixToQuaternion, quaternionToMatrix } from '../../src/volume/quaternion.ts'
import type { Mat4, Vec3 } from '../../src/volume/volume.ts'

/** Rotation by `angle` about unit `axis` (Rodrigues), times diag(scale), then `offset`. */
const rotationAffine = (axis: Vec3, angle: number, scale: Vec3, offset: Vec3): Mat4 => {
  const n = Math.hypot(...axis)
  const [x, y, z] = axis.map((v) => v / n)
  const c = Math.cos(angle)
  const s = Math.sin(angle)
  const r = [
    [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
    [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
    [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
  ]
  return [
    [r[0][0] * scale[0], r[0][1] * scale[1], r[0][2] * scale[2], offset[0]],
    [r[1][0] * scale[0], r[1][1] * scale[1], r[1][2] * scale[2], offset[1]],
    [r[2][0] * scale[0], r[2][1] * scale[1], r[2][2] * scale[2], offset[2]],
    [0, 0, 0, 1],
  ]
}

const maxDiff = (a: Mat4, b: Mat4): number =>
  Math.max(...a.flatMap((row, r) => row.map((v, c) => Math.abs(v - b[r][c]))))

t.test('a 90 degree turn about z is the quaternion (cos 45, 0, 0, sin 45)', async (t) => {
  const q = matrixToQuaternion([
    [0, -2, 0, 5],
    [1.5, 0, 0, 6],
    [0, 0, 3, 7],
    [0, 0, 0, 1],
  ])
  t.equal(q.b, 0)
  t.equal(q.c, 0)
  t.ok(Math.abs(q.d - Math.SQRT1_2) < 1e-12)
  t.same(q.pixdim, [1.5, 2, 3])
  t.same(q.offset, [5, 6, 7])
  t.equal(q.qfac, 1)
})

t.test('a flipped x axis is a reflection: qfac -1 and a half turn about y', async (t) => {
  // diag(-1, 1, 1): flipping the third column gives diag(-1, 1, -1), a 180 degree turn about y.
  const q = matrixToQuaternion([
    [-1, 0, 0, 0],
    [0, 1, 0, 0],
    [0, 0, 1, 0],
    [0, 0, 0, 1],
  ])
  t.equal(q.qfac, -1)
  t.same([q.b, q.c, q.d], [0, 1, 0])
})

t.test(
  'the radiological flip of ACDC files (x and y negated) is a half turn about z',
  async (t) => {
    const q = matrixToQuaternion([
      [-1.5625, 0, 0, 0],
      [0, -1.5625, 0, 0],
      [0, 0, 10, 0],
      [0, 0, 0, 1],
    ])
    t.same([q.b, q.c, q.d, q.qfac], [0, 0, 1, 1])
    t.same(q.pixdim, [1.5625, 1.5625, 10])
  },
)

t.test('quaternion to matrix gives the hand-computed qform', async (t) => {
  // d = sin 45: a 90 degree turn about z; qfac -1 flips the z column.
  const m = quaternionToMatrix({
    b: 0,
    c: 0,
    d: Math.SQRT1_2,
    offset: [1, 2, 3],
    pixdim: [2, 3, 4],
    qfac: -1,
  })
  const expected: Mat4 = [
    [0, -3, 0, 1],
    [2, 0, 0, 2],
    [0, 0, -4, 3],
    [0, 0, 0, 1],
  ]
  t.ok(maxDiff(m, expected) < 1e-12, JSON.stringify(m))
})

t.test(
  'oblique frames, proper and reflected, survive matrix -> quaternion -> matrix',
  async (t) => {
    const cases: [Vec3, number, Vec3][] = [
      [[1, 2, 3], 0.7, [0.8, 0.9, 5]],
      [[-0.3, 1, 0.2], 2.9, [1.37, 1.37, 10]],
      [[0, 0, 1], Math.PI, [1, 1, 1]], // half turn: the trace branch
      [[1, 1, 0], Math.PI * 0.999, [0.5, 2, 3]],
      [[0.1, -1, 0.05], Math.PI, [2, 2, 2]],
    ]
    for (const [axis, angle, scale] of cases)
      for (const flip of [1, -1]) {
        const m = rotationAffine(axis, angle, [scale[0], scale[1], flip * scale[2]], [10, -20, 33])
        const q = matrixToQuaternion(m)
        t.equal(q.qfac, flip, `qfac of ${axis} ${angle}`)
        t.ok(q.b * q.b + q.c * q.c + q.d * q.d <= 1 + 1e-12)
        t.ok(maxDiff(quaternionToMatrix(q), m) < 1e-9, `round trip ${axis} ${angle} flip ${flip}`)
      }
  },
)

t.test('a slightly skewed matrix gets the nearest rotation, not a broken one', async (t) => {
  const m = rotationAffine([1, 2, 3], 0.7, [1, 1, 1], [0, 0, 0]).map((row) => [...row])
  m[0][1] += 1e-3 // shear: the columns are no longer orthogonal
  const back = quaternionToMatrix(matrixToQuaternion(m))
  t.ok(maxDiff(back, m) < 2e-3)
  // The rebuilt frame is orthonormal: columns of unit length, mutually perpendicular.
  const col = (c: number) => [back[0][c], back[1][c], back[2][c]]
  const dot = (a: number[], b: number[]) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
  for (const [i, j] of [
    [0, 1],
    [0, 2],
    [1, 2],
  ])
    t.ok(Math.abs(dot(col(i), col(j))) < 1e-9)
  for (const i of [0, 1, 2])
    t.ok(Math.abs(Math.hypot(...col(i)) - Math.hypot(m[0][i], m[1][i], m[2][i])) < 1e-9)
})

t.test('a zero column gets unit length along its own axis', async (t) => {
  const q = matrixToQuaternion([
    [2, 0, 0, 0],
    [0, 0, 0, 0],
    [0, 0, 3, 0],
    [0, 0, 0, 1],
  ])
  t.same(q.pixdim, [2, 1, 3])
  t.same([q.b, q.c, q.d, q.qfac], [0, 0, 0, 1])
})

t.test('a quaternion just outside the unit ball (float32 rounding) is renormalised', async (t) => {
  const m = quaternionToMatrix({
    b: 0,
    c: 0,
    d: 1.0000001,
    offset: [0, 0, 0],
    pixdim: [1, 1, 1],
    qfac: 1,
  })
  t.ok(
    maxDiff(m, [
      [-1, 0, 0, 0],
      [0, -1, 0, 0],
      [0, 0, 1, 0],
      [0, 0, 0, 1],
    ]) < 1e-6,
  )
})
