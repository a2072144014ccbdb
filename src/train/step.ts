/**
 * One MaCo optimisation step: forward the original and the masked images, the loss, the
 * backward of both passes, the batch-norm moving averages (by default updated once per
 * forward, original first, as calling a PyTorch module twice does) and Adam.
 * `computeGradients` is the step without the optimizer, for a trainer that brings its own.
 *
 * Where the passes run is a `Passes` runner: `inProcess` runs them one after the other
 * on this thread's engine; `parallel.ts` runs them at once on worker threads. The loss is
 * either any closure `(logits, maskedLogits, batch) => scalar`, run here on the logits the
 * runner hands back and differentiated by tfjs (a `tf.customGrad` loss such as `macoLoss`
 * brings its own gradients), or the MaCo loss as data (`MacoStepLoss`): its branches then
 * run where the passes ran when the runner can (`Passes.withLoss`: each worker its own, with
 * no stop on this thread between forward and backward), else here.
 *
 * @example
 * let state = initialState(spec, toParams(spec, initialWeights(spec, 42)))
 * const passes = inProcess(spec)
 * const r = await trainStep(passes, state, { image, masked, scribbles }, loss, { seed: 42, step: 0 })
 * state = r.state // r.loss: number
 * const maco = { kind: 'maco', config: DEFAULT_LOSS, targets: (b) => b.targets } // or as data
 */
import * as tf from '@tensorflow/tfjs-core'
import {
  branchLosses,
  mapTerms,
  readsOnlyAsync,
  totalLoss,
  type LossConfig,
  type LossTargets,
  type LossTerm,
} from '../maco/losses.ts'
import {
  forwardTrain,
  predictLogits,
  updateMovingStats,
  type BatchStats,
  type Params,
} from '../model/tfjs-unet.ts'
import { parameterShapes, type UNetSpec } from '../model/unet.ts'
import { seeded } from '../util/rng.ts'

export interface AdamOptions {
  readonly learningRate: number
  readonly beta1: number
  readonly beta2: number
  readonly epsilon: number
}

/** PyTorch's Adam defaults with the paper's learning rate. */
export const DEFAULT_ADAM: AdamOptions = {
  learningRate: 1e-4,
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
}

export interface TrainState {
  readonly params: Params
  /** Adam's step count and first and second moments per trainable weight. */
  readonly adam: { readonly step: number; readonly m: Params; readonly v: Params }
  /** The moving average of the weights, when the run keeps one (average.ts). */
  readonly average?: Params
}

export interface StepBatch {
  readonly image: tf.Tensor4D
  /** The masked images; without them (no MCM) only the original is forwarded. */
  readonly masked?: tf.Tensor4D
}

/** A loss of the logits as tfjs differentiates it. */
export type ClosureLoss<B extends StepBatch> = (
  logits: tf.Tensor4D,
  maskedLogits: tf.Tensor4D | undefined,
  batch: B,
) => tf.Scalar

export type LossTerms = Partial<Record<LossTerm, number>>

/**
 * The MaCo loss as data: its config and a batch's targets on the host, so that each pass's
 * branch of it (losses.ts, `originalBranchLoss` and `maskedBranchLoss`) can run wherever
 * that pass ran.
 */
export interface MacoStepLoss<B extends StepBatch> {
  readonly kind: 'maco'
  readonly config: LossConfig
  readonly targets: (batch: B) => LossTargets
  /** Each weighted term of the step, for the log. */
  readonly onTerms?: (terms: LossTerms) => void
}

export type StepLoss<B extends StepBatch> = ClosureLoss<B> | MacoStepLoss<B>

/** One training forward pass, wherever it ran; its logits live on this thread's engine. */
export interface Pass {
  readonly logits: tf.Tensor4D
  readonly stats: BatchStats
  /** Gradients of the trainable weights; frees the pass (stats included). */
  readonly backward: (dLogits: tf.Tensor4D) => Promise<Record<string, tf.Tensor>>
}

/**
 * The network of some weights in inference mode (moving statistics, no dropout): class
 * probabilities, NCHW, of a batch of slices given NCHW; `release` frees it.
 */
export interface Inference {
  readonly probabilities: (
    slices: Float32Array,
    dims: readonly [number, number, number, number],
  ) => Promise<Float32Array>
  readonly release: () => void
}

/** Runs training forward passes of the same weights, one per image batch. */
export interface Passes {
  readonly forward: (
    params: Params,
    images: readonly tf.Tensor4D[],
    dropoutSeeds: readonly (readonly (string | number)[])[],
  ) => Promise<Pass[]>
  /**
   * The whole of a step's passes with the MaCo loss evaluated where they run: the batch
   * statistics (the caller's to free), the weighted terms and each pass's gradients.
   * Absent: `forward` and the loss on this thread.
   */
  readonly withLoss?: (
    params: Params,
    images: readonly tf.Tensor4D[],
    dropoutSeeds: readonly (readonly (string | number)[])[],
    loss: { readonly config: LossConfig; readonly targets: LossTargets },
  ) => Promise<{
    readonly stats: readonly BatchStats[]
    readonly terms: LossTerms
    readonly grads: readonly Record<string, tf.Tensor>[]
  }>
  /** How validation runs the network on this engine; absent: tfjs on this thread. */
  readonly inference?: (params: Params) => Promise<Inference>
  readonly close: () => Promise<void>
}

/** The network on this thread's tfjs engine (what validation uses when passes bring none). */
export const tfjsInference =
  (spec: UNetSpec) =>
  async (params: Params): Promise<Inference> => ({
    probabilities: async (slices, [n, c, h, w]) => {
      const probabilities = tf.tidy(() =>
        tf.transpose(
          tf.softmax(
            predictLogits(
              spec,
              params,
              tf.transpose(tf.tensor4d(slices, [n, c, h, w]), [0, 2, 3, 1]) as tf.Tensor4D,
            ),
          ),
          [0, 3, 1, 2],
        ),
      )
      const values = (await probabilities.data()) as Float32Array
      probabilities.dispose()
      return values
    },
    release: () => {},
  })

/** Passes on this thread's engine, one after the other. */
export const inProcess = (spec: UNetSpec): Passes => ({
  forward: async (params, images, seeds) =>
    images.map((image, i) => {
      const pass = forwardTrain(
        spec,
        params,
        image,
        seeded(...(seeds[i] as [string | number, ...(string | number)[]])),
      )
      return { logits: pass.logits, stats: pass.stats, backward: async (d) => pass.backward(d) }
    }),
  close: async () => {},
})

const trainableNames = (params: Params, spec: UNetSpec) =>
  parameterShapes(spec)
    .filter((p) => p.trainable)
    .map((p) => p.name)
    .filter((n) => n in params)

export const initialState = (spec: UNetSpec, params: Params): TrainState => {
  const zeros = () =>
    Object.fromEntries(trainableNames(params, spec).map((n) => [n, tf.zerosLike(params[n])]))
  return { params, adam: { step: 0, m: zeros(), v: zeros() } }
}

export const disposeState = (s: TrainState): void =>
  tf.dispose([
    ...Object.values(s.params),
    ...Object.values(s.adam.m),
    ...Object.values(s.adam.v),
    ...Object.values(s.average ?? {}),
  ])

/**
 * Adam with PyTorch's bias correction; returns the new state and frees the old tensors (a
 * weight average is the caller's: it is neither kept nor freed).
 */
export const adamUpdate = (
  state: TrainState,
  grads: Record<string, tf.Tensor>,
  o: AdamOptions = DEFAULT_ADAM,
): TrainState => {
  const step = state.adam.step + 1
  const params: Record<string, tf.Tensor> = { ...state.params }
  const m: Record<string, tf.Tensor> = {}
  const v: Record<string, tf.Tensor> = {}
  const stepSize = o.learningRate / (1 - o.beta1 ** step)
  const secondCorrection = 1 - o.beta2 ** step
  for (const [name, g] of Object.entries(grads)) {
    const [p, m1, v1] = tf.tidy(() => {
      const mNew = tf.add(tf.mul(state.adam.m[name], o.beta1), tf.mul(g, 1 - o.beta1))
      const vNew = tf.add(tf.mul(state.adam.v[name], o.beta2), tf.mul(tf.square(g), 1 - o.beta2))
      const denominator = tf.add(tf.sqrt(tf.div(vNew, secondCorrection)), o.epsilon)
      return [tf.sub(state.params[name], tf.mul(tf.div(mNew, denominator), stepSize)), mNew, vNew]
    })
    tf.dispose([state.params[name], state.adam.m[name], state.adam.v[name]])
    params[name] = p
    m[name] = m1
    v[name] = v1
  }
  return { params, adam: { step, m: { ...state.adam.m, ...m }, v: { ...state.adam.v, ...v } } }
}

/**
 * Which passes update the batch-norm moving averages: 'every-pass' is what calling a
 * PyTorch module twice in training mode does (the original pass, then the masked one);
 * 'original' ignores the masked images' statistics.
 */
export type MovingStatsFrom = 'every-pass' | 'original'

export interface Gradients {
  /** The params with the moving statistics updated (the old moving-statistics tensors freed). */
  readonly params: Params
  /** dL/dweight per trainable weight, both passes summed; the caller owns them. */
  readonly grads: Record<string, tf.Tensor>
  readonly loss: number
}

/**
 * Forwards, loss, backwards and moving averages; no optimizer (see `trainStep`). Dropout
 * masks come from `seeded(seed, 'dropout', step, 'original' | 'masked')`, so a run is
 * reproducible whichever runner executes it. The batch tensors stay the caller's.
 */
export const computeGradients = async <B extends StepBatch>(
  passes: Passes,
  params: Params,
  batch: B,
  loss: StepLoss<B>,
  at: { readonly seed: number | string; readonly step: number },
  movingStats: MovingStatsFrom = 'every-pass',
): Promise<Gradients> => {
  const images = batch.masked ? [batch.image, batch.masked] : [batch.image]
  const names = ['original', 'masked'].slice(0, images.length)
  const seeds = names.map((n) => [at.seed, 'dropout', at.step, n])
  let next = params
  // Before the backwards, which free the passes' statistics.
  const moveAverages = (stats: readonly BatchStats[]) => {
    for (const s of movingStats === 'every-pass' ? stats : stats.slice(0, 1))
      next = updateMovingStats(next, s)
  }
  const passed =
    typeof loss === 'function'
      ? await closurePasses(passes, params, images, seeds, batch, loss, moveAverages)
      : await macoPasses(passes, params, images, seeds, loss, loss.targets(batch), moveAverages)
  const perPass = passed.grads
  if (perPass.length === 1) return { params: next, grads: perPass[0], loss: passed.loss }
  const grads = Object.fromEntries(
    Object.keys(perPass[0]).map((n) => [n, tf.add(perPass[0][n], perPass[1][n])]),
  )
  tf.dispose(perPass.flatMap((g) => Object.values(g)))
  return { params: next, grads, loss: passed.loss }
}

/** What the passes of a step and its loss gave, before the moving averages and the sum. */
interface Passed {
  readonly grads: readonly Record<string, tf.Tensor>[]
  readonly loss: number
}

/** The passes on the runner, a closure loss on this thread, differentiated by tfjs. */
const closurePasses = async <B extends StepBatch>(
  passes: Passes,
  params: Params,
  images: readonly tf.Tensor4D[],
  seeds: readonly (readonly (string | number)[])[],
  batch: B,
  loss: ClosureLoss<B>,
  onStats: (stats: readonly BatchStats[]) => void,
): Promise<Passed> => {
  const runs = await passes.forward(params, images, seeds)
  onStats(runs.map((r) => r.stats))
  // The loss reads its inputs synchronously: bring them to the host first where that waits
  // (the logits and the batch's targets; the images, already on the GPU, it never reads).
  if (readsOnlyAsync()) {
    const { image: _image, masked: _masked, ...targets } = batch
    await Promise.all(
      [...runs.map((r) => r.logits), ...Object.values(targets)]
        .filter((v): v is tf.Tensor => v instanceof tf.Tensor)
        .map((t) => t.data()),
    )
  }
  const { value, grads: dLogits } = tf.valueAndGrads(
    (logits: tf.Tensor, maskedLogits?: tf.Tensor) =>
      loss(logits as tf.Tensor4D, maskedLogits as tf.Tensor4D | undefined, batch),
  )(runs.map((r) => r.logits))
  tf.dispose(runs.map((r) => r.logits))
  const lossValue = (await value.data())[0]
  value.dispose()
  const grads = await Promise.all(runs.map((r, i) => r.backward(dLogits[i] as tf.Tensor4D)))
  tf.dispose(dLogits)
  return { grads, loss: lossValue }
}

/**
 * The MaCo loss's branches where the runner runs them (`withLoss`), else here between its
 * forwards and backwards. The total and terms are rounded to float32, as a tfjs scalar of the
 * same sum would be.
 */
const macoPasses = async (
  passes: Passes,
  params: Params,
  images: readonly tf.Tensor4D[],
  seeds: readonly (readonly (string | number)[])[],
  loss: Pick<MacoStepLoss<StepBatch>, 'config' | 'onTerms'>,
  targets: LossTargets,
  onStats: (stats: readonly BatchStats[]) => void,
): Promise<Passed> => {
  const { config } = loss
  const reported = (terms: LossTerms) => {
    loss.onTerms?.(mapTerms(terms, Math.fround))
    return { loss: Math.fround(totalLoss(terms)) }
  }
  if (config.mcm !== images.length > 1)
    throw new TypeError(
      config.mcm ? 'the mcm loss term needs the masked images' : 'masked images without mcm',
    )
  if (passes.withLoss) {
    const r = await passes.withLoss(params, images, seeds, { config, targets })
    onStats(r.stats)
    tf.dispose(r.stats.flatMap((s) => Object.values(s).flatMap((b) => [b.mean, b.variance])))
    return { grads: r.grads, ...reported(r.terms) }
  }
  const runs = await passes.forward(params, images, seeds)
  onStats(runs.map((r) => r.stats))
  const shape = runs[0].logits.shape
  const logits = await Promise.all(runs.map(async (r) => (await r.logits.data()) as Float32Array))
  tf.dispose(runs.map((r) => r.logits))
  const branches = branchLosses(config, targets, logits, shape)
  const grads = await Promise.all(
    runs.map((r, i) => {
      const d = tf.tensor4d(branches[i].dLogits, shape)
      return r.backward(d).finally(() => d.dispose())
    }),
  )
  return { grads, ...reported(Object.assign({}, ...branches.map((b) => b.terms))) }
}

export interface StepResult {
  readonly state: TrainState
  readonly loss: number
}

/** One step: `computeGradients`, then Adam. The old state's tensors are freed. */
export const trainStep = async <B extends StepBatch>(
  passes: Passes,
  state: TrainState,
  batch: B,
  loss: StepLoss<B>,
  at: { readonly seed: number | string; readonly step: number },
  adam: AdamOptions = DEFAULT_ADAM,
  movingStats: MovingStatsFrom = 'every-pass',
): Promise<StepResult> => {
  const g = await computeGradients(passes, state.params, batch, loss, at, movingStats)
  const next = adamUpdate({ params: g.params, adam: state.adam }, g.grads, adam)
  tf.dispose(Object.values(g.grads))
  return { state: next, loss: g.loss }
}
