/**
 * The NIfTI qform: a rotation stored as a unit quaternion (b, c, d; a >= 0 implied), a
 * voxel size (pixdim[1..3]), a handedness flag qfac (pixdim[0]) and an offset. These two
 * functions convert between that encoding and a 4x4 matrix, following the NIfTI-1
 * reference library (`nifti_quatern_to_mat44`, `nifti_mat44_to_quatern`), which nibabel
 * mirrors: a reflection is carried by qfac = -1 (the third column flipped), and a matrix
 * whose columns are not quite orthogonal is replaced by the nearest rotation (polar
 * decomposition) before its quaternion is taken.
 *
 * @example
 * const q = matrixToQuaternion(affine)          // { b, c, d, offset, pixdim, qfac }
 * const back = quaternionToMatrix(q)            // == affine for a rotation * diag(spacing)
 */
import type { Mat4, Vec3 } from './volume.ts'

export interface Quaternion {
  readonly b: number
  readonly c: number
  readonly d: number
  /** qoffset_x, y, z: world position of voxel (0, 0, 0). */
  readonly offset: Vec3
  /** Voxel size along i, j, k (column lengths of the matrix). */
  readonly pixdim: Vec3
  /** +1, or -1 when the frame is left-handed (third column flipped). */
  readonly qfac: 1 | -1
}

type Mat3 = number[][]

/** The qform matrix: R(a, b, c, d) * diag(dx, dy, qfac * dz), then the offset. */
export const quaternionToMatrix = (q: Quaternion): Mat4 => {
  let { b, c, d } = q
  const n = b * b + c * c + d * d
  let a = 1 - n
  // A quaternion just outside the unit ball (rounding in float32 files): a = 0, renormalise.
  if (a < 1e-7) {
    const s = 1 / Math.sqrt(n)
    b *= s
    c *= s
    d *= s
    a = 0
  } else a = Math.sqrt(a)
  const [dx, dy, dz0] = q.pixdim
  const dz = q.qfac < 0 ? -dz0 : dz0
  const r = [
    [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
    [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
  ]
  return [
    [r[0][0] * dx, r[0][1] * dy, r[0][2] * dz, q.offset[0]],
    [r[1][0] * dx, r[1][1] * dy, r[1][2] * dz, q.offset[1]],
    [r[2][0] * dx, r[2][1] * dy, r[2][2] * dz, q.offset[2]],
    [0, 0, 0, 1],
  ]
}

const det3 = (m: Mat3): number =>
  m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
  m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
  m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])

const inverse3 = (m: Mat3): Mat3 => {
  const det = det3(m)
  const cof = (r0: number, r1: number, c0: number, c1: number) =>
    m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
  return [
    [cof(1, 2, 1, 2) / det, -cof(0, 2, 1, 2) / det, cof(0, 1, 1, 2) / det],
    [-cof(1, 2, 0, 2) / det, cof(0, 2, 0, 2) / det, -cof(0, 1, 0, 2) / det],
    [cof(1, 2, 0, 1) / det, -cof(0, 2, 0, 1) / det, cof(0, 1, 0, 1) / det],
  ]
}

const rowNorm = (m: Mat3): number =>
  Math.max(...m.map((row) => row.reduce((s, x) => s + Math.abs(x), 0)))
const colNorm = (m: Mat3): number =>
  Math.max(...[0, 1, 2].map((c) => m.reduce((s, row) => s + Math.abs(row[c]), 0)))

/** The orthogonal matrix nearest to `a` (Higham's scaled Newton iteration, as nifti_mat33_polar). */
const polar = (a: Mat3): Mat3 => {
  let x = a.map((row) => [...row])
  // A singular matrix has no inverse: nudge its diagonal until it does, as the C library does.
  for (let g = det3(x); g === 0; g = det3(x)) {
    const nudge = 0.00001 * (0.001 + rowNorm(x))
    x = x.map((row, i) => row.map((v, j) => (i === j ? v + nudge : v)))
  }
  let dif = 1
  for (let k = 0; ; k++) {
    const y = inverse3(x)
    const gam =
      dif > 0.3
        ? Math.sqrt(Math.sqrt(rowNorm(y) * colNorm(y)) / Math.sqrt(rowNorm(x) * colNorm(x)))
        : 1
    const z = x.map((row, i) => row.map((v, j) => 0.5 * (gam * v + y[j][i] / gam)))
    dif = z.reduce((s, row, i) => row.reduce((s2, v, j) => s2 + Math.abs(v - x[i][j]), s), 0)
    if (k >= 100 || dif < 3e-6) return z
    x = z
  }
}

/** Quaternion, offset, pixdim and qfac of a 4x4 matrix (the inverse of `quaternionToMatrix`). */
export const matrixToQuaternion = (m: Mat4): Quaternion => {
  const cols = [0, 1, 2].map((c) => [m[0][c], m[1][c], m[2][c]])
  const lengths = cols.map((col) => Math.hypot(col[0], col[1], col[2]))
  // A zero column carries no direction: take the axis it would have, as the C library does.
  const unit = cols.map((col, c) =>
    lengths[c] === 0 ? [0, 1, 2].map((r) => (r === c ? 1 : 0)) : col.map((v) => v / lengths[c]),
  )
  const pixdim: Vec3 = [lengths[0] || 1, lengths[1] || 1, lengths[2] || 1]
  const p = polar([0, 1, 2].map((r) => [unit[0][r], unit[1][r], unit[2][r]]))
  const qfac = det3(p) > 0 ? 1 : -1
  if (qfac < 0) for (const row of p) row[2] = -row[2]
  const [[r11, r12, r13], [r21, r22, r23], [r31, r32, r33]] = p
  const offset: Vec3 = [m[0][3], m[1][3], m[2][3]]
  const trace = r11 + r22 + r33 + 1
  if (trace > 0.5) {
    const a = 0.5 * Math.sqrt(trace)
    return {
      b: (0.25 * (r32 - r23)) / a,
      c: (0.25 * (r13 - r31)) / a,
      d: (0.25 * (r21 - r12)) / a,
      offset,
      pixdim,
      qfac,
    }
  }
  const xd = 1 + r11 - (r22 + r33)
  const yd = 1 + r22 - (r11 + r33)
  const zd = 1 + r33 - (r11 + r22)
  let a: number, b: number, c: number, d: number
  if (xd > 1) {
    b = 0.5 * Math.sqrt(xd)
    c = (0.25 * (r12 + r21)) / b
    d = (0.25 * (r13 + r31)) / b
    a = (0.25 * (r32 - r23)) / b
  } else if (yd > 1) {
    c = 0.5 * Math.sqrt(yd)
    b = (0.25 * (r12 + r21)) / c
    d = (0.25 * (r23 + r32)) / c
    a = (0.25 * (r13 - r31)) / c
  } else {
    d = 0.5 * Math.sqrt(zd)
    b = (0.25 * (r13 + r31)) / d
    c = (0.25 * (r23 + r32)) / d
    a = (0.25 * (r21 - r12)) / d
  }
  // a >= 0 is implied by the file format: q and -q are the same rotation.
  const s = a < 0 ? -1 : 1
  return { b: s * b, c: s * c, d: s * d, offset, pixdim, qfac }
}
