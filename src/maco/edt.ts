/**
 * Exact squared Euclidean distance transform (Felzenszwalb & Huttenlocher, "Distance
 * Transforms of Sampled Functions", 2012): one pass per axis, each line solved in linear time
 * as the lower envelope of parabolas. Exact, unlike chamfer approximations, and anisotropic:
 * `spacing` scales each axis, so distances come out in mm when the voxel size is given.
 *
 * Used for the continuous pseudo labels (pixels, 2D) and for HD95/ASD (mm, 3D).
 *
 * @example
 * // 3 x 2 grid, one feature at (0, 0), pixels 2 mm wide and 1 mm high
 * squaredEdt(new Uint8Array([1, 0, 0, 0, 0, 0]), [3, 2], [2, 1])
 * // Float64Array [0, 4, 16, 1, 5, 17]
 */
import { elementCount } from '../util/shape.ts'

/** Scratch buffers for one line of the transform; reuse one across calls to avoid allocation. */
export interface EdtWorkspace {
  /** Input samples of the current line. */
  readonly f: Float64Array
  /** Output of the current line. */
  readonly d: Float64Array
  /** Indices of the parabolas in the lower envelope. */
  readonly v: Int32Array
  /** Boundaries between envelope parabolas (one more than `v`). */
  readonly z: Float64Array
}

/** Buffers for lines up to `maxLength` samples long. */
export const edtWorkspace = (maxLength: number): EdtWorkspace => ({
  f: new Float64Array(maxLength),
  d: new Float64Array(maxLength),
  v: new Int32Array(maxLength),
  z: new Float64Array(maxLength + 1),
})

/**
 * One line: d(q) = min_r ((q - r) h)^2 + f(r). Infinite samples are not parabolas and are
 * skipped, which keeps the arithmetic finite; a line without any finite sample stays Infinity.
 */
const transformLine = (n: number, h: number, ws: EdtWorkspace): boolean => {
  const { f, d, v, z } = ws
  const h2 = h * h
  let k = -1
  for (let q = 0; q < n; q++) {
    const fq = f[q]
    if (fq === Infinity) continue
    if (k < 0) {
      k = 0
      v[0] = q
      z[0] = -Infinity
      z[1] = Infinity
      continue
    }
    const cq = fq + h2 * q * q
    // Intersection (in index units) of the parabola at q with the envelope's last one;
    // z[0] = -Infinity stops the loop before k goes negative.
    let r = v[k]
    let s = (cq - (f[r] + h2 * r * r)) / (2 * h2 * (q - r))
    while (s <= z[k]) {
      k--
      r = v[k]
      s = (cq - (f[r] + h2 * r * r)) / (2 * h2 * (q - r))
    }
    k++
    v[k] = q
    z[k] = s
    z[k + 1] = Infinity
  }
  if (k < 0) return false
  k = 0
  for (let q = 0; q < n; q++) {
    while (z[k + 1] < q) k++
    const r = v[k]
    const dx = (q - r) * h
    d[q] = dx * dx + f[r]
  }
  return true
}

/**
 * Transforms `grid` in place: on entry 0 at feature voxels and Infinity elsewhere (any
 * non-negative sampled function works), on exit the squared distance to the nearest feature
 * in units of `spacing` (Infinity when there is none). Axis 0 varies fastest.
 */
export const squaredEdtInPlace = (
  grid: Float64Array,
  dims: readonly number[],
  spacing: readonly number[] = dims.map(() => 1),
  ws: EdtWorkspace = edtWorkspace(Math.max(...dims)),
): Float64Array => {
  const total = elementCount(dims)
  if (grid.length !== total)
    throw new RangeError(`dims ${dims.join('x')} need ${total} values, got ${grid.length}`)
  if (spacing.length !== dims.length || spacing.some((s) => !(s > 0) || !Number.isFinite(s)))
    throw new RangeError(
      `spacing must be ${dims.length} positive numbers, got ${spacing.join(',')}`,
    )
  if (ws.f.length < Math.max(...dims))
    throw new RangeError('EDT workspace too small for these dims')
  const { f, d } = ws
  let stride = 1
  for (let axis = 0; axis < dims.length; axis++) {
    const n = dims[axis]
    const outer = total / (n * stride)
    for (let o = 0; o < outer; o++) {
      for (let inner = 0; inner < stride; inner++) {
        const base = o * n * stride + inner
        for (let q = 0, i = base; q < n; q++, i += stride) f[q] = grid[i]
        if (!transformLine(n, spacing[axis], ws)) continue
        for (let q = 0, i = base; q < n; q++, i += stride) grid[i] = d[q]
      }
    }
    stride *= n
  }
  return grid
}

/**
 * Squared distance from every voxel to the nearest feature (non-zero / true) voxel, in units
 * of `spacing` (default 1 per axis); Infinity everywhere when there is no feature.
 */
export const squaredEdt = (
  features: ArrayLike<number | boolean>,
  dims: readonly number[],
  spacing?: readonly number[],
): Float64Array => {
  const grid = new Float64Array(features.length)
  for (let i = 0; i < grid.length; i++) grid[i] = features[i] ? 0 : Infinity
  return squaredEdtInPlace(grid, dims, spacing)
}
