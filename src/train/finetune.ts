/**
 * Fine-tuning: a shipped model (an ONNX file with its card, or a run folder) adapted to a
 * new kind of scan from a few scribbled volumes, with the MaCo losses of the trainer.
 *
 * The network is rebuilt from the parent: from a run folder its config, from an ONNX file
 * the shapes of its initializers (base, levels, input channels, classes; dropout rates are
 * not in the file, so the UNet's default rates per level are used). Weights are loaded into
 * it; a different class count gets a new, seeded output layer (and says so), all else is
 * kept.
 *
 * Batch norm after an ONNX import: the file holds batch norm folded into the convs, so
 * `importOnnxWeights` gives identity batch norms (gamma 1, beta 0, moving mean 0, moving
 * variance 1 - eps). Inference is the parent's, but training mode normalises with batch
 * statistics, so with those weights the first training step would see every conv output
 * scaled to zero mean and unit variance: a different network from the parent. So the batch
 * norms are re-estimated first (`calibrateBatchNorm`): the mean m and variance v of every
 * batch norm's input are measured on the new training slices with the parent's own
 * activations, and the layer becomes gamma = sqrt(v + eps), beta = m, moving mean m, moving
 * variance v. Inference is still exactly the parent's (the folded scale is 1, the folded
 * shift m - m = 0, to float rounding), and training mode starts as the parent on batches
 * whose statistics are those of the new data, instead of from a reset network.
 *
 * The training itself is `train` of trainer.ts resumed from a checkpoint holding the parent's
 * weights (Adam's moments zero, step 0), so metrics, checkpoints, Ctrl-C and `--resume`
 * work as in `maco train`. `--freeze encoder` drops the encoder's gradients (its kernels,
 * biases, gammas and betas never change); its batch-norm moving statistics still follow the
 * new data, as they must for inference to match the batch statistics training used.
 *
 * Validation: with labelled volumes the best epoch's weights are kept and its Dice goes on
 * the card; the parent's Dice on the same volumes (same classes only) is measured first.
 * Without labels (a user with scribbles only) the trainer scores nothing and keeps the last
 * epoch's weights, and the card says that no validation Dice was measured.
 *
 * @example
 * const parent = await loadParent('models/acdc.onnx')()                 // Right(Parent)
 * const config = finetuneConfig(parent.right, { classes, unlabelled: 4 }, { epochs: 20 })
 * const cases = await layoutCases('scans', DEFAULT_PATTERNS)()
 * const data = await prepareData(casesRecipe(cases.right), config.right)() // recipe.ts
 * const result = await finetune({ parent: parent.right, config: config.right, ...data.right, runDir, freeze: 'encoder' })()
 * const { onnx, card } = await finetunedModel('acdc-lge', result.right)()
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import { readFile, stat } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { modelCard } from '../cli/export.ts'
import type { DatasetCase } from '../data/dataset.ts'
import { listLayout, type Patterns } from '../data/layout.ts'
import { DEFAULT_LOSS } from '../maco/losses.ts'
import { defaultPatchSize } from '../maco/masking.ts'
import { exportOnnx } from '../model/onnx-export.ts'
import { importOnnxWeights } from '../model/onnx-import.ts'
import { decodeModel } from '../model/onnx-proto.ts'
import { initialWeights, predictLogits, toParams } from '../model/tfjs-unet.ts'
import {
  DEFAULT_UNET,
  parameterShapes,
  unetSpec,
  type UNetSpec,
  type UNetWeights,
} from '../model/unet.ts'
import { loadNifti } from '../pipeline/fields.ts'
import { compose, start, then } from '../pipeline/pipeline.ts'
import { stage } from '../pipeline/stage.ts'
import type { ModelCard } from '../serve/model-card.ts'
import { parseModelCard } from '../serve/model-card.ts'
import { sha256Hex } from '../serve/models.ts'
import { realValues, type Volume } from '../volume/volume.ts'
import { modelWeights, readCheckpoint, writeCheckpoint, type Checkpoint } from './checkpoint.ts'
import {
  decodeTrainConfig,
  networkSpec,
  selectSubjects,
  type DataRecipe,
  type TrainConfig,
} from './recipe.ts'
import { inProcess, type Passes } from './step.ts'
import {
  CHECKPOINTS,
  Progress,
  train,
  validate,
  type EpochLine,
  type RunOrigin,
  type TrainOutcome,
  type Validation,
} from './trainer.ts'
import {
  prepareSlices,
  validationVolume,
  type TrainingSlice,
  type ValidationVolume,
} from './training-set.ts'

/** The model a fine-tune starts from. */
export interface Parent {
  /** The card's name, or the run folder's. */
  readonly name: string
  readonly spec: UNetSpec
  readonly weights: UNetWeights
  readonly input: ModelCard['input']
  readonly classes: readonly string[]
  /** Weights from an ONNX file: batch norm folded into the convs (see the module comment). */
  readonly foldedBatchNorm: boolean
  /** A run folder's training config. */
  readonly config?: TrainConfig
}

export type Freeze = 'encoder' | 'none'
export const FREEZE_CHOICES: readonly Freeze[] = ['encoder', 'none']

/** Default dropout of a UNet with `levels` levels: the reference rates, the last repeated. */
const defaultDropout = (levels: number): number[] =>
  Array.from({ length: levels }, (_, l) => DEFAULT_UNET.dropout[Math.min(l, 4)])

/** The UNet an exported ONNX file holds, read from its initializers' shapes. */
export const onnxUNetSpec = (bytes: Uint8Array): E.Either<string, UNetSpec> => {
  let dims: Map<string, readonly number[]>
  try {
    dims = new Map((decodeModel(bytes).graph?.initializer ?? []).map((t) => [t.name, t.dims]))
  } catch (e) {
    return E.left(`not an ONNX model (${(e as Error).message.split('\n')[0]})`)
  }
  const first = dims.get('enc0.conv1.weight')
  const out = dims.get('out.weight')
  if (first?.length !== 4 || out?.length !== 4)
    return E.left('not a MaCo UNet (no enc0.conv1 or out initializer)')
  let levels = 1
  while (dims.has(`enc${levels}.conv1.weight`)) levels++
  return E.tryCatch(
    () =>
      unetSpec({
        inChannels: first[1],
        classes: out[0],
        base: first[0],
        levels,
        dropout: defaultDropout(levels),
      }),
    (e) => `not a MaCo UNet (${(e as Error).message})`,
  )
}

/** A parent from an exported model: its ONNX bytes and its card. */
export const parentFromOnnx = (bytes: Uint8Array, card: ModelCard): E.Either<string, Parent> =>
  pipe(
    onnxUNetSpec(bytes),
    E.filterOrElse(
      (spec) => spec.options.classes === card.classes.length,
      (spec) =>
        `the ONNX file outputs ${spec.options.classes} classes but its card lists ${card.classes.length}`,
    ),
    E.bindTo('spec'),
    E.bind('weights', ({ spec }) => importOnnxWeights(bytes, spec)),
    E.map(({ spec, weights }) => ({
      name: card.name,
      spec,
      weights,
      input: card.input,
      classes: card.classes.map((c) => c.name),
      foldedBatchNorm: true,
    })),
  )

/** A parent from a training checkpoint: the real batch norms, and the run's config. */
export const parentFromCheckpoint = (name: string, c: Checkpoint<Progress>): Parent => {
  const { config } = c.meta
  return {
    name,
    spec: networkSpec(config),
    weights: modelWeights(c),
    input: { spacing: config.input.spacing, size: config.input.size },
    classes: config.classes,
    foldedBatchNorm: false,
    config,
  }
}

const readBytes = (path: string, what: string): TE.TaskEither<string, Uint8Array> =>
  TE.tryCatch(
    async () => new Uint8Array(await readFile(path)),
    (e) =>
      (e as NodeJS.ErrnoException).code === 'ENOENT'
        ? `no ${what} at ${path}`
        : `cannot read ${path}: ${(e as Error).message.split('\n')[0]}`,
  )

/**
 * `MODEL.onnx` (its card `MODEL.json` beside it, checked against the bytes) or a run folder
 * (its best checkpoint); Left with a one-line reason.
 */
export const loadParent = (from: string): TE.TaskEither<string, Parent> => {
  if (/\.onnx$/i.test(from)) {
    const cardPath = from.replace(/\.onnx$/i, '.json')
    return pipe(
      TE.Do,
      TE.apS('bytes', readBytes(from, 'model')),
      TE.apS(
        'card',
        pipe(
          readBytes(cardPath, 'model card'),
          TE.chainEitherK((b) => parseModelCard(new TextDecoder().decode(b))),
          TE.mapLeft((why) => (why.startsWith('no model card') ? why : `${cardPath}: ${why}`)),
        ),
      ),
      TE.chainFirst(({ bytes, card }) =>
        TE.tryCatch(
          async () => {
            if ((await sha256Hex(bytes)) !== card.onnx.sha256)
              throw new Error(`${from} is not the file its card ${cardPath} describes (SHA-256)`)
          },
          (e) => (e as Error).message,
        ),
      ),
      TE.chainEitherK(({ bytes, card }) =>
        pipe(
          parentFromOnnx(bytes, card),
          E.mapLeft((why) => `${from}: ${why}`),
        ),
      ),
    )
  }
  return pipe(
    TE.tryCatch(
      () => stat(from),
      () => `no model at ${from} (give an .onnx file with its card, or a run folder)`,
    ),
    TE.filterOrElse(
      (s) => s.isDirectory(),
      () => `${from} is neither an .onnx file nor a run folder`,
    ),
    TE.chain(() => readCheckpoint(join(from, CHECKPOINTS.best), Progress)),
    TE.map((c) => parentFromCheckpoint(basename(from.replace(/[\\/]+$/, '')), c)),
  )
}

export interface FinetuneOptions {
  readonly epochs?: number
  readonly lr?: number
  readonly batch?: number
  readonly seed?: number
  /** Keep this many training subjects (a fixed seeded order, as `maco train --train-cases`). */
  readonly trainCases?: number
}

/** What fine-tuning changes by default: short, with a learning rate for adapting, not learning anew. */
export const FINETUNE_DEFAULTS = { epochs: 20, lr: 5e-4, batch: 4, seed: 1 } as const

/**
 * The training config of a fine-tune: the parent's network and input grid, the data's
 * classes, MaCo losses; `base` (a recipe's config) supplies the rest when given.
 */
export const finetuneConfig = (
  parent: Parent,
  data: { readonly classes: readonly string[]; readonly unlabelled: number },
  o: FinetuneOptions = {},
  base?: TrainConfig,
): E.Either<string, TrainConfig> => {
  const { options } = parent.spec
  if (options.inChannels !== 1)
    return E.left(`the parent takes ${options.inChannels} input channels; fine-tuning needs 1`)
  const from = base ?? parent.config
  const network = {
    base: options.base,
    levels: options.levels,
    dropout:
      from?.network.dropout.length === options.levels
        ? from.network.dropout
        : defaultDropout(options.levels),
  }
  const size = Math.min(...parent.input.size)
  return decodeTrainConfig({
    classes: [...data.classes],
    unlabelled: data.unlabelled,
    input: { spacing: [...parent.input.spacing], size: [...parent.input.size] },
    network,
    data: {
      ...(base?.data ?? { split: 'train', valSplit: 'val' }),
      ...(o.trainCases === undefined ? {} : { trainCases: o.trainCases }),
    },
    supervision: 'scribble',
    shrink: base?.shrink ?? { ratio: 0, scope: 'slice' },
    loss: base?.loss ?? DEFAULT_LOSS,
    masking: base?.masking ?? { patch: defaultPatchSize(size), ratio: 0.5, scribbleWeight: 3 },
    cpl: base?.cpl ?? { alpha: 0.1, floor: 0.05 },
    optimizer: {
      ...(base?.optimizer ?? { schedule: 'poly', beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
      lr: o.lr ?? FINETUNE_DEFAULTS.lr,
    },
    batch: o.batch ?? FINETUNE_DEFAULTS.batch,
    epochs: o.epochs ?? FINETUNE_DEFAULTS.epochs,
    seed: o.seed ?? FINETUNE_DEFAULTS.seed,
    logEvery: base?.logEvery ?? 10,
  })
}

/** The cases of a fine-tune and how to name them on the card. */
export interface FinetuneCases {
  readonly train: readonly DatasetCase[]
  readonly val: readonly DatasetCase[]
  readonly data: string
}

/** Fine-tuning's folder layout: `scan.nii.gz` with `scan_scribble.nii.gz` (and `scan_label.nii.gz`). */
export const DEFAULT_PATTERNS: Required<Patterns> = {
  image: '{case}.nii.gz',
  scribble: '{case}_scribble.nii.gz',
  label: '{case}_label.nii.gz',
}

const volumes = (n: number) => `${n} volume${n === 1 ? '' : 's'}`

/**
 * Training cases (those with a scribble) from `dir`; validation cases (with a label) from
 * `valDir`, or else the labelled cases of `dir` that have no scribble.
 */
export const layoutCases = (
  dir: string,
  patterns: Patterns,
  valDir?: string,
): TE.TaskEither<string, FinetuneCases> =>
  pipe(
    TE.Do,
    TE.apS('all', listLayout(dir, patterns)),
    TE.apS('others', valDir === undefined ? TE.right([]) : listLayout(valDir, patterns)),
    TE.chainEitherK(({ all, others }) => {
      const train = all.filter((c) => c.scribble !== undefined)
      const val = (valDir === undefined ? all.filter((c) => c.scribble === undefined) : others)
        .filter((c) => c.label !== undefined)
        .map(({ scribble: _, ...c }) => c)
      if (train.length === 0)
        return E.left(`no scribbles in ${dir}: no file matches '${patterns.scribble}' for a scan`)
      return E.right({
        train,
        val,
        data: `${dir} (${volumes(train.length)} with scribbles)${val.length > 0 ? `, validated on ${valDir ?? dir} (${volumes(val.length)} with labels)` : ', no labels'}`,
      })
    }),
  )

/** A scribble's values must be classes or the unlabelled value, and some voxel annotated. */
export const checkScribbleValues = (
  scribble: Volume,
  classes: number,
  unlabelled: number,
): E.Either<string, Volume> => {
  const values = realValues(scribble)
  let annotated = 0
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (v === unlabelled) continue
    if (!(Number.isInteger(v) && v >= 0 && v < classes))
      return E.left(
        `the scribble holds the value ${v}: neither a class (0..${classes - 1}) nor unlabelled (${unlabelled})`,
      )
    annotated++
  }
  return annotated > 0
    ? E.right(scribble)
    : E.left(`the scribble annotates no voxel (every voxel is unlabelled, ${unlabelled})`)
}

/** A recipe over given cases: loads, checks the scribble values, prepares as `maco train` does. */
export const casesRecipe = (cases: FinetuneCases): DataRecipe => ({
  cases: (config) =>
    pipe(
      TE.fromEither(selectSubjects(cases.train, config.data.trainCases)),
      TE.map((train) => ({
        ...cases,
        train,
        data:
          train.length === cases.train.length
            ? cases.data
            : `${cases.data}; the first ${volumes(train.length)} in a fixed seeded order`,
      })),
    ),
  training: (config) =>
    pipe(
      start<DatasetCase>(),
      then(loadNifti('image', 'scribble')),
      then(
        stage('scribble values', (r: { readonly scribble: Volume }) =>
          pipe(
            checkScribbleValues(r.scribble, config.classes.length, config.unlabelled),
            E.map(() => ({})),
          ),
        ),
      ),
      compose(prepareSlices({ ...config, classes: config.classes.length })),
    ),
  validation: (config) =>
    pipe(
      start<DatasetCase>(),
      then(loadNifti('image', 'label')),
      then(validationVolume(config.input)),
    ),
})

/** Slices per predict call while calibrating (memory, not results: statistics are summed). */
const CALIBRATION_CHUNK = 8

/**
 * Batch norms re-estimated on `images` (n network-grid slices, n x h x w) so that training
 * mode starts as the model `weights` describe in inference (see the module comment). Each
 * batch norm's input is the output of the program up to it, run in inference mode.
 */
export const calibrateBatchNorm = async (
  spec: UNetSpec,
  weights: UNetWeights,
  images: Float32Array,
  shape: readonly [number, number, number],
): Promise<UNetWeights> => {
  const [n, h, w] = shape
  const eps = spec.options.bnEpsilon
  const params = toParams(spec, weights)
  const out: Record<string, Float32Array> = { ...weights }
  try {
    for (let i = 0; i < spec.ops.length; i++) {
      const op = spec.ops[i]
      if (op.op !== 'batchNorm') continue
      const upTo = { ...spec, ops: spec.ops.slice(0, i) }
      const sum = new Float64Array(op.channels)
      const squares = new Float64Array(op.channels)
      // Deeper levels are smaller: count what came out, not the input's pixels.
      let count = 0
      for (let k = 0; k < n; k += CALIBRATION_CHUNK) {
        const m = Math.min(CALIBRATION_CHUNK, n - k)
        const z = tf.tidy(() =>
          predictLogits(
            upTo,
            params,
            tf.tensor4d(images.subarray(k * h * w, (k + m) * h * w), [m, h, w, 1]),
          ),
        )
        const values = (await z.data()) as Float32Array
        z.dispose()
        count += values.length / op.channels
        for (let j = 0; j < values.length; j++) {
          const c = j % op.channels
          sum[c] += values[j]
          squares[c] += values[j] * values[j]
        }
      }
      const mean = Float32Array.from(sum, (s) => s / count)
      const variance = Float32Array.from(squares, (s, c) =>
        Math.max(s / count - (sum[c] / count) ** 2, 0),
      )
      out[`${op.name}.gamma`] = Float32Array.from(variance, (v) => Math.sqrt(v + eps))
      out[`${op.name}.beta`] = mean
      out[`${op.name}.movingMean`] = mean
      out[`${op.name}.movingVariance`] = variance
    }
  } finally {
    tf.dispose(Object.values(params))
  }
  return out
}

/** The parent's weights on `spec`, with a new seeded output layer when the class count differs. */
export const startingWeights = (
  parent: Parent,
  spec: UNetSpec,
  seed: number,
): { readonly weights: UNetWeights; readonly newHead: boolean } => {
  if (spec.options.classes === parent.spec.options.classes)
    return { weights: parent.weights, newHead: false }
  const fresh = initialWeights(spec, seed)
  return {
    weights: {
      ...parent.weights,
      'out.kernel': fresh['out.kernel'],
      'out.bias': fresh['out.bias'],
    },
    newHead: true,
  }
}

/** Whether a weight belongs to the encoder (every `enc` level, the bottleneck included). */
export const isEncoderWeight = (name: string): boolean => /^enc\d+\./.test(name)

/** Passes whose backward leaves out (and frees) the gradients of frozen weights, so Adam never moves them. */
export const freezing = (passes: Passes, frozen: (name: string) => boolean): Passes => ({
  ...passes,
  forward: async (params, images, seeds) =>
    (await passes.forward(params, images, seeds)).map((pass) => ({
      ...pass,
      backward: async (d) => {
        const grads = await pass.backward(d)
        tf.dispose(
          Object.keys(grads)
            .filter(frozen)
            .map((k) => grads[k]),
        )
        return Object.fromEntries(Object.entries(grads).filter(([k]) => !frozen(k)))
      },
    })),
})

export interface FinetuneInputs {
  readonly parent: Parent
  readonly config: TrainConfig
  readonly train: readonly TrainingSlice[]
  /** Labelled volumes; may be empty. */
  readonly val: readonly ValidationVolume[]
  /** Must not hold a run yet (use `resumeFinetune` to continue one). */
  readonly runDir: string
  readonly freeze: Freeze
  readonly origin: RunOrigin
  readonly passes?: Passes
  readonly stopRequested?: () => boolean
  readonly log?: (line: string) => void
  readonly onStep?: (step: number, epoch: number) => void
  readonly onEpoch?: (line: EpochLine) => void
}

export interface Finetuned {
  readonly parent: Parent
  readonly spec: UNetSpec
  readonly config: TrainConfig
  readonly origin: RunOrigin
  readonly outcome: TrainOutcome
  /** The weights kept: the best epoch's with labels, else the last (as stopped, when stopped). */
  readonly checkpoint: Checkpoint<Progress>
  /** The parent's Dice on the validation volumes (same classes and labels only). */
  readonly parentValidation: Omit<Validation, 'epoch'> | null
  /** What was done to the parent's weights before training, in words. */
  readonly notes: readonly string[]
}

const CALIBRATION_SLICES = 64

/** Evenly spaced training slices (at most `count`) as one n x h x w array. */
const calibrationImages = (train: readonly TrainingSlice[], count: number) => {
  const n = Math.min(count, train.length)
  const picked = Array.from({ length: n }, (_, i) => train[Math.floor((i * train.length) / n)])
  const size = picked[0].image.length
  const images = new Float32Array(n * size)
  picked.forEach((s, i) => images.set(s.image, i * size))
  return { images, n }
}

const startProgress = (config: TrainConfig, origin: RunOrigin): Progress => ({
  config,
  origin,
  epoch: 0,
  stepInEpoch: 0,
  step: 0,
  epochSums: { steps: 0, loss: 0, terms: {} },
  windowSums: { steps: 0, loss: 0, terms: {} },
  seconds: 0,
  best: null,
  validation: null,
})

/** The weights, their shapes and zero Adam moments: a checkpoint the trainer resumes from. */
const startCheckpoint = (
  spec: UNetSpec,
  weights: UNetWeights,
  meta: Progress,
): Checkpoint<Progress> => {
  const shapes = parameterShapes(spec)
  const zeros = Object.fromEntries(
    shapes
      .filter((p) => p.trainable)
      .map((p) => [p.name, new Float32Array(weights[p.name].length)]),
  )
  return {
    meta,
    weights,
    shapes: Object.fromEntries(shapes.map((p) => [p.name, p.shape])),
    adam: { step: 0, m: zeros, v: zeros },
  }
}

/** Fewer slices than a batch: one smaller batch an epoch rather than no step at all. */
export const fitBatch = (config: TrainConfig, slices: number): TrainConfig =>
  slices >= config.batch ? config : { ...config, batch: Math.max(1, slices) }

const runFinetune = async (
  inputs: FinetuneInputs,
  resume: boolean,
): Promise<E.Either<string, Finetuned>> => {
  const { parent, runDir } = inputs
  const config = fitBatch(inputs.config, inputs.train.length)
  const spec = networkSpec(config)
  const notes: string[] = []
  const note = (line: string) => {
    notes.push(line)
    inputs.log?.(`note: ${line}`)
  }
  let parentValidation: Finetuned['parentValidation'] = null
  if (!resume) {
    if (inputs.train.length === 0) return E.left('no training slices')
    const p = parent.spec.options
    if (spec.options.base !== p.base || spec.options.levels !== p.levels)
      return E.left(
        `the config's network (base ${spec.options.base}, ${spec.options.levels} levels) is not the parent's (base ${p.base}, ${p.levels} levels)`,
      )
    const start = startingWeights(parent, spec, config.seed)
    let weights = start.weights
    if (start.newHead)
      note(
        `new output layer: the parent has ${p.classes} classes (${parent.classes.join(', ')}), the data ${config.classes.length} (${config.classes.join(', ')})`,
      )
    if (parent.foldedBatchNorm) {
      const { images, n } = calibrationImages(inputs.train, CALIBRATION_SLICES)
      const [w, h] = config.input.size
      weights = await calibrateBatchNorm(spec, weights, images, [n, h, w])
      note(`batch norm re-estimated from the folded ONNX weights on ${n} training slices`)
    }
    if (inputs.val.length > 0 && !start.newHead) {
      const params = toParams(spec, weights)
      parentValidation = await validate(
        spec,
        params,
        inputs.val,
        config.classes,
        config.batch,
        inputs.passes?.inference,
      )
      tf.dispose(Object.values(params))
    }
    const written = await writeCheckpoint(
      join(runDir, CHECKPOINTS.last),
      startCheckpoint(spec, weights, startProgress(config, inputs.origin)),
    )()
    if (E.isLeft(written)) return written
  }
  const frozen = inputs.freeze === 'encoder' ? isEncoderWeight : () => false
  const ownPasses = inputs.passes === undefined
  const passes = freezing(inputs.passes ?? inProcess(spec), frozen)
  try {
    const outcome = await train({
      config,
      train: inputs.train,
      val: inputs.val,
      runDir,
      resume: true,
      passes,
      ...(inputs.stopRequested ? { stopRequested: inputs.stopRequested } : {}),
      ...(inputs.log ? { log: inputs.log } : {}),
      ...(inputs.onStep ? { onStep: inputs.onStep } : {}),
      ...(inputs.onEpoch ? { onEpoch: inputs.onEpoch } : {}),
    })()
    if (E.isLeft(outcome)) return outcome
    // Without validation volumes the trainer's best is its last epoch; a stopped run may have
    // no best yet, and is kept as it stopped (to resume).
    const kept = await readCheckpoint(
      join(runDir, CHECKPOINTS[outcome.right.status === 'finished' ? 'best' : 'last']),
      Progress,
    )()
    if (E.isLeft(kept)) return kept
    return E.right({
      parent,
      spec,
      config,
      origin: kept.right.meta.origin,
      outcome: outcome.right,
      checkpoint: kept.right,
      parentValidation,
      notes,
    })
  } finally {
    if (ownPasses) await passes.close()
  }
}

/** Fine-tunes the parent into `runDir` (see the module comment); Left: a one-line reason. */
export const finetune =
  (inputs: FinetuneInputs): TE.TaskEither<string, Finetuned> =>
  () =>
    runFinetune(inputs, false)

/** Continues a stopped fine-tune in `inputs.runDir` (same config and data). */
export const resumeFinetune =
  (inputs: FinetuneInputs): TE.TaskEither<string, Finetuned> =>
  () =>
    runFinetune(inputs, true)

/** What the card of a model fine-tuned without labelled volumes says instead of a Dice. */
export const NOT_VALIDATED = 'none: no labelled volumes, so no validation Dice was measured'

/** The fine-tuned model as ONNX bytes and its card (lineage in `parent`). */
export const finetunedModel = (
  name: string,
  f: Finetuned,
): TE.TaskEither<string, { readonly onnx: Uint8Array; readonly card: ModelCard }> =>
  TE.tryCatch(
    async () => {
      const onnx = exportOnnx(f.spec, modelWeights(f.checkpoint), {
        opset: 17,
        metadata: {
          'maco.recipe': f.origin.recipe,
          'maco.classes': f.config.classes.join(','),
          'maco.parent': f.parent.name,
        },
      })
      const card = modelCard(name, f.checkpoint, await sha256Hex(onnx))
      if (E.isLeft(card)) throw new Error(card.left)
      const unscored = f.checkpoint.meta.validation === null
      return {
        onnx,
        card: {
          ...card.right,
          ...(unscored ? { validation: { data: NOT_VALIDATED } } : {}),
          parent: f.parent.name,
        },
      }
    },
    (e) => (e as Error).message,
  )
