/**
 * Segmentation metrics as the field reports them (medpy's conventions), per volume and class
 * on the 3D grid with the voxel spacing:
 *
 * - Dice = 2 |A and B| / (|A| + |B|), a fraction.
 * - Surface of a mask = the mask minus its binary erosion with connectivity 1 (6 neighbours in
 *   3D, 4 in 2D; outside the grid counts as background, so mask voxels on the grid's border
 *   are surface), as medpy's `__surface_distances`.
 * - Distances from each surface voxel of A to the nearest surface voxel of B, and of B to A,
 *   with the exact anisotropic EDT, in mm.
 * - HD95 = the 95th percentile of the union of both directed sets (numpy's default linear
 *   interpolation), as medpy's `hd95`.
 * - ASD = the mean of that union: the symmetric average surface distance (Heimann et al.
 *   2009). medpy's `asd` is one-directional (A to B only) and its `assd` averages the two
 *   directed means, which differs from this when the surfaces have different sizes.
 *
 * Empty masks are defined, never NaN: both empty -> Dice 1, HD95 0, ASD 0 (nothing to find,
 * nothing found); exactly one empty -> Dice 0 and HD95 = ASD = the diagonal of the grid's
 * extent in mm, sqrt(sum (n_i * spacing_i)^2), the worst distance the grid can hold (a common
 * convention; medpy raises instead).
 *
 * @example
 * const r = classMetrics(pred.data, gt.data, gt.dims, gt.geometry.spacing, ACDC_CLASSES)
 * // [{ name: 'RV', value: 1, dice: 0.91, hd95: 3.1, asd: 0.8 }, ...]
 * meanMetrics([r, r2]).dice
 */
import { edtWorkspace, squaredEdtInPlace } from '../maco/edt.ts'
import { elementCount } from '../util/shape.ts'

export interface Metrics {
  /** Fraction in [0, 1]. */
  readonly dice: number
  /** mm. */
  readonly hd95: number
  /** mm, symmetric. */
  readonly asd: number
}

export interface LabelClass {
  readonly name: string
  readonly value: number
}

export interface ClassMetrics extends LabelClass, Metrics {}

export interface MeanMetrics extends Metrics {
  /** Per class, the mean over volumes; the overall fields are the mean of these. */
  readonly classes: readonly ClassMetrics[]
}

export const ACDC_CLASSES: readonly LabelClass[] = [
  { name: 'RV', value: 1 },
  { name: 'MYO', value: 2 },
  { name: 'LV', value: 3 },
]

const checkGrid = (n: number, dims: readonly number[]): void => {
  const total = elementCount(dims)
  if (n !== total) throw new RangeError(`dims ${dims.join('x')} need ${total} voxels, got ${n}`)
}

/** 1 where `labels` equals `value`, else 0. */
export const maskOf = (labels: ArrayLike<number>, value: number): Uint8Array => {
  const m = new Uint8Array(labels.length)
  for (let i = 0; i < m.length; i++) m[i] = labels[i] === value ? 1 : 0
  return m
}

interface Overlap {
  readonly pred: number
  readonly gt: number
  readonly both: number
}

/** Voxel counts of two masks (non-zero = inside) and of their intersection. */
const overlap = (pred: ArrayLike<number>, gt: ArrayLike<number>): Overlap => {
  if (pred.length !== gt.length) throw new RangeError(`${pred.length} vs ${gt.length} voxels`)
  let p = 0
  let g = 0
  let both = 0
  for (let i = 0; i < pred.length; i++) {
    const a = !!pred[i]
    const b = !!gt[i]
    if (a) p++
    if (b) g++
    if (a && b) both++
  }
  return { pred: p, gt: g, both }
}

const diceOf = (o: Overlap): number => (o.pred + o.gt === 0 ? 1 : (2 * o.both) / (o.pred + o.gt))

/** Dice of one label value between two label maps (1 when neither holds it). */
export const dice = (pred: ArrayLike<number>, gt: ArrayLike<number>, value: number): number =>
  diceOf(overlap(maskOf(pred, value), maskOf(gt, value)))

/** The mask minus its erosion with connectivity 1 along every axis of `dims` (x fastest). */
export const surfaceOf = (mask: ArrayLike<number>, dims: readonly number[]): Uint8Array => {
  checkGrid(mask.length, dims)
  const [nx, ny = 1, nz = 1] = dims
  const sx = 1
  const sy = nx
  const sz = nx * ny
  const useY = dims.length > 1
  const useZ = dims.length > 2
  const out = new Uint8Array(mask.length)
  for (let z = 0, i = 0; z < nz; z++)
    for (let y = 0; y < ny; y++)
      for (let x = 0; x < nx; x++, i++) {
        if (!mask[i]) continue
        const interior =
          x > 0 &&
          x < nx - 1 &&
          !!mask[i - sx] &&
          !!mask[i + sx] &&
          (!useY || (y > 0 && y < ny - 1 && !!mask[i - sy] && !!mask[i + sy])) &&
          (!useZ || (z > 0 && z < nz - 1 && !!mask[i - sz] && !!mask[i + sz]))
        if (!interior) out[i] = 1
      }
  return out
}

/**
 * Distance (in units of `spacing`) from each voxel set in `from` to the nearest voxel set in
 * `to`, in index order. `to` must hold at least one voxel.
 */
export const directedDistances = (
  from: Uint8Array,
  to: Uint8Array,
  dims: readonly number[],
  spacing: readonly number[],
): Float64Array => {
  const grid = new Float64Array(to.length)
  for (let i = 0; i < grid.length; i++) grid[i] = to[i] ? 0 : Infinity
  squaredEdtInPlace(grid, dims, spacing, edtWorkspace(Math.max(...dims)))
  let n = 0
  for (let i = 0; i < from.length; i++) if (from[i]) n++
  const out = new Float64Array(n)
  for (let i = 0, k = 0; i < from.length; i++) if (from[i]) out[k++] = Math.sqrt(grid[i])
  return out
}

/** The p-th percentile (0..100) of ascending `sorted` values, numpy's linear interpolation. */
export const percentile = (sorted: ArrayLike<number>, p: number): number => {
  const h = ((sorted.length - 1) * p) / 100
  const lo = Math.floor(h)
  const hi = Math.min(lo + 1, sorted.length - 1)
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo])
}

/** Length of the grid's diagonal in mm: the distance given when exactly one mask is empty. */
export const diagonalMm = (dims: readonly number[], spacing: readonly number[]): number =>
  Math.hypot(...dims.map((n, a) => n * spacing[a]))

interface Cropped {
  readonly pred: Uint8Array
  readonly gt: Uint8Array
  readonly dims: readonly number[]
}

/**
 * Both masks cut to the bounding box of their union. The EDT's minimum runs over feature
 * voxels only, all inside the box, and a mask voxel on the box's edge is surface in either
 * grid (its neighbour past the edge is outside both masks), so the metrics are the same on the
 * box, at a fraction of the cost (a heart fills a small part of a cardiac MR volume).
 */
const cropToUnion = (
  pred: ArrayLike<number>,
  gt: ArrayLike<number>,
  dims: readonly number[],
): Cropped => {
  const [nx, ny = 1, nz = 1] = dims
  const lo = [nx, ny, nz]
  const hi = [-1, -1, -1]
  for (let z = 0, i = 0; z < nz; z++)
    for (let y = 0; y < ny; y++)
      for (let x = 0; x < nx; x++, i++)
        if (pred[i] || gt[i]) {
          if (x < lo[0]) lo[0] = x
          if (x > hi[0]) hi[0] = x
          if (y < lo[1]) lo[1] = y
          if (y > hi[1]) hi[1] = y
          if (z < lo[2]) lo[2] = z
          if (z > hi[2]) hi[2] = z
        }
  const [bx, by, bz] = [0, 1, 2].map((a) => hi[a] - lo[a] + 1)
  const out = { pred: new Uint8Array(bx * by * bz), gt: new Uint8Array(bx * by * bz) }
  for (let z = 0, j = 0; z < bz; z++)
    for (let y = 0; y < by; y++)
      for (let x = 0, i = lo[0] + nx * (lo[1] + y + ny * (lo[2] + z)); x < bx; x++, i++, j++) {
        out.pred[j] = pred[i] ? 1 : 0
        out.gt[j] = gt[i] ? 1 : 0
      }
  return { ...out, dims: [bx, by, bz].slice(0, dims.length) }
}

/** Dice, HD95 and ASD of two binary masks (non-zero = inside) on one grid. */
export const binaryMetrics = (
  pred: ArrayLike<number>,
  gt: ArrayLike<number>,
  dims: readonly number[],
  spacing: readonly number[],
): Metrics => {
  checkGrid(pred.length, dims)
  checkGrid(gt.length, dims)
  if (spacing.length !== dims.length)
    throw new RangeError(`spacing has ${spacing.length} values for ${dims.length} dims`)
  const o = overlap(pred, gt)
  if (o.pred === 0 && o.gt === 0) return { dice: 1, hd95: 0, asd: 0 }
  if (o.pred === 0 || o.gt === 0) {
    const worst = diagonalMm(dims, spacing)
    return { dice: 0, hd95: worst, asd: worst }
  }
  const box = cropToUnion(pred, gt, dims)
  const sp = surfaceOf(box.pred, box.dims)
  const sg = surfaceOf(box.gt, box.dims)
  const ab = directedDistances(sp, sg, box.dims, spacing)
  const ba = directedDistances(sg, sp, box.dims, spacing)
  const all = new Float64Array(ab.length + ba.length)
  all.set(ab)
  all.set(ba, ab.length)
  all.sort()
  let sum = 0
  for (let i = 0; i < all.length; i++) sum += all[i]
  return { dice: diceOf(o), hd95: percentile(all, 95), asd: sum / all.length }
}

/** Metrics of each class between two label maps on one grid. */
export const classMetrics = (
  pred: ArrayLike<number>,
  gt: ArrayLike<number>,
  dims: readonly number[],
  spacing: readonly number[],
  classes: readonly LabelClass[] = ACDC_CLASSES,
): ClassMetrics[] =>
  classes.map((c) => ({
    name: c.name,
    value: c.value,
    ...binaryMetrics(maskOf(pred, c.value), maskOf(gt, c.value), dims, spacing),
  }))

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length

/**
 * Per class (matched by value, in the first volume's order), the mean over volumes; overall,
 * the mean of the class means. At least one volume is required.
 */
export const meanMetrics = (volumes: readonly (readonly ClassMetrics[])[]): MeanMetrics => {
  if (volumes.length === 0 || volumes[0].length === 0)
    throw new RangeError('no volumes or no classes to average')
  const classes = volumes[0].map((c) => {
    const rows = volumes.map((v) => {
      const row = v.find((r) => r.value === c.value)
      if (!row) throw new RangeError(`a volume lacks class ${c.name} (${c.value})`)
      return row
    })
    return {
      name: c.name,
      value: c.value,
      dice: mean(rows.map((r) => r.dice)),
      hd95: mean(rows.map((r) => r.hd95)),
      asd: mean(rows.map((r) => r.asd)),
    }
  })
  return {
    classes,
    dice: mean(classes.map((c) => c.dice)),
    hd95: mean(classes.map((c) => c.hd95)),
    asd: mean(classes.map((c) => c.asd)),
  }
}
