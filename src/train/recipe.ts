/**
 * A training recipe: a pipeline as code plus a training config. The config is plain JSON
 * decoded by an io-ts codec (a run folder's `config.json` is one, and a resumed run is
 * checked against it); the pipeline part says where the cases come from and how each
 * becomes training slices or a validation volume. `pipelines/*.ts` export named recipes:
 * `export const recipes = { paper, cpu, smoke }`.
 *
 * Ablations and studies are config edits, reachable from the command line: `--loss` picks
 * a preset of loss terms, `--supervision label` trains the fully supervised upper bound
 * (cross-entropy on `_label`), `--shrink R` thins the scribbles, `--train-cases N` keeps N
 * training subjects (ACDC: patients) in a fixed seeded order, so smaller sets are nested in
 * larger ones as in the paper's data-sensitivity study.
 *
 * @example
 * const recipe = datasetRecipe({ summary: 'ACDC, 256 px', config, open: acdcOpen, defaultDir: '../shared/data/acdc' })
 * pipe(applyOverrides(recipe.config, { epochs: 2, loss: 'pce' }), E.map(networkSpec))
 * decodeTrainConfig(JSON.parse(text)) // Left('optimizer.lr must be a positive number, got 0')
 */
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import type { Dataset, DatasetCase } from '../data/dataset.ts'
import { LossConfig } from '../maco/losses.ts'
import { unetSpec, type UNetSpec } from '../model/unet.ts'
import { loadNifti } from '../pipeline/fields.ts'
import { compose, start, then, type Pipeline } from '../pipeline/pipeline.ts'
import { runPipeline } from '../pipeline/run.ts'
import { formatStageError, stage, type CaseRecord, type SeedEnv } from '../pipeline/stage.ts'
import type { Volume } from '../volume/volume.ts'
import {
  decodeStrict,
  nonEmptyArray,
  nonEmptyString,
  nonNegativeInt,
  positive,
  positiveInt,
  refine,
} from '../pipeline/decode.ts'
import { seeded } from '../util/rng.ts'
import { AugmentOptions } from './augment.ts'
import {
  prepareSlices,
  validationVolume,
  type TrainingSlice,
  type ValidationVolume,
} from './training-set.ts'

const fraction = refine(t.number, (n) => n >= 0 && n <= 1, 'a number from 0 to 1')
const openFraction = refine(t.number, (n) => n > 0 && n < 1, 'a number between 0 and 1')
const nonNegative = refine(t.number, (n) => Number.isFinite(n) && n >= 0, 'a number >= 0')

export const TrainConfig = t.intersection([
  t.type({
    /** Class names by label value; the network has one output per class. */
    classes: nonEmptyArray(nonEmptyString),
    /** The scribble value of unannotated pixels. */
    unlabelled: nonNegativeInt,
    /** The network grid: in-plane spacing (mm) and size (px). */
    input: t.type({
      spacing: t.tuple([positive, positive]),
      size: t.tuple([positiveInt, positiveInt]),
    }),
    network: t.type({ base: positiveInt, levels: positiveInt, dropout: t.array(fraction) }),
    /** Which split trains and which validates; optionally only the first N subjects of each. */
    data: t.intersection([
      t.type({ split: nonEmptyString, valSplit: nonEmptyString }),
      t.partial({ trainCases: positiveInt, valCases: positiveInt }),
    ]),
    supervision: t.keyof({ scribble: null, label: null }),
    shrink: t.type({ ratio: fraction, scope: t.keyof({ slice: null, component: null }) }),
    loss: LossConfig,
    masking: t.type({ patch: positiveInt, ratio: fraction, scribbleWeight: positive }),
    cpl: t.type({ alpha: nonNegative, floor: fraction }),
    optimizer: t.type({
      lr: positive,
      /** `poly`: lr (1 - step / steps)^0.9 over the whole run, as WSL4MIS. */
      schedule: t.keyof({ constant: null, poly: null }),
      beta1: fraction,
      beta2: fraction,
      eps: positive,
    }),
    batch: positiveInt,
    epochs: positiveInt,
    seed: nonNegativeInt,
    /** A step line in metrics.jsonl every this many steps (mean over them). */
    logEvery: positiveInt,
  }),
  t.partial({
    /** Random rotations and flips of each training slice (src/train/augment.ts); absent: none. */
    augment: AugmentOptions,
    /**
     * Train on a random window of this size (px) of each slice (src/train/crop.ts); validation
     * and inference see whole slices. Absent: whole slices.
     */
    crop: t.tuple([positiveInt, positiveInt]),
    /**
     * Keep an exponential moving average of the weights with this decay per step
     * (src/train/average.ts): validation scores it, `best.ckpt` and export carry it.
     * Absent: the raw weights.
     */
    ema: openFraction,
  }),
])
export type TrainConfig = t.TypeOf<typeof TrainConfig>

/** The size (px) of what a training step sees: the crop, else whole slices. */
export const trainingSize = (c: TrainConfig): readonly [number, number] => c.crop ?? c.input.size

/** What the codec cannot say: combinations that do not make a runnable training. */
const problem = (c: TrainConfig): string | undefined => {
  const multiple = 2 ** (c.network.levels - 1)
  if (c.input.size.some((n) => n % multiple !== 0))
    return `input.size ${c.input.size.join('x')} must be a multiple of ${multiple} for a ${c.network.levels}-level network`
  if (c.network.dropout.length !== c.network.levels)
    return `network.dropout needs one rate per level (${c.network.levels}), got ${c.network.dropout.length}`
  if (c.network.dropout.some((r) => r >= 1)) return 'network.dropout rates must be below 1'
  if (c.classes.length < 2) return 'classes: at least 2 are needed (background and a target)'
  if (c.unlabelled < c.classes.length)
    return `unlabelled (${c.unlabelled}) must not be a class value (0..${c.classes.length - 1})`
  if (c.crop?.some((n, i) => n > c.input.size[i]))
    return `crop ${c.crop.join('x')} is larger than input.size ${c.input.size.join('x')}`
  if (c.crop?.some((n) => n % multiple !== 0))
    return `crop ${c.crop.join('x')} must be a multiple of ${multiple} for a ${c.network.levels}-level network`
  if (c.masking.patch > Math.min(...trainingSize(c)))
    return `masking.patch ${c.masking.patch} is larger than the ${c.crop ? 'crop' : 'input'}`
  if (!(c.loss.pce || c.loss.mcm || c.loss.gc || c.loss.cpl)) return 'loss: every term is off'
  if (c.supervision === 'label' && (c.loss.gc || c.loss.cpl))
    return "supervision 'label' trains with cross-entropy on the labels: the GC and CPL terms come from scribbles (use --loss pce)"
  if (c.supervision === 'label' && c.shrink.ratio > 0)
    return "supervision 'label' has no scribbles to shrink"
  return undefined
}

/** A config from JSON: every field required, unknown keys refused, errors in words. */
export const decodeTrainConfig = (u: unknown): E.Either<string, TrainConfig> =>
  pipe(
    decodeStrict(TrainConfig)(u),
    E.chain((c) => {
      const why = problem(c)
      return why === undefined ? E.right(c) : E.left(why)
    }),
  )

/** The ablations of the paper's Table 2 as loss presets. GC consistency belongs to MCM there. */
export const LOSS_PRESETS = {
  pce: { pce: true, mcm: false, gc: false, cpl: false },
  'pce+mcm': { pce: true, mcm: true, gc: true, cpl: false },
  'pce+cpl': { pce: true, mcm: false, gc: false, cpl: true },
  maco: { pce: true, mcm: true, gc: true, cpl: true },
} as const
export type LossPreset = keyof typeof LOSS_PRESETS
export const LOSS_PRESET_NAMES = Object.keys(LOSS_PRESETS) as LossPreset[]

/** What the command line may change in a recipe's config. */
export interface Overrides {
  readonly epochs?: number
  readonly seed?: number
  readonly batch?: number
  readonly lr?: number
  readonly loss?: LossPreset
  readonly supervision?: TrainConfig['supervision']
  readonly shrink?: number
  /** A square training crop (px); the input size turns cropping off. */
  readonly crop?: number
  /** The weight average's decay; 0 turns averaging off. */
  readonly ema?: number
  readonly split?: string
  readonly trainCases?: number
  readonly valCases?: number
}

/**
 * The config with the overrides applied and checked again. `supervision: 'label'` without
 * a `loss` switches to cross-entropy only, the fully supervised baseline.
 */
export const applyOverrides = (c: TrainConfig, o: Overrides): E.Either<string, TrainConfig> => {
  const loss =
    o.loss !== undefined
      ? { ...c.loss, ...LOSS_PRESETS[o.loss] }
      : o.supervision === 'label'
        ? { ...c.loss, ...LOSS_PRESETS.pce }
        : c.loss
  const { ema: _ema, ...rest } = c
  return decodeTrainConfig({
    ...(o.ema === 0 ? rest : c),
    loss,
    data: {
      ...c.data,
      ...(o.split === undefined ? {} : { split: o.split }),
      ...(o.trainCases === undefined ? {} : { trainCases: o.trainCases }),
      ...(o.valCases === undefined ? {} : { valCases: o.valCases }),
    },
    optimizer: { ...c.optimizer, ...(o.lr === undefined ? {} : { lr: o.lr }) },
    shrink: { ...c.shrink, ...(o.shrink === undefined ? {} : { ratio: o.shrink }) },
    ...(o.epochs === undefined ? {} : { epochs: o.epochs }),
    ...(o.seed === undefined ? {} : { seed: o.seed }),
    ...(o.batch === undefined ? {} : { batch: o.batch }),
    ...(o.supervision === undefined ? {} : { supervision: o.supervision }),
    ...(o.crop === undefined ? {} : { crop: [o.crop, o.crop] }),
    ...(o.ema === undefined || o.ema === 0 ? {} : { ema: o.ema }),
  })
}

/** The UNet a config trains: one input channel, one output per class. */
export const networkSpec = (c: TrainConfig): UNetSpec =>
  unetSpec({
    inChannels: 1,
    classes: c.classes.length,
    base: c.network.base,
    levels: c.network.levels,
    dropout: c.network.dropout,
  })

/** The cases a config trains and validates on, and how to name that data in a model card. */
export interface RecipeCases<C> {
  /** e.g. "acdc train35 (70 volumes), val acdc val (30 volumes)". */
  readonly data: string
  readonly train: readonly C[]
  readonly val: readonly C[]
}

export interface Recipe<C extends CaseRecord = CaseRecord> {
  readonly summary: string
  readonly config: TrainConfig
  /**
   * Worker threads the recipe is timed with on a single-threaded engine (wasm, cpu): the
   * default of `--workers`, capped by the cores there are. Absent: one, the calling thread.
   */
  readonly workers?: number
  /**
   * Minutes a training of the recipe must fit in, from the start of the command: fewer of its
   * epochs run on a machine too slow for all (src/train/budget.ts). Absent: no limit.
   */
  readonly budget?: number
  /** Lists the cases; `dataDir` is `--data`, when given. */
  readonly cases: (config: TrainConfig, dataDir?: string) => TE.TaskEither<string, RecipeCases<C>>
  /** One training case to its training slices. */
  readonly training: (config: TrainConfig) => Pipeline<SeedEnv, C, TrainingSlice>
  /** One validation case to the volume validation scores. */
  readonly validation: (config: TrainConfig) => Pipeline<SeedEnv, C, ValidationVolume>
}

/**
 * The first `n` subjects (all subjects when `n` is undefined) in a fixed seeded order, with
 * all their cases in the original order; the order does not depend on the run's seed, so
 * the 14 subjects of one run are among the 28 of another.
 */
export const selectSubjects = <C extends CaseRecord>(
  cases: readonly C[],
  n: number | undefined,
  subjectOf: (caseName: string) => string = (c) => c,
): E.Either<string, readonly C[]> => {
  if (n === undefined) return E.right(cases)
  const subjects = [...new Set(cases.map((c) => subjectOf(c.case)))].sort()
  if (n > subjects.length)
    return E.left(`asked for ${n} subjects, the split has ${subjects.length}`)
  const kept = new Set(seeded('subjects').shuffle(subjects).slice(0, n))
  return E.right(cases.filter((c) => kept.has(subjectOf(c.case))))
}

/** Loaded volumes, one of them the supervision: the scribble, or the label in its place. */
export interface SupervisedVolumes extends CaseRecord {
  readonly image: Volume
  readonly scribble?: Volume
  readonly label?: Volume
}

/** The volume the config supervises with, under the name `scribble` (see `prepareSlices`). */
const supervision = (kind: TrainConfig['supervision']) =>
  stage('supervision', (r: SupervisedVolumes) => {
    const target = r[kind]
    return target === undefined
      ? E.left(`the case has no ${kind} volume`)
      : E.right({ scribble: target })
  })

/** Training slices from loaded volumes, supervised as the config says. */
export const trainingSlices = (
  config: TrainConfig,
): Pipeline<SeedEnv, SupervisedVolumes, TrainingSlice> =>
  pipe(
    start<SupervisedVolumes>(),
    then(supervision(config.supervision)),
    compose(prepareSlices({ ...config, classes: config.classes.length })),
  )

const volumes = (n: number) => `${n} volume${n === 1 ? '' : 's'}`

/**
 * A recipe over a dataset of NIfTI files (ACDC, MSCMR, a folder): `open(dir, split)` lists
 * a split; training loads `image` and `scribble` (or `label`, for full supervision),
 * validation loads `image` and `label`.
 */
export const datasetRecipe = (r: {
  readonly summary: string
  readonly config: TrainConfig
  readonly defaultDir: string
  readonly open: (dir: string, split: string) => TE.TaskEither<string, Dataset>
  /** The subject a case belongs to (ACDC: the patient of a frame); default: the case. */
  readonly subjectOf?: (caseName: string) => string
  readonly workers?: number
  readonly budget?: number
}): Recipe<DatasetCase> => ({
  summary: r.summary,
  config: r.config,
  ...(r.workers === undefined ? {} : { workers: r.workers }),
  ...(r.budget === undefined ? {} : { budget: r.budget }),
  cases: (config, dataDir) => {
    const dir = dataDir ?? r.defaultDir
    const split = (name: string, n: number | undefined, role: 'scribble' | 'label') =>
      pipe(
        r.open(dir, name),
        TE.chainEitherK((ds) => selectSubjects(ds.cases, n, r.subjectOf)),
        TE.chainEitherK((cases) => {
          const lacking = cases.find((c) => c[role] === undefined)
          return lacking === undefined
            ? E.right(cases)
            : E.left(`${dir} split '${name}': case ${lacking.case} has no ${role} file`)
        }),
      )
    const target = config.supervision === 'label' ? 'label' : 'scribble'
    return pipe(
      TE.Do,
      TE.apS('train', split(config.data.split, config.data.trainCases, target)),
      TE.apS('val', split(config.data.valSplit, config.data.valCases, 'label')),
      TE.map(({ train, val }) => ({
        train,
        val,
        data: `${dir} ${config.data.split} (${volumes(train.length)}), validated on ${config.data.valSplit} (${volumes(val.length)})`,
      })),
    )
  },
  training: (config) =>
    pipe(
      start<DatasetCase>(),
      then(loadNifti('image', config.supervision)),
      compose(trainingSlices(config)),
    ),
  validation: (config) =>
    pipe(
      start<DatasetCase>(),
      then(loadNifti('image', 'label')),
      then(validationVolume(config.input)),
    ),
})

/** The part of a recipe that lists and prepares data (a fine-tune's config comes from its parent). */
export type DataRecipe<C extends CaseRecord = DatasetCase> = Pick<
  Recipe<C>,
  'cases' | 'training' | 'validation'
>

export interface PreparedData {
  readonly train: readonly TrainingSlice[]
  readonly val: readonly ValidationVolume[]
  readonly data: string
}

export interface PrepareOptions {
  /** Once the cases are listed: where the data is from, and how many cases there are. */
  readonly onListed?: (data: string, cases: number) => void
  /** After each case. */
  readonly onCase?: (name: string) => void
  /**
   * Polled before each case: once it says true the preparation ends there, with part of the
   * data (the caller asked for the stop, so it knows).
   */
  readonly stopRequested?: () => boolean
}

/** The recipe's cases as training slices and validation volumes. */
export const prepareData = <C extends CaseRecord>(
  recipe: DataRecipe<C>,
  config: TrainConfig,
  dataDir?: string,
  opts: PrepareOptions = {},
): TE.TaskEither<string, PreparedData> =>
  pipe(
    recipe.cases(config, dataDir),
    TE.chain((cases) => {
      opts.onListed?.(cases.data, cases.train.length + cases.val.length)
      const run = {
        onProgress: (p: { case: string }) => opts.onCase?.(p.case),
        stopRequested: opts.stopRequested,
      }
      const env = { seed: config.seed }
      return pipe(
        TE.Do,
        // One after the other (`apS` would interleave the two, and the progress with them).
        TE.bind('train', () => runPipeline(recipe.training(config), cases.train, env, run)),
        TE.bind('val', () => runPipeline(recipe.validation(config), cases.val, env, run)),
        TE.mapLeft(formatStageError),
        TE.map(({ train, val }) => ({ train, val, data: cases.data })),
      )
    }),
  )
