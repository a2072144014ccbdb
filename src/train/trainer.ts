/**
 * The MaCo trainer: epochs of seeded mini-batches over the training slices, one
 * optimisation step each (`step.ts`: the original and, with MCM, the masked image through
 * the UNet, the loss of `losses.ts` with its switchable terms, both backwards, Adam with the
 * step's learning rate, batch-norm moving averages from the original images' pass only, so
 * inference statistics are those of unmasked images), then validation on whole volumes. With
 * `ema` in the config a moving average of the weights (average.ts) follows each step; it is
 * what validation scores and what `best.ckpt` is chosen by, and it resumes with the run.
 *
 * Everything random is keyed, not drawn from one stream: the epoch's order from
 * (seed, 'epoch', e), the MCM mask of image i at step s from (seed, 'mcm', s, i), dropout
 * from (seed, 'dropout', s, pass). So the RNG state of a run is its seed and step
 * counters, and a checkpoint (weights, Adam's moments, counters, the partial epoch's sums)
 * resumes bit for bit where it stopped, mid-epoch included.
 *
 * Validation, as the field evaluates: every slice of a validation volume through the
 * network in inference mode, class probabilities mapped back to the native grid
 * (`fromNetworkGrid`, bilinear), argmax, 3D Dice per foreground class (metrics.ts), mean
 * over volumes; `valDice` is the mean over classes. Without validation volumes (a fine-tune on
 * a few scribbled scans often has no labels) nothing is scored: the epoch lines have no
 * valDice, `best.ckpt` is the last epoch's and `best` and `validation` stay null.
 *
 * The run folder: `metrics.jsonl` (a step line every `logEvery` steps with the mean loss
 * and terms since the last one; an epoch line per epoch:
 * `{"epoch":12,"step":...,"loss":...,"valDice":0.87,"valClassDice":{"RV":...},"seconds":...}`),
 * `plot.svg` (rewritten each epoch), `last.ckpt` (each epoch and when stopped) and
 * `best.ckpt` (best valDice so far; the last epoch without validation).
 *
 * @example
 * const outcome = await train({ config, train: slices, val: volumes, runDir: 'runs/a', resume: false })()
 * // Right({ status: 'finished', epoch: 30, step: 4980, best: { epoch: 27, valDice: 0.86 } })
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import * as t from 'io-ts'
import { appendFile, mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { dice } from '../eval/metrics.ts'
import type { LossTargets } from '../maco/losses.ts'
import { maskBatch, maskingOptions, type MaskingOptions } from '../maco/masking.ts'
import { initialWeights, toParams, type Params } from '../model/tfjs-unet.ts'
import type { UNetSpec } from '../model/unet.ts'
import { writeFileAtomic } from '../util/atomic.ts'
import { formatSeconds } from '../util/duration.ts'
import { seeded } from '../util/rng.ts'
import { backgroundOutside, fromNetworkGrid } from '../volume/preprocess.ts'
import { readCheckpoint, restoreState, saveState, writeCheckpoint } from './checkpoint.ts'
import { trainingPlot, type PlotHistory } from './plot.ts'
import { TrainConfig, networkSpec, trainingSize } from './recipe.ts'
import {
  disposeState,
  initialState,
  inProcess,
  tfjsInference,
  trainStep,
  type Inference,
  type MacoStepLoss,
  type Passes,
  type StepBatch,
  type TrainState,
} from './step.ts'
import { sliceAugmenter } from './augment.ts'
import { averageDecay, startAverage, updateAverage } from './average.ts'
import { sliceCropper } from './crop.ts'
import { batchArrays, type TrainingSlice, type ValidationVolume } from './training-set.ts'

/** Where a run's data and recipe came from, recorded in checkpoints and model cards. */
export const RunOrigin = t.type({ recipe: t.string, pipeline: t.string, data: t.string })
export type RunOrigin = t.TypeOf<typeof RunOrigin>

const Sums = t.type({ steps: t.number, loss: t.number, terms: t.record(t.string, t.number) })
type Sums = t.TypeOf<typeof Sums>

const Validation = t.type({
  epoch: t.number,
  valDice: t.number,
  /** Mean 3D Dice over the validation volumes, per foreground class name. */
  classes: t.record(t.string, t.number),
  volumes: t.number,
})
export type Validation = t.TypeOf<typeof Validation>

/** A checkpoint's header: enough to resume, and to describe the model it holds. */
export const Progress = t.type({
  config: TrainConfig,
  origin: RunOrigin,
  /** Epochs completed. */
  epoch: t.number,
  /** Steps done in the epoch under way. */
  stepInEpoch: t.number,
  /** Steps done in all. */
  step: t.number,
  /** Sums over the epoch under way, and since the last step line. */
  epochSums: Sums,
  windowSums: Sums,
  /** Seconds spent on the epoch under way. */
  seconds: t.number,
  /** The epoch of best valDice so far; null before the first and without validation volumes. */
  best: t.union([t.null, t.type({ epoch: t.number, valDice: t.number })]),
  /** The latest validation (of the weights in this checkpoint when it ends an epoch). */
  validation: t.union([t.null, Validation]),
})
export type Progress = t.TypeOf<typeof Progress>

export interface TrainInputs {
  readonly config: TrainConfig
  readonly train: readonly TrainingSlice[]
  /** May be empty: then nothing is scored and the last epoch counts as best. */
  readonly val: readonly ValidationVolume[]
  readonly runDir: string
  /** Continue from `runDir/last.ckpt`. */
  readonly resume: boolean
  readonly origin?: RunOrigin
  /** Where the forward/backward passes run (default: this thread's engine). */
  readonly passes?: Passes
  /** Checked after every step: true stops the run with a resumable checkpoint. */
  readonly stopRequested?: () => boolean
  /**
   * Seconds on `performance.now()`'s clock by which this command's epochs should be done (a
   * budget's end). The epochs were fitted to it by a probe; when the machine turns slower than
   * it was then, the run stops after the epoch past which the slowest epoch so far would end
   * too late (status 'out of time', resumable), rather than overrun.
   */
  readonly deadline?: number
  /** Progress lines (a bar with ETA on a terminal). */
  readonly log?: (line: string) => void
  readonly onStep?: (step: number, epoch: number) => void
  readonly onEpoch?: (line: EpochLine) => void
}

export interface EpochLine {
  readonly epoch: number
  readonly step: number
  readonly lr: number
  readonly loss: number
  readonly terms: Readonly<Record<string, number>>
  /** Absent without validation volumes. */
  readonly valDice?: number
  readonly valClassDice?: Readonly<Record<string, number>>
  readonly seconds: number
  readonly secondsPerStep: number
}

export interface TrainOutcome {
  readonly status: 'finished' | 'stopped' | 'out of time'
  /** Epochs completed. */
  readonly epoch: number
  readonly step: number
  readonly best: Progress['best']
  readonly validation: Validation | null
}

export const CHECKPOINTS = { last: 'last.ckpt', best: 'best.ckpt' } as const
export const METRICS_FILE = 'metrics.jsonl'
export const PLOT_FILE = 'plot.svg'

/** Optimisation steps per epoch: whole batches only (the rest of a shuffled epoch waits for the next). */
export const stepsPerEpoch = (slices: number, batch: number): number => Math.floor(slices / batch)

/** The steps of an epoch; Left when the slices do not make one batch. */
const wholeBatches = (slices: number, batch: number): E.Either<string, number> => {
  const steps = stepsPerEpoch(slices, batch)
  return steps > 0
    ? E.right(steps)
    : E.left(`${slices} training slices are fewer than one batch of ${batch}`)
}

/** The learning rate of step `step` (0-based) of `total`. */
export const learningRate = (c: TrainConfig['optimizer'], step: number, total: number): number =>
  c.schedule === 'constant' ? c.lr : c.lr * Math.max(0, 1 - step / Math.max(total, 1)) ** 0.9

const emptySums = (): Sums => ({ steps: 0, loss: 0, terms: {} })

const addTo = (s: Sums, loss: number, terms: Readonly<Record<string, number>>): Sums => ({
  steps: s.steps + 1,
  loss: s.loss + loss,
  terms: Object.fromEntries(Object.entries(terms).map(([k, v]) => [k, (s.terms[k] ?? 0) + v])),
})

const means = (s: Sums) => ({
  loss: s.steps > 0 ? s.loss / s.steps : NaN,
  terms: Object.fromEntries(Object.entries(s.terms).map(([k, v]) => [k, v / Math.max(s.steps, 1)])),
})

interface Batch extends StepBatch {
  readonly targets: LossTargets
}

/** A training slice as one step sees it: augmented, then cropped, each draw seeded by step and slice. */
type SliceView = (slice: TrainingSlice, step: number, index: number) => TrainingSlice

const sliceView = (config: TrainConfig): SliceView => {
  const [width, height] = config.input.size
  const classes = config.classes.length
  const augment =
    config.augment &&
    sliceAugmenter(
      { width, height, classes, unlabelled: config.unlabelled, cpl: config.cpl },
      config.augment,
    )
  const crop = config.crop && sliceCropper({ width, height, classes }, config.crop)
  return (slice, step, index) => {
    const moved = augment ? augment(slice, seeded(config.seed, 'augment', step, index)) : slice
    return crop ? crop(moved, seeded(config.seed, 'crop', step, index)) : moved
  }
}

/**
 * The arrays of one step, before any tensor: the slices at `indices` as the step sees them,
 * and with MCM their masked images. Everything in them is drawn from seeds of the step and
 * slice, so they can be made ahead, while the step before runs.
 */
const hostBatch = (
  config: TrainConfig,
  masking: MaskingOptions,
  set: readonly TrainingSlice[],
  indices: readonly number[],
  step: number,
  view: SliceView,
) => {
  const [width, height] = trainingSize(config)
  const a = batchArrays(
    indices.map((i) => view(set[i], step, i)),
    indices.map((_, k) => k),
    config.classes.length,
  )
  const masked = config.loss.mcm
    ? maskBatch(a.image, a.scribbles, { batch: indices.length, height, width }, masking, (b) =>
        seeded(config.seed, 'mcm', step, indices[b]),
      )
    : undefined
  return { ...a, masked, shape: [indices.length, height, width] as const }
}
type HostBatch = ReturnType<typeof hostBatch>

/** A step's images as tensors (freed by the step); the loss reads its targets on the host. */
const batchOf = (config: TrainConfig, a: HostBatch): Batch => ({
  image: tf.tensor4d(a.image, [...a.shape, 1]),
  ...(a.masked ? { masked: tf.tensor4d(a.masked, [...a.shape, 1]) } : {}),
  targets: { scribbles: a.scribbles, unlabelled: config.unlabelled, gc: a.gc, cpl: a.cpl },
})

/** `f()` once this turn of the event loop is over: while the step awaits its workers. */
const afterThisTurn = <T>(f: () => T): Promise<T> =>
  new Promise((resolve, reject) =>
    setImmediate(() => {
      try {
        resolve(f())
      } catch (e) {
        reject(e)
      }
    }),
  )

/** Adam's settings at step `step` (0-based) of `total`. */
const adamAt = (config: TrainConfig, step: number, total: number) => ({
  learningRate: learningRate(config.optimizer, step, total),
  beta1: config.optimizer.beta1,
  beta2: config.optimizer.beta2,
  epsilon: config.optimizer.eps,
})

type StepRunner = (
  state: TrainState,
  step: number,
  indices: readonly number[],
  /** The next step's slices, when it follows in the same run: its batch is made meanwhile. */
  next?: readonly number[],
) => Promise<{ readonly state: TrainState; readonly loss: number; readonly terms: Sums['terms'] }>

/** The MCM masking of a config's training steps; Left when it does not fit the input. */
const maskingOf = (config: TrainConfig): E.Either<string, MaskingOptions> =>
  maskingOptions({
    size: trainingSize(config)[0],
    ...config.masking,
    unlabelled: config.unlabelled,
  })

/**
 * One optimisation step over the slices at `indices` (the batch made and freed here), for
 * a run of `totalSteps` steps. Given the next step's slices, it makes their batch while its
 * own passes run on the workers (about 15 ms a step at 128 px that this thread would
 * otherwise spend with both workers idle).
 */
const stepRunner = (
  config: TrainConfig,
  masking: MaskingOptions,
  slices: readonly TrainingSlice[],
  passes: Passes,
  totalSteps: number,
): StepRunner => {
  const view = sliceView(config)
  let terms: Sums['terms'] = {}
  const loss: MacoStepLoss<Batch> = {
    kind: 'maco',
    config: config.loss,
    targets: (b) => b.targets,
    onTerms: (t) => {
      terms = t
    },
  }
  const make = (indices: readonly number[], step: number) =>
    hostBatch(config, masking, slices, indices, step, view)
  let ahead:
    { readonly step: number; readonly key: string; readonly batch: Promise<HostBatch> } | undefined
  return async (state, step, indices, next) => {
    const made =
      ahead?.step === step && ahead.key === indices.join() ? await ahead.batch : make(indices, step)
    ahead = undefined
    if (next !== undefined) {
      const batch = afterThisTurn(() => make(next, step + 1))
      // A failure surfaces at the step that takes the batch; one never taken is dropped.
      batch.catch(() => {})
      ahead = { step: step + 1, key: next.join(), batch }
    }
    const batch = batchOf(config, made)
    try {
      const result = await trainStep(
        passes,
        state,
        batch,
        loss,
        { seed: config.seed, step },
        adamAt(config, step, totalSteps),
        'original',
      )
      return { ...result, terms }
    } finally {
      tf.dispose([batch.image, ...(batch.masked ? [batch.masked] : [])])
    }
  }
}

/** The slice order of epoch `epoch`: a seeded shuffle, the same on every run of the seed. */
const epochOrder = (config: TrainConfig, slices: number, epoch: number): number[] =>
  seeded(config.seed, 'epoch', epoch).shuffle(Array.from({ length: slices }, (_, i) => i))

/** The slices of step `k` of an epoch in `order`: the probe must time the batches a run takes. */
const batchAt = (order: readonly number[], k: number, batch: number): number[] =>
  order.slice(k * batch, (k + 1) * batch)

/**
 * Mean 3D Dice per foreground class over the validation volumes, predicted `batch` slices
 * at a time with the moving statistics (inference mode).
 */
export const validate = async (
  spec: UNetSpec,
  params: Params,
  volumes: readonly ValidationVolume[],
  classNames: readonly string[],
  batch: number,
  inference: (params: Params) => Promise<Inference> = tfjsInference(spec),
): Promise<Omit<Validation, 'epoch'>> => {
  const classes = classNames.length
  const sums = new Float64Array(classes)
  const network = await inference(params)
  try {
    for (const v of volumes) {
      const [nx, ny, nz] = v.dims
      const [w, h] = v.plan.network.size
      const toNative = fromNetworkGrid(v.plan, backgroundOutside(classes))
      const pred = new Uint8Array(nx * ny * nz)
      for (let k = 0; k < nz; k += batch) {
        const n = Math.min(batch, nz - k)
        const slices = v.image.subarray(k * w * h, (k + n) * w * h)
        const native = toNative(await network.probabilities(slices, [n, 1, h, w]))
        const plane = nx * ny
        for (let s = 0; s < n; s++)
          for (let i = 0; i < plane; i++) {
            let best = 0
            for (let c = 1; c < classes; c++)
              if (native[(s * classes + c) * plane + i] > native[(s * classes + best) * plane + i])
                best = c
            pred[(k + s) * plane + i] = best
          }
      }
      for (let c = 1; c < classes; c++) sums[c] += dice(pred, v.label, c)
    }
  } finally {
    network.release()
  }
  const perClass = Object.fromEntries(
    classNames.slice(1).map((name, i) => [name, sums[i + 1] / Math.max(volumes.length, 1)]),
  )
  const values = Object.values(perClass)
  return {
    valDice: values.reduce((a, b) => a + b, 0) / values.length,
    classes: perClass,
    volumes: volumes.length,
  }
}

/** What an epoch of a run costs on this machine, timed before its first step (budget.ts). */
export interface EpochCost {
  /** Seconds a training step takes: the mean of the timed steps. */
  readonly stepSeconds: number
  /** Seconds one validation of all the validation volumes takes (extrapolated by slices). */
  readonly validationSeconds: number
}

/**
 * Times `steps` training steps of a fresh run of the config, after `warmUp` untimed ones, from
 * its seeded initial weights on its first batches, and the validation of its first two
 * validation volumes, scaled to all by their slices, after an untimed one of the first; then
 * frees it all. The warm-ups matter: measured on ACDC at 128 px (2 workers), the first step
 * took 2.5x a later one and the next three 1.15-1.3x, and a first validation 1.4x a second
 * (sessions for new shapes, allocator, JIT): with one warm-up the probe overestimated an epoch
 * by 11% and the budget lost an epoch in ten.
 */
export const probeEpochCost = async (
  inputs: Pick<TrainInputs, 'config' | 'train' | 'val' | 'passes' | 'stopRequested'>,
  { warmUp = 4, steps = 5 } = {},
): Promise<E.Either<string, EpochCost>> => {
  const { config } = inputs
  const batches = wholeBatches(inputs.train.length, config.batch)
  if (E.isLeft(batches)) return batches
  const perEpoch = batches.right
  const masking = maskingOf(config)
  if (E.isLeft(masking)) return masking
  const spec = networkSpec(config)
  const passes = inputs.passes ?? inProcess(spec)
  const runStep = stepRunner(config, masking.right, inputs.train, passes, perEpoch * config.epochs)
  const order = epochOrder(config, inputs.train.length, 0)
  let state = initialState(spec, toParams(spec, initialWeights(spec, config.seed)))
  try {
    let started = 0
    for (let step = 0; step < warmUp + steps; step++) {
      if (inputs.stopRequested?.()) return E.left('stopped before the timing was done')
      if (step === warmUp) started = performance.now()
      const k = step % perEpoch
      const next =
        step + 1 < warmUp + steps ? batchAt(order, (k + 1) % perEpoch, config.batch) : undefined
      state = (await runStep(state, step, batchAt(order, k, config.batch), next)).state
    }
    const stepSeconds = (performance.now() - started) / 1000 / steps
    const timed = inputs.val.slice(0, 2)
    const slices = (vs: readonly ValidationVolume[]) => vs.reduce((n, v) => n + v.dims[2], 0)
    await validate(
      spec,
      state.params,
      timed.slice(0, 1),
      config.classes,
      config.batch,
      passes.inference,
    )
    const validationStarted = performance.now()
    await validate(spec, state.params, timed, config.classes, config.batch, passes.inference)
    const validationSeconds =
      timed.length === 0
        ? 0
        : ((performance.now() - validationStarted) / 1000) * (slices(inputs.val) / slices(timed))
    return E.right({ stepSeconds, validationSeconds })
  } finally {
    disposeState(state)
    if (!inputs.passes) await passes.close()
  }
}

/** The state with a weight average started, when the config keeps one. */
const withAverage = (config: TrainConfig, state: TrainState): TrainState =>
  config.ema === undefined ? state : { ...state, average: startAverage(state.params) }

/** The state after a step, its weight average (if any) moved towards the new weights. */
const averaged = (config: TrainConfig, before: TrainState, after: TrainState): TrainState =>
  config.ema === undefined || before.average === undefined
    ? after
    : {
        ...after,
        average: updateAverage(
          before.average,
          after.params,
          averageDecay(config.ema, after.adam.step),
        ),
      }

const sameConfig = (a: TrainConfig, b: TrainConfig): boolean =>
  JSON.stringify(TrainConfig.encode(a)) === JSON.stringify(TrainConfig.encode(b))

/** Lines of metrics.jsonl up to `step` (a crash may have logged steps the checkpoint lacks). */
const metricsUpTo = async (path: string, step: number): Promise<Record<string, number>[]> => {
  const text = await readFile(path, 'utf8').catch(() => '')
  return text
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, number>]
      } catch {
        return []
      }
    })
    .filter((r) => typeof r.step === 'number' && r.step <= step)
}

/** Epoch lines are those with a duration (step lines have none; valDice may be absent). */
const isEpochLine = (r: Readonly<Record<string, number>>): boolean => r.seconds !== undefined

const historyOf = (lines: readonly Record<string, number>[]): PlotHistory => ({
  steps: lines.filter((r) => !isEpochLine(r)).map((r) => ({ step: r.step, loss: r.loss })),
  epochs: lines.filter(isEpochLine).map((r) => ({
    epoch: r.epoch,
    step: r.step,
    loss: r.loss,
    ...(r.valDice === undefined ? {} : { valDice: r.valDice }),
  })),
})

const round = (x: number, digits = 6) => Number(x.toPrecision(digits))

/** A fresh run (weights from the seed, empty metrics) or the stopped one in `runDir`. */
const begin = async (
  inputs: TrainInputs,
  spec: UNetSpec,
  metricsPath: string,
): Promise<
  E.Either<string, { progress: Progress; state: TrainState; history: Record<string, number>[] }>
> => {
  const { config, runDir } = inputs
  if (!inputs.resume) {
    await writeFileAtomic(metricsPath, '')
    return E.right({
      progress: {
        config,
        origin: inputs.origin ?? { recipe: 'custom', pipeline: '', data: '' },
        epoch: 0,
        stepInEpoch: 0,
        step: 0,
        epochSums: emptySums(),
        windowSums: emptySums(),
        seconds: 0,
        best: null,
        validation: null,
      },
      state: withAverage(
        config,
        initialState(spec, toParams(spec, initialWeights(spec, config.seed))),
      ),
      history: [],
    })
  }
  const path = join(runDir, CHECKPOINTS.last)
  const c = await readCheckpoint(path, Progress)()
  if (E.isLeft(c)) return c
  if (!sameConfig(c.right.meta.config, config))
    return E.left(`${runDir} was trained with another config; resume it with its own config.json`)
  let state: TrainState
  try {
    state = restoreState(c.right)
  } catch (e) {
    return E.left(`checkpoint ${path} does not fit the network: ${(e as Error).message}`)
  }
  const history = await metricsUpTo(metricsPath, c.right.meta.step)
  await writeFileAtomic(metricsPath, history.map((r) => `${JSON.stringify(r)}\n`).join(''))
  return E.right({ progress: c.right.meta, state, history })
}

const outcome = (status: TrainOutcome['status'], p: Progress): TrainOutcome => ({
  status,
  epoch: p.epoch,
  step: p.step,
  best: p.best,
  validation: p.validation,
})

const rounded = (r: Readonly<Record<string, number>>) =>
  Object.fromEntries(Object.entries(r).map(([k, x]) => [k, round(x)]))

const describeDice = (line: EpochLine): string =>
  line.valDice === undefined || line.valClassDice === undefined
    ? ''
    : `, val Dice ${line.valDice.toFixed(3)} (` +
      Object.entries(line.valClassDice)
        .map(([k, x]) => `${k} ${x.toFixed(3)}`)
        .join(', ') +
      ')'

/** The epoch's line in the log; `left`: the seconds the remaining epochs should take. */
const describe = (line: EpochLine, epochs: number, improved: boolean, left: number): string =>
  `epoch ${line.epoch}/${epochs}: loss ${line.loss.toFixed(4)}${describeDice(line)}, ` +
  `${line.seconds.toFixed(1)}s${improved ? ', best so far' : ''}` +
  (line.epoch < epochs ? `; about ${formatSeconds(left)} left` : '')

/** Trains (or resumes) a run; see the module comment. Left: a one-line reason. */
export const train =
  (inputs: TrainInputs): TE.TaskEither<string, TrainOutcome> =>
  async () => {
    const { config, runDir } = inputs
    const spec = networkSpec(config)
    const batches = wholeBatches(inputs.train.length, config.batch)
    if (E.isLeft(batches)) return batches
    const perEpoch = batches.right
    const [width, height] = config.input.size
    const wrongSize = inputs.train.find((s) => s.image.length !== width * height)
    if (wrongSize)
      return E.left(`training slice ${wrongSize.case}:${wrongSize.slice} is not ${width}x${height}`)
    const totalSteps = perEpoch * config.epochs
    const masking = maskingOf(config)
    if (E.isLeft(masking)) return masking
    const metricsPath = join(runDir, METRICS_FILE)
    await mkdir(runDir, { recursive: true })

    const begun = await begin(inputs, spec, metricsPath)
    if (E.isLeft(begun)) return begun
    let { progress, state } = begun.right
    const { history } = begun.right
    const passes = inputs.passes ?? inProcess(spec)
    const runStep = stepRunner(config, masking.right, inputs.train, passes, totalSteps)
    const log = inputs.log ?? (() => {})
    const scored = inputs.val.length > 0
    if (!scored) log('no validation set: keeping the last epoch as best')
    // This command's epochs, validation and checkpoints included: what the time left is
    // estimated from.
    const epochTimes: number[] = []
    const record = async (line: Record<string, unknown>) => {
      history.push(line as Record<string, number>)
      await appendFile(metricsPath, `${JSON.stringify(line)}\n`)
    }
    const checkpoint = async (name: 'last' | 'best') =>
      writeCheckpoint(join(runDir, CHECKPOINTS[name]), {
        meta: progress,
        ...(await saveState(state)),
      })()
    try {
      for (let epoch = progress.epoch; epoch < config.epochs; epoch++) {
        const started = performance.now() / 1000 - progress.seconds
        const order = epochOrder(config, inputs.train.length, epoch)
        for (let k = progress.stepInEpoch; k < perEpoch; k++) {
          const step = progress.step
          const next = k + 1 < perEpoch ? batchAt(order, k + 1, config.batch) : undefined
          const result = await runStep(state, step, batchAt(order, k, config.batch), next)
          state = averaged(config, state, result.state)
          if (!Number.isFinite(result.loss))
            return E.left(
              `the loss became ${result.loss} at step ${step} (epoch ${epoch + 1}); lower the learning rate`,
            )
          progress = {
            ...progress,
            step: step + 1,
            stepInEpoch: k + 1,
            epochSums: addTo(progress.epochSums, result.loss, result.terms),
            windowSums: addTo(progress.windowSums, result.loss, result.terms),
          }
          if (progress.step % config.logEvery === 0) {
            const m = means(progress.windowSums)
            await record({
              step: progress.step,
              epoch: epoch + 1,
              lr: round(learningRate(config.optimizer, step, totalSteps)),
              loss: round(m.loss),
              ...rounded(m.terms),
            })
            progress = { ...progress, windowSums: emptySums() }
          }
          inputs.onStep?.(progress.step, epoch)
          if (inputs.stopRequested?.() && k + 1 < perEpoch) {
            progress = { ...progress, seconds: performance.now() / 1000 - started }
            const saved = await checkpoint('last')
            if (E.isLeft(saved)) return saved
            return E.right(outcome('stopped', progress))
          }
        }
        const v = scored
          ? await validate(
              spec,
              state.average ?? state.params,
              inputs.val,
              config.classes,
              config.batch,
              passes.inference,
            )
          : undefined
        const seconds = performance.now() / 1000 - started
        const m = means(progress.epochSums)
        const line: EpochLine = {
          epoch: epoch + 1,
          step: progress.step,
          lr: round(learningRate(config.optimizer, progress.step - 1, totalSteps)),
          loss: round(m.loss),
          terms: rounded(m.terms),
          ...(v ? { valDice: round(v.valDice), valClassDice: rounded(v.classes) } : {}),
          seconds: round(seconds, 4),
          secondsPerStep: round(seconds / perEpoch, 4),
        }
        const { terms: epochTerms, ...rest } = line
        await record({ ...rest, ...epochTerms })
        await writeFileAtomic(join(runDir, PLOT_FILE), trainingPlot(historyOf(history)))
        const improved =
          v !== undefined && (progress.best === null || v.valDice > progress.best.valDice)
        progress = {
          ...progress,
          epoch: epoch + 1,
          stepInEpoch: 0,
          epochSums: emptySums(),
          seconds: 0,
          validation: v ? { epoch: epoch + 1, ...v } : null,
          best: improved ? { epoch: epoch + 1, valDice: v.valDice } : progress.best,
        }
        if (improved || !scored) {
          const saved = await checkpoint('best')
          if (E.isLeft(saved)) return saved
        }
        const saved = await checkpoint('last')
        if (E.isLeft(saved)) return saved
        epochTimes.push(performance.now() / 1000 - started)
        const meanEpoch = epochTimes.reduce((a, b) => a + b, 0) / epochTimes.length
        log(describe(line, config.epochs, improved, meanEpoch * (config.epochs - line.epoch)))
        inputs.onEpoch?.(line)
        if (epoch + 1 < config.epochs) {
          if (inputs.stopRequested?.()) return E.right(outcome('stopped', progress))
          const slowest = Math.max(...epochTimes)
          if (inputs.deadline !== undefined && performance.now() / 1000 + slowest > inputs.deadline)
            return E.right(outcome('out of time', progress))
        }
      }
      return E.right(outcome('finished', progress))
    } finally {
      disposeState(state)
      if (!inputs.passes) await passes.close()
    }
  }
