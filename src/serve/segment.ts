/**
 * A volume in, its mask out: what `maco predict` and the segment endpoint both run.
 *
 * The volume is preprocessed exactly as for training (`preprocessVolume`: every slice
 * resampled to the card's spacing, centre cropped/padded to its size, z-scored), sent
 * through the session a batch of slices at a time, and each slice's class probabilities
 * are mapped back to the native grid (`fromNetworkGrid`, bilinear) before the argmax, as
 * the field evaluates. The mask is uint8 with the card's class values and the input's
 * dims and geometry, so it overlays the image it came from. A card (or the caller) may ask
 * for test-time augmentation (src/serve/tta.ts) and for the largest-connected-component
 * clean-up per class.
 *
 * @example
 * const mask = await segmentVolume({ card, session }, volume)        // Volume<Uint8Array>
 * classSummary(card, mask.data, mask.geometry.spacing)               // voxels and mL per class
 */
import * as E from 'fp-ts/lib/Either.js'
import { keepLargestComponents } from '../volume/components.ts'
import type { ModelCard, Postprocess, Tta } from './model-card.ts'
import type { PngImage } from './png.ts'
import type { Session } from './runtime.ts'
import { withTta } from './tta.ts'
import {
  backgroundOutside,
  fromNetworkGrid,
  preprocessPlan,
  preprocessVolume,
} from '../volume/preprocess.ts'
import { sliceCount } from '../volume/slice.ts'
import { spatialDims, volumeOf, withData, type Vec3, type Volume } from '../volume/volume.ts'

export interface SegmentOptions {
  /** Slices per session run (default 8). */
  readonly batch?: number
  /** Called after each batch with the slices done so far and the total. */
  readonly onProgress?: (done: number, total: number) => void
  /** Overrides the card's `postprocess`. */
  readonly postprocess?: Postprocess
  /** Overrides the card's `tta`. */
  readonly tta?: Tta
}

export interface ClassSummary {
  readonly name: string
  readonly value: number
  readonly voxels: number
  /** voxels x voxel volume in mL (cm^3); `null` when the input had no slice thickness (a PNG). */
  readonly volumeMl: number | null
}

/**
 * Whether dims can be segmented slice by slice: 2D, 3D, or 4D with one frame. A 4D series
 * (e.g. cine frames) is refused rather than guessed at.
 */
export const checkDims = (dims: readonly number[]): E.Either<string, readonly number[]> =>
  dims.length < 2 || dims.length > 4
    ? E.left(`a ${dims.length}D volume cannot be segmented (send a 2D image or a 3D volume)`)
    : dims.length === 4 && dims[3] !== 1
      ? E.left(
          `a 4D volume with ${dims[3]} frames (dims ${dims.join('x')}) cannot be segmented: send one 3D frame`,
        )
      : E.right(dims)

/** Argmax over classes of `count` native slices (C planes each), as class values. */
const argmaxInto = (
  probabilities: Float32Array,
  classValues: readonly number[],
  plane: number,
  count: number,
  mask: Uint8Array,
  at: number,
): void => {
  const classes = classValues.length
  for (let s = 0; s < count; s++) {
    const base = s * classes * plane
    for (let i = 0; i < plane; i++) {
      let best = 0
      let bestP = probabilities[base + i]
      for (let c = 1; c < classes; c++) {
        const p = probabilities[base + c * plane + i]
        if (p > bestP) {
          bestP = p
          best = c
        }
      }
      mask[at + s * plane + i] = classValues[best]
    }
  }
}

/** The mask of `volume` (checked by `checkDims` first), with the volume's dims and geometry. */
export const segmentVolume = async (
  model: { readonly card: ModelCard; readonly session: Session },
  volume: Volume,
  options: SegmentOptions = {},
): Promise<Volume<Uint8Array>> => {
  const { card } = model
  const session = withTta(options.tta ?? card.tta ?? 'none')(model.session)
  const batch = Math.max(1, Math.floor(options.batch ?? 8))
  const [nx, ny] = spatialDims(volume)
  const target = { spacing: card.input.spacing, size: card.input.size }
  const toNative = fromNetworkGrid(
    preprocessPlan({ dims: [nx, ny], spacing: volume.geometry.spacing }, target),
    backgroundOutside(card.classes.length),
  )
  const network = preprocessVolume(volume, { ...target, kind: 'image' })
  const [w, h] = card.input.size
  const slices = sliceCount(volume)
  const classValues = card.classes.map((c) => c.value)
  const mask = new Uint8Array(nx * ny * slices)
  for (let k = 0; k < slices; k += batch) {
    const n = Math.min(batch, slices - k)
    const input = (network.data as Float32Array).subarray(k * w * h, (k + n) * w * h)
    const { probabilities, dims } = await session.run(input, [n, 1, h, w])
    if (dims[1] !== classValues.length)
      throw new Error(
        `the model outputs ${dims[1]} classes but its card lists ${classValues.length}`,
      )
    argmaxInto(toNative(probabilities), classValues, nx * ny, n, mask, k * nx * ny)
    options.onProgress?.(k + n, slices)
  }
  // Channel 0 is the background: what a removed component becomes.
  return (options.postprocess ?? card.postprocess ?? 'none') === 'largest-component'
    ? withData(
        volume,
        keepLargestComponents(mask, [nx, ny, slices], classValues.slice(1), classValues[0]),
      )
    : withData(volume, mask)
}

/**
 * A PNG as a one-slice volume: its pixel size from `pHYs` when the file has one, else the
 * card's spacing (the image is taken to be at the model's resolution); no slice thickness.
 */
export const pngVolume = (image: PngImage, card: ModelCard): Volume<Float32Array> => {
  const [sx, sy] = image.spacing ?? card.input.spacing
  return volumeOf({ dims: [image.width, image.height], data: image.grey, spacing: [sx, sy, 1] })
}

/** Voxels and volume of every class of the card in a mask (values not on the card are not counted). */
export const classSummary = (
  card: ModelCard,
  mask: Uint8Array,
  spacing: Vec3 | null,
): ClassSummary[] => {
  const counts = new Float64Array(256)
  for (let i = 0; i < mask.length; i++) counts[mask[i]]++
  const voxelMl = spacing === null ? null : (spacing[0] * spacing[1] * spacing[2]) / 1000
  return card.classes.map((c) => ({
    name: c.name,
    value: c.value,
    voxels: counts[c.value],
    volumeMl: voxelMl === null ? null : counts[c.value] * voxelMl,
  }))
}
