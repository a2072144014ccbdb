/**
 * Attention-based masking for masked context modelling (MCM): the image is cut into a grid
 * of p x p patches, patches that hold scribble pixels are more likely to be hidden, and
 * round(r * K) of the K patches are set to 0, so the network must infer the labelled
 * structures from their context.
 *
 * Sampling is successive sampling without replacement with probability proportional to
 * weight, done in one pass with Efraimidis-Spirakis keys: key = ln(u) / w for u uniform in
 * (0, 1] (the log of u^(1/w), same order, no underflow), the `count` largest keys win.
 * Grids are row-major over patch rows; images and scribbles are x-fastest (index y * w + x).
 * When p does not divide the size the last row/column of patches is partial (the zero
 * padding of the paper lies outside the image, so nothing is stored for it).
 *
 * @example
 * const options = pipe(maskingOptions({ size: 256 }), E.getOrElseW(fail)) // p 16, r 0.5, w_s 3
 * const mask = attentionMask(scribble, 256, 256, options, seeded(7, 'mcm', step, i))
 * const masked = maskImage(image, 256, 256, mask, options.patch)
 */
import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { Rng } from '../util/rng.ts'
import type { VoxelArray } from '../volume/volume.ts'

export interface MaskingOptions {
  /** Patch side in pixels. */
  readonly patch: number
  /** Fraction r of the patches to hide; round(r * K) of them. */
  readonly ratio: number
  /** Weight w_s of a patch holding any scribble pixel; other patches weigh 1. */
  readonly scribbleWeight: number
  /** The scribble value that means "not labelled". */
  readonly unlabelled: number
}

/** p = 16 at 256 px, scaled with the slice size (at least 1). */
export const defaultPatchSize = (size: number): number => Math.max(1, Math.round((16 * size) / 256))

export const MaskingConfig = t.partial({
  patch: t.number,
  ratio: t.number,
  scribbleWeight: t.number,
  unlabelled: t.number,
})
export type MaskingConfig = t.TypeOf<typeof MaskingConfig>

/** The paper's defaults for a slice of `size` pixels, overridden by `config`; Left: why not. */
export const maskingOptions = (
  config: MaskingConfig & { readonly size: number },
): E.Either<string, MaskingOptions> => {
  const options: MaskingOptions = {
    patch: config.patch ?? defaultPatchSize(config.size),
    ratio: config.ratio ?? 0.5,
    scribbleWeight: config.scribbleWeight ?? 3,
    unlabelled: config.unlabelled ?? 4,
  }
  return !(Number.isInteger(options.patch) && options.patch >= 1)
    ? E.left(`masking patch must be a positive integer, got ${options.patch}`)
    : !(options.ratio >= 0 && options.ratio <= 1)
      ? E.left(`masking ratio must be in [0, 1], got ${options.ratio}`)
      : !(options.scribbleWeight > 0 && Number.isFinite(options.scribbleWeight))
        ? E.left(`scribble patch weight must be a positive number, got ${options.scribbleWeight}`)
        : E.right(options)
}

/** Patch columns and rows covering a w x h slice (the last ones partial when p does not divide). */
export const patchGrid = (w: number, h: number, patch: number) => ({
  cols: Math.ceil(w / patch),
  rows: Math.ceil(h / patch),
})

/** One weight per patch (row-major): `scribbleWeight` where any pixel is labelled, else 1. */
export const patchWeights = (
  scribble: ArrayLike<number>,
  w: number,
  h: number,
  options: Pick<MaskingOptions, 'patch' | 'scribbleWeight' | 'unlabelled'>,
): Float64Array => {
  const { patch, scribbleWeight, unlabelled } = options
  if (scribble.length !== w * h)
    throw new RangeError(`scribble has ${scribble.length} pixels, expected ${w} x ${h}`)
  const { cols, rows } = patchGrid(w, h, patch)
  const weights = new Float64Array(cols * rows).fill(1)
  for (let y = 0; y < h; y++) {
    const rowBase = Math.floor(y / patch) * cols
    for (let x = 0; x < w; x++)
      if (scribble[y * w + x] !== unlabelled)
        weights[rowBase + Math.floor(x / patch)] = scribbleWeight
  }
  return weights
}

/**
 * `count` distinct patches drawn by successive sampling proportional to weight
 * (Efraimidis-Spirakis). Returns one byte per patch, 1 = masked. Weights must be positive.
 */
export const samplePatches = (weights: ArrayLike<number>, count: number, rng: Rng): Uint8Array => {
  const k = weights.length
  if (!(Number.isInteger(count) && count >= 0 && count <= k))
    throw new RangeError(`cannot draw ${count} of ${k} patches`)
  const keys = new Float64Array(k)
  for (let i = 0; i < k; i++) {
    const w = weights[i]
    if (!(w > 0 && Number.isFinite(w)))
      throw new RangeError(`patch weight ${i} is ${w}, must be positive`)
    keys[i] = Math.log(1 - rng.uniform()) / w
  }
  const order = Array.from({ length: k }, (_, i) => i).sort((i, j) => keys[j] - keys[i])
  const mask = new Uint8Array(k)
  for (let i = 0; i < count; i++) mask[order[i]] = 1
  return mask
}

/** A copy of the image with the pixels of masked patches set to exactly 0. */
export const maskImage = (
  image: ArrayLike<number>,
  w: number,
  h: number,
  mask: Uint8Array,
  patch: number,
): Float32Array => {
  const { cols, rows } = patchGrid(w, h, patch)
  if (image.length !== w * h)
    throw new RangeError(`image has ${image.length} pixels, expected ${w} x ${h}`)
  if (mask.length !== cols * rows)
    throw new RangeError(`mask has ${mask.length} patches, expected ${cols} x ${rows}`)
  const out = Float32Array.from(image)
  for (let y = 0; y < h; y++) {
    const rowBase = Math.floor(y / patch) * cols
    for (let c = 0; c < cols; c++)
      if (mask[rowBase + c] === 1)
        out.fill(0, y * w + c * patch, y * w + Math.min(w, (c + 1) * patch))
  }
  return out
}

/** The patch mask of one slice: weights from its scribble, then round(r * K) patches drawn. */
export const attentionMask = (
  scribble: ArrayLike<number>,
  w: number,
  h: number,
  options: MaskingOptions,
  rng: Rng,
): Uint8Array => {
  const weights = patchWeights(scribble, w, h, options)
  return samplePatches(weights, Math.round(options.ratio * weights.length), rng)
}

/**
 * Masks a batch of single-channel slices laid out [B, H, W] (as a [B, H, W, 1] tensor's
 * data). `rngFor(b)` gives the stream of image b, e.g. `seeded(seed, 'mcm', step, index)`,
 * so the masks do not depend on how a batch is split across workers.
 */
export const maskBatch = (
  images: Float32Array,
  scribbles: VoxelArray,
  shape: { readonly batch: number; readonly height: number; readonly width: number },
  options: MaskingOptions,
  rngFor: (b: number) => Rng,
): Float32Array => {
  const { batch, height, width } = shape
  const n = height * width
  if (images.length !== batch * n || scribbles.length !== batch * n)
    throw new RangeError(`batch needs ${batch} x ${height} x ${width} image and scribble values`)
  const out = new Float32Array(images.length)
  for (let b = 0; b < batch; b++) {
    const scribble = scribbles.subarray(b * n, (b + 1) * n)
    const mask = attentionMask(scribble, width, height, options, rngFor(b))
    out.set(
      maskImage(images.subarray(b * n, (b + 1) * n), width, height, mask, options.patch),
      b * n,
    )
  }
  return out
}
