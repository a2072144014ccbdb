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
import { pipe } from 'fp-ts/lib/function.js'
import { CARDIAC_CLASSES, CARDIAC_UNLABELLED } from '../src/data/dataset.ts'
import { phantomDataset, type PhantomCase, type PhantomOptions } from '../src/data/phantom.ts'
import { slices } from '../src/pipeline/fields.ts'
import { start, then } from '../src/pipeline/pipeline.ts'
import { runPipeline, type RunOptions } from '../src/pipeline/run.ts'

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
