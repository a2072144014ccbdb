/**
 * Centre crop/pad of a slice to a fixed size, so every slice of every volume reaches the
 * network at one size without rescaling.
 *
 * Rule: along an axis of `n` pixels cut or padded to `size`, input pixel `j` lands at output
 * `j - trunc((n - size) / 2)`. An even difference keeps the centre exactly; an odd one puts
 * the extra pixel at the end (high index) whether cropping or padding, so a crop followed by
 * the pad back to the original size returns the kept centre in place.
 *
 * @example
 * centreCropPad([256, 256])(slice)     // 256 x 256, zeros where the slice was smaller
 */
import type { Slice } from './slice.ts'
import { sampleSlice, type AxisMap } from './resample.ts'

/** The axis map of a centre crop/pad from `n` to `size` pixels. */
export const cropPadAxis = (n: number, size: number): AxisMap => {
  if (!Number.isInteger(size) || size < 1)
    throw new RangeError(`crop/pad size must be a positive integer, got ${size}`)
  return { origin: Math.trunc((n - size) / 2), step: 1, size, source: n }
}

/** Crops or pads a slice (each axis independently) to `size`, padding with `fill`. */
export const centreCropPad =
  (size: readonly [number, number], fill = 0) =>
  (s: Slice): Slice =>
    sampleSlice(
      cropPadAxis(s.width, size[0]),
      cropPadAxis(s.height, size[1]),
      'nearest',
      'fill',
      s.spacing,
      fill,
    )(s)
