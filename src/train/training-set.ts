/**
 * The training data in memory, and the pipeline stages that make it: what a recipe's
 * pipeline turns each training case into (one compact record per slice, on the network
 * grid, with everything the loss needs) and each validation case into (the network's input
 * slices plus the label at native resolution, as the evaluation scores it).
 *
 * Preparation of a training case, after a recipe's pipeline has loaded `image` and
 * `scribble` volumes (the `_label` under the name `scribble` for full supervision):
 *   slices -> shrink (optional, native grid) -> GC region (native grid) -> network grid
 *   (image bilinear, fill 0; scribble nearest, fill unlabelled; GC bilinear, > 0.5)
 *   -> z-score -> CPL -> pack
 * Shrink and GC work on the grid the annotator drew on; CPL on the network grid, where the
 * loss compares it with the prediction. Only the per-iteration masking is left to the
 * trainer (a fresh mask per image and step).
 *
 * @example
 * const training = pipe(start<DatasetCase>(), then(loadNifti('image', 'scribble')), compose(prepareSlices(options)))
 * const slices = await runPipeline(training, cases, { seed: 1 })() // Right(TrainingSlice[])
 * const batch = batchArrays(slices, [3, 17, 2, 40], options.classes) // NHWC arrays
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import { continuousPseudoLabeller } from '../maco/cpl.ts'
import { gcRegion } from '../maco/gc-region.ts'
import { shrinkScribble, type ShrinkScope } from '../maco/shrink.ts'
import { slices } from '../pipeline/fields.ts'
import { pick, start, then, type Pipeline } from '../pipeline/pipeline.ts'
import { mapField, stage, stageRandom, type CaseRecord, type SeedEnv } from '../pipeline/stage.ts'
import { zScore } from '../volume/normalize.ts'
import {
  preprocessPlan,
  preprocessVolume,
  toNetworkGrid,
  type InPlaneTransform,
  type PreprocessTarget,
} from '../volume/preprocess.ts'
import type { Interpolation } from '../volume/resample.ts'
import type { Slice } from '../volume/slice.ts'
import { realValues, spatialDims, type Vec3, type Volume } from '../volume/volume.ts'

export interface PrepareOptions {
  readonly input: PreprocessTarget
  /** Number of classes, background included. */
  readonly classes: number
  /** The scribble value of unannotated pixels. */
  readonly unlabelled: number
  readonly cpl: { readonly alpha: number; readonly floor: number }
  /** Fraction of scribble pixels to remove (0: none). */
  readonly shrink: { readonly ratio: number; readonly scope: ShrinkScope }
}

/** One training slice on the network grid (w x h, x fastest). */
export interface TrainingSlice {
  readonly case: string
  readonly slice: number
  /** z-scored intensities. */
  readonly image: Float32Array
  /** Class per pixel, `unlabelled` where nobody drew. */
  readonly scribble: Uint8Array
  /** 1 inside the GC region. */
  readonly gc: Uint8Array
  /** Continuous pseudo labels, classes x h x w (class-major). */
  readonly cpl: Float32Array
}

/** A validation volume: the network's input slices and the native-resolution label. */
export interface ValidationVolume {
  readonly case: string
  /** z-scored network-grid slices, n x h x w. */
  readonly image: Float32Array
  /** The label at native resolution, x fastest. */
  readonly label: Uint8Array
  /** Native [nx, ny, nz]. */
  readonly dims: Vec3
  readonly spacing: Vec3
  /** Maps network-grid planes back to the native grid. */
  readonly plan: InPlaneTransform
}

/** A slice on the network grid, its plan made from the slice's own size and spacing. */
const onNetworkGrid =
  (target: PreprocessTarget, interpolation: Interpolation, fill: number) =>
  (s: Slice): Slice =>
    toNetworkGrid(
      preprocessPlan({ dims: [s.width, s.height], spacing: s.spacing }, target),
      interpolation,
      fill,
    )(s)

const withData = (s: Slice, data: Float32Array): Slice => ({ ...s, data })

/** Removes `ratio` of each slice's scribble pixels (see shrink.ts), seeded per case and slice. */
export const shrinkScribbles = (o: Pick<PrepareOptions, 'shrink' | 'unlabelled'>) =>
  stageRandom(
    'shrink',
    (r: { readonly scribble: Slice }, rng) => ({
      scribble: withData(
        r.scribble,
        shrinkScribble(
          r.scribble.data,
          r.scribble.width,
          r.scribble.height,
          { ratio: o.shrink.ratio, scope: o.shrink.scope, unlabelled: o.unlabelled },
          rng,
        ),
      ),
    }),
    { needs: ['scribble'] },
  )

/** The GC region (filled hull of the class-0 scribble) as a 0/1 slice on the scribble's grid. */
export const gcRegions = stage(
  'gc region',
  (r: { readonly scribble: Slice }) => ({
    gc: withData(
      r.scribble,
      Float32Array.from(gcRegion(r.scribble.data, r.scribble.width, r.scribble.height)),
    ),
  }),
  { needs: ['scribble'] },
)

/** Pseudo labels of the (network-grid) scribble; one labeller per slice size, buffers reused. */
export const pseudoLabels = (o: Pick<PrepareOptions, 'classes' | 'unlabelled' | 'cpl'>) => {
  const labellers = new Map<string, ReturnType<typeof continuousPseudoLabeller>>()
  return stage(
    'cpl',
    (r: { readonly scribble: Slice }) => {
      const key = `${r.scribble.width}x${r.scribble.height}`
      let labeller = labellers.get(key)
      if (!labeller) {
        labeller = continuousPseudoLabeller(r.scribble.width, r.scribble.height, {
          classes: o.classes,
          unlabelled: o.unlabelled,
          ...o.cpl,
        })
        labellers.set(key, labeller)
      }
      return { cpl: labeller(r.scribble.data) }
    },
    { needs: ['scribble'] },
  )
}

const threshold = (s: Slice): Slice =>
  withData(
    s,
    s.data.map((v) => (v > 0.5 ? 1 : 0)),
  )

/** Slices as compact arrays: the form the trainer keeps in memory. */
const pack = stage(
  'pack',
  (r: { readonly image: Slice; readonly scribble: Slice; readonly gc: Slice }) => ({
    image: r.image.data,
    scribble: Uint8Array.from(r.scribble.data),
    gc: Uint8Array.from(r.gc.data),
  }),
  { needs: ['image', 'scribble', 'gc'] },
)

/** From loaded `image` and `scribble` volumes to training slices (see the module comment). */
export const prepareSlices = (
  o: PrepareOptions,
): Pipeline<
  SeedEnv,
  CaseRecord & { readonly image: Volume; readonly scribble: Volume },
  TrainingSlice
> =>
  pipe(
    start<CaseRecord & { readonly image: Volume; readonly scribble: Volume }>(),
    then(slices('image', 'scribble')),
    then(shrinkScribbles(o)),
    then(gcRegions),
    then(mapField('image to network grid', 'image', onNetworkGrid(o.input, 'bilinear', 0))),
    then(
      mapField(
        'scribble to network grid',
        'scribble',
        onNetworkGrid(o.input, 'nearest', o.unlabelled),
      ),
    ),
    then(
      mapField('gc to network grid', 'gc', (s: Slice) =>
        threshold(onNetworkGrid(o.input, 'bilinear', 0)(s)),
      ),
    ),
    then(mapField('zscore', 'image', zScore)),
    then(pseudoLabels(o)),
    then(pack),
    pick('image', 'scribble', 'gc', 'cpl'),
  ) as Pipeline<
    SeedEnv,
    CaseRecord & { readonly image: Volume; readonly scribble: Volume },
    TrainingSlice
  >

/** A loaded `image` and `label` volume as validation scores them. */
export const validationVolume = (target: PreprocessTarget) =>
  stage(
    'validation volume',
    (r: { readonly image: Volume; readonly label: Volume }) => {
      const dims = spatialDims(r.image)
      const labelDims = spatialDims(r.label)
      if (r.image.dims.length > 3 && r.image.dims[3] !== 1)
        return E.left(`a 4D image (dims ${r.image.dims.join('x')}) cannot be validated`)
      if (dims.some((n, i) => n !== labelDims[i]))
        return E.left(`image dims ${dims.join('x')} differ from label dims ${labelDims.join('x')}`)
      const network = preprocessVolume(r.image, { ...target, kind: 'image' })
      return E.right({
        image: network.data as Float32Array,
        label: Uint8Array.from(realValues(r.label), (v) => Math.round(v)),
        dims,
        spacing: r.image.geometry.spacing,
        plan: preprocessPlan({ dims, spacing: r.image.geometry.spacing }, target),
      })
    },
    { needs: ['image', 'label'] },
  )

/** The slices at `indices` as batch arrays, NHWC (CPL transposed from class-major). */
export const batchArrays = (
  set: readonly TrainingSlice[],
  indices: readonly number[],
  classes: number,
) => {
  const n = set[indices[0]].image.length
  const b = indices.length
  const image = new Float32Array(b * n)
  const scribbles = new Uint8Array(b * n)
  const gc = new Float32Array(b * n)
  const cpl = new Float32Array(b * n * classes)
  indices.forEach((index, k) => {
    const s = set[index]
    if (s.image.length !== n)
      throw new RangeError(`slice ${s.case}:${s.slice} is not the size of the batch's first`)
    image.set(s.image, k * n)
    scribbles.set(s.scribble, k * n)
    for (let i = 0; i < n; i++) gc[k * n + i] = s.gc[i]
    const base = k * n * classes
    for (let c = 0; c < classes; c++)
      for (let i = 0; i < n; i++) cpl[base + i * classes + c] = s.cpl[c * n + i]
  })
  return { image, scribbles, gc, cpl }
}
