/**
 * The synthetic pipeline: seeded short-axis phantoms (src/data/phantom.ts) split into
 * per-slice records of image, scribble and label, the way a real dataset's pipeline turns
 * NIfTI files into slices. Needs no data, so it drives tests and the out-of-the-box demo.
 * Preprocessing and MaCo stages are appended to `syntheticPipeline` with `then(...)`.
 *
 * @example
 * const records = await syntheticSlices({ train: 8, val: 2, seed: 1 })()
 * // Right([{ case: 'phantom000', split: 'train', slice: 0, image: Slice, scribble: Slice, label: Slice }, ...])
 */
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import { CARDIAC_CLASSES, CARDIAC_UNLABELLED } from '../src/data/dataset.ts'
import { phantomDataset, type PhantomCase, type PhantomOptions } from '../src/data/phantom.ts'
import { DEFAULT_LOSS } from '../src/maco/losses.ts'
import { slices } from '../src/pipeline/fields.ts'
import { compose, start, then } from '../src/pipeline/pipeline.ts'
import { runPipeline, type RunOptions } from '../src/pipeline/run.ts'
import { trainingSlices, type Recipe, type TrainConfig } from '../src/train/recipe.ts'
import { validationVolume } from '../src/train/training-set.ts'

export interface SyntheticOptions {
  /** Phantoms in the train and val splits (different phantoms). */
  readonly train: number
  readonly val: number
  readonly seed: number
  readonly phantom?: Partial<PhantomOptions>
}

export const DEFAULT_SYNTHETIC: SyntheticOptions = { train: 16, val: 4, seed: 1 }

export const synthetic = {
  name: 'synthetic',
  classes: CARDIAC_CLASSES,
  unlabelled: CARDIAC_UNLABELLED,
}

export type SyntheticCase = PhantomCase & { readonly split: 'train' | 'val' }

/** The phantoms, the first `train` of them in the train split and the next `val` in val. */
export const syntheticCases = (o: SyntheticOptions = DEFAULT_SYNTHETIC): SyntheticCase[] =>
  phantomDataset(o.train + o.val, o.seed, o.phantom).map((c, i) => ({
    ...c,
    split: i < o.train ? 'train' : 'val',
  }))

export const syntheticPipeline = pipe(
  start<SyntheticCase>(),
  then(slices('image', 'scribble', 'label')),
)

/** Runs the pipeline over the phantoms: one record per slice. */
export const syntheticSlices = (o: SyntheticOptions = DEFAULT_SYNTHETIC, run: RunOptions = {}) =>
  runPipeline(syntheticPipeline, syntheticCases(o), {}, run)

/** Phantom geometry of the recipes: 192 mm fields of view, resampled to the network grid. */
const RECIPE_PHANTOM: Partial<PhantomOptions> = {
  size: [80, 80],
  slices: 8,
  spacing: [2.4, 2.4, 8],
}

const smoke: TrainConfig = {
  classes: [...CARDIAC_CLASSES],
  unlabelled: CARDIAC_UNLABELLED,
  input: { spacing: [3, 3], size: [64, 64] },
  network: { base: 8, levels: 4, dropout: [0.05, 0.1, 0.2, 0.3] },
  data: { split: 'train', valSplit: 'val', trainCases: 24, valCases: 4 },
  supervision: 'scribble',
  shrink: { ratio: 0, scope: 'slice' },
  loss: DEFAULT_LOSS,
  masking: { patch: 4, ratio: 0.5, scribbleWeight: 3 },
  cpl: { alpha: 0.1, floor: 0.05 },
  optimizer: { lr: 5e-3, schedule: 'poly', beta1: 0.9, beta2: 0.999, eps: 1e-8 },
  batch: 8,
  epochs: 10,
  seed: 1,
  logEvery: 5,
}

/** Training recipes on phantoms (src/train/recipe.ts); `data.trainCases`/`valCases` count phantoms. */
export const recipes: Readonly<Record<string, Recipe<SyntheticCase>>> = {
  smoke: {
    summary: 'phantoms, 64 px at 3 mm, a small UNet: trains in about a minute on 2 cores',
    config: smoke,
    cases: (config) => {
      const o = { train: config.data.trainCases ?? 24, val: config.data.valCases ?? 4, seed: 1 }
      const cases = syntheticCases({ ...o, phantom: RECIPE_PHANTOM })
      return TE.right({
        data: `synthetic phantoms (seed ${o.seed}): ${o.train} train, ${o.val} val`,
        train: cases.filter((c) => c.split === 'train'),
        val: cases.filter((c) => c.split === 'val'),
      })
    },
    training: (config) => pipe(start<SyntheticCase>(), compose(trainingSlices(config))),
    validation: (config) => pipe(start<SyntheticCase>(), then(validationVolume(config.input))),
  },
}
