/**
 * The 2D slice: one in-plane image of a volume (x fastest, then y) with its in-plane spacing.
 * MaCo works slice by slice (preprocessing, CPL, masking, the 2D UNet), so this is the unit
 * the per-slice functions take and return; `sliceOf`/`slicesOf` take slices out of a volume
 * as real intensities and `stackSlices` puts them back together.
 *
 * @example
 * const s = sliceOf(volume, 3)            // { width: nx, height: ny, data, spacing: [sx, sy] }
 * const v = stackSlices(slicesOf(volume), volume.geometry.spacing[2])
 */
import { realValues, spatialDims, volumeOf, type Volume } from './volume.ts'
import { elementCount } from '../util/shape.ts'

export interface Slice {
  readonly width: number
  readonly height: number
  /** width * height values, x fastest. */
  readonly data: Float32Array
  /** Pixel size in mm along x and y. */
  readonly spacing: readonly [number, number]
}

/** Number of in-plane slices of a volume: everything past x and y (z, and a 4th axis if any). */
export const sliceCount = (v: Pick<Volume, 'dims'>): number => elementCount(v.dims.slice(2))

/** Slice `k` of a volume as real values (stored values through the volume's scaling). */
export const sliceOf = (v: Volume, k: number): Slice => {
  const [nx, ny] = spatialDims(v)
  const n = nx * ny
  if (!Number.isInteger(k) || k < 0 || (k + 1) * n > v.data.length)
    throw new RangeError(`slice ${k} is outside a volume of ${sliceCount(v)} slices`)
  const data = realValues({ data: v.data.subarray(k * n, (k + 1) * n), scaling: v.scaling })
  return { width: nx, height: ny, data, spacing: [v.geometry.spacing[0], v.geometry.spacing[1]] }
}

/** Every slice of a volume, in storage order (z, then the 4th axis). */
export const slicesOf = (v: Volume): Slice[] =>
  Array.from({ length: sliceCount(v) }, (_, k) => sliceOf(v, k))

/**
 * Slices of one size and spacing as a float32 volume [width, height, n] with a diagonal
 * affine (slice `k` at z = k * sliceSpacing); for a volume with real geometry, build its
 * affine with the slices' spacing (as `preprocessVolume` does).
 */
export const stackSlices = (slices: readonly Slice[], sliceSpacing = 1): Volume<Float32Array> => {
  if (slices.length === 0) throw new RangeError('stackSlices needs at least one slice')
  const { width, height, spacing } = slices[0]
  const n = width * height
  const data = new Float32Array(n * slices.length)
  slices.forEach((s, k) => {
    if (
      s.width !== width ||
      s.height !== height ||
      s.spacing[0] !== spacing[0] ||
      s.spacing[1] !== spacing[1]
    )
      throw new RangeError(
        `slice ${k} is ${s.width}x${s.height} at ${s.spacing.join('x')} mm, slice 0 is ${width}x${height} at ${spacing.join('x')} mm`,
      )
    data.set(s.data, k * n)
  })
  return volumeOf({
    dims: [width, height, slices.length],
    data,
    spacing: [spacing[0], spacing[1], sliceSpacing],
  })
}
