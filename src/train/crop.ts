/**
 * Random crops of training slices, as patch-based trainers (nnU-Net) do: the network trains
 * on a window of each slice and predicts whole slices at validation and inference, which a
 * UNet, being fully convolutional, can. A 96 px window of a 128 px slice has 0.56 of its
 * pixels, and an ACDC epoch on two workers took 0.72 of the time (the loss, Adam and the
 * transfers do not shrink with the pixels): 66 epochs where whole slices fit 50. Where the
 * window falls is a translation augmentation besides.
 *
 * Every field is cut from the same window, the CPL too: it stays the continuous pseudo label
 * of the whole slice's scribble (a stroke just outside the window still shapes the labels
 * inside it), as DESIGN defines it on the network grid.
 *
 * @example
 * const crop = sliceCropper({ width: 128, height: 128, classes: 4 }, [96, 96])
 * const window = crop(slice, seeded(seed, 'crop', step, index)) // 96 x 96, offsets 0..32
 */
import type { Rng } from '../util/rng.ts'
import type { TrainingSlice } from './training-set.ts'

export interface CropGrid {
  readonly width: number
  readonly height: number
  readonly classes: number
}

/** Copies the `w` x `h` window at (x0, y0) of each of the `planes` grid planes of `src`. */
const cutPlanes = <A extends Float32Array | Uint8Array>(
  src: A,
  planes: number,
  grid: CropGrid,
  window: { readonly x0: number; readonly y0: number; readonly w: number; readonly h: number },
): A => {
  const { x0, y0, w, h } = window
  const out = new (src.constructor as new (n: number) => A)(planes * w * h)
  const plane = grid.width * grid.height
  for (let p = 0; p < planes; p++)
    for (let y = 0; y < h; y++) {
      const from = p * plane + (y0 + y) * grid.width + x0
      out.set(src.subarray(from, from + w), (p * h + y) * w)
    }
  return out
}

/**
 * A cropper for slices of one grid: each call cuts a `crop` window at a uniformly drawn
 * offset (every position equally likely). A crop the size of the grid returns the slice
 * itself, drawing nothing.
 */
export const sliceCropper = (grid: CropGrid, crop: readonly [number, number]) => {
  const [w, h] = crop
  if (!(Number.isInteger(w) && Number.isInteger(h) && w >= 1 && h >= 1))
    throw new RangeError(`a crop needs positive integer sides, got ${w}x${h}`)
  if (w > grid.width || h > grid.height)
    throw new RangeError(`a ${w}x${h} crop does not fit a ${grid.width}x${grid.height} slice`)
  if (w === grid.width && h === grid.height) return (slice: TrainingSlice) => slice
  return (slice: TrainingSlice, rng: Rng): TrainingSlice => {
    const window = { x0: rng.int(grid.width - w + 1), y0: rng.int(grid.height - h + 1), w, h }
    return {
      ...slice,
      image: cutPlanes(slice.image, 1, grid, window),
      scribble: cutPlanes(slice.scribble, 1, grid, window),
      gc: cutPlanes(slice.gc, 1, grid, window),
      cpl: cutPlanes(slice.cpl, grid.classes, grid, window),
    }
  }
}
