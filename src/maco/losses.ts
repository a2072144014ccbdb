/**
 * The MaCo training loss as a sum of named, switchable terms, in tfjs (NHWC):
 *   L = pCE(P_o, S) + beta pCE(P_m, S) + l1 L_mcm + l2 L_e + l3 L_cpl
 * Turning a flag off drops its term, so the paper's ablations are one flag each: pCE only
 * (`mcm`, `gc`, `cpl` off), + MCM, + CPL, full MaCo. The masked branch (beta pCE(P_m, S)
 * and L_mcm) exists only with `mcm` on: without it the masked image is never fed.
 *
 * Conventions: pCE is the mean over the labelled pixels of the whole batch (0 when there
 * are none). L_mcm and L_e are 1 minus the mean over all pixels of the batch of the cosine
 * over the class axis, the reference side (P_o, resp. P_e) detached. L_cpl counts N_c over
 * the whole batch and leaves out classes with N_c = 0 (0 when all are).
 *
 * Gradients are analytic, not autograd: the UNet's backward is hand-written and needs
 * dL/dlogits for each branch, and tfjs-core's Node build registers no gradient functions
 * (they live in `register_all_gradients`, which Node cannot load). Each term returns its
 * value and its gradient; the detached sides simply get none. The terms are plain loops
 * over the pixels' class vectors (float64), not tensor ops: a handful of values per pixel
 * is too little work for a kernel's fixed cost, and on wasm the ~170 small kernels of the
 * tensor version took 8 times as long at 128 px (bench/step-parts.ts). `macoLoss` wraps the
 * whole thing in `tf.customGrad` for code that does use `tf.grad`.
 *
 * The terms split by pass: pCE, L_e and L_cpl differentiate only the original pass, beta pCE
 * and L_mcm only the masked one, which reads the original's probabilities (detached). So
 * `originalBranchLoss` and `maskedBranchLoss` take host arrays and give each pass its own
 * dL/dlogits: what a worker thread that ran the pass evaluates (train/parallel.ts), and what
 * `lossWithGradients` is made of.
 *
 * @example
 * const config = pipe(decodeLossConfig({ cpl: false }), E.getOrElseW(fail))
 * const { total, terms, gradients } = lossWithGradients(config, { logits, maskedLogits, scribbles, gc, unlabelled: 4 })
 * original.backward(gradients.logits); masked.backward(gradients.maskedLogits!)
 * // terms: { pce, pceMasked, mcm, gc }, each already weighted; total is their sum
 * cosineDistance(po, pm, 4) // po, pm pixel-major ArrayLikes: { value: number, grad: Float64Array }
 * const o = originalBranchLoss(config, targets, logits, probabilitiesOf(logits, shape), 4) // { terms, dLogits }
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import { enhancedPrediction } from './gc-region.ts'

const lossProps = {
  /** pCE on the original image's prediction (and, with `mcm`, beta x pCE on the masked one). */
  pce: t.boolean,
  /** Masked context modelling: the masked forward pass and L_mcm. */
  mcm: t.boolean,
  /** L_e: agreement with the GC-enhanced prediction P_e. */
  gc: t.boolean,
  /** L_cpl: continuous pseudo labels. */
  cpl: t.boolean,
  beta: t.number,
  lambdaMcm: t.number,
  lambdaGc: t.number,
  lambdaCpl: t.number,
}
export const LossConfig = t.type(lossProps)
export type LossConfig = t.TypeOf<typeof LossConfig>

export const DEFAULT_LOSS: LossConfig = {
  pce: true,
  mcm: true,
  gc: true,
  cpl: true,
  beta: 0.5,
  lambdaMcm: 0.1,
  lambdaGc: 0.1,
  lambdaCpl: 0.1,
}

/** A loss config from JSON: any subset of the fields over the defaults; Left names what is wrong. */
export const decodeLossConfig = (input: unknown): E.Either<string, LossConfig> => {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    return E.left('loss config must be an object')
  const unknown = Object.keys(input).find((k) => !Object.hasOwn(lossProps, k))
  if (unknown !== undefined)
    return E.left(`unknown loss option "${unknown}" (known: ${Object.keys(lossProps).join(', ')})`)
  return pipe(
    t.partial(lossProps).decode(input),
    E.mapLeft((errors) => {
      const key = errors[0].context[1]?.key ?? '?'
      return `loss option ${key} must be a ${lossProps[key as keyof typeof lossProps]?.name ?? 'value'}, got ${JSON.stringify(errors[0].value)}`
    }),
    E.map((partial) => ({ ...DEFAULT_LOSS, ...partial })),
    E.filterOrElse(
      (c) =>
        [c.beta, c.lambdaMcm, c.lambdaGc, c.lambdaCpl].every((w) => Number.isFinite(w) && w >= 0),
      () => 'loss weights beta, lambdaMcm, lambdaGc, lambdaCpl must be finite and non-negative',
    ),
  )
}

/**
 * Class vectors of a batch as NHWC lays them out: pixel i's value for class c at
 * `[i * classes + c]` (what `dataSync()` of a [B, H, W, C] tensor gives).
 */
export type ClassMaps = ArrayLike<number>

/**
 * A loss term's value and its gradient with respect to its differentiable input. A term
 * function adds `weight` times its gradient into the `into` it is given (a fresh zero
 * array by default), so that the terms of a branch share one array.
 */
export interface Term {
  readonly value: number
  readonly grad: Float64Array
}

/**
 * Mean cross-entropy over the pixels whose scribble is not `unlabelled`; 0 when there are
 * none. `grad` is with respect to the logits: (softmax - one-hot) / n on labelled pixels.
 * The log-probability is taken from the logits (log-sum-exp), finite however saturated.
 */
export const partialCrossEntropy = (
  logits: ClassMaps,
  scribbles: ArrayLike<number>,
  unlabelled: number,
  classes: number,
  weight = 1,
  grad: Float64Array = new Float64Array(logits.length),
): Term => {
  let count = 0
  for (let i = 0; i < scribbles.length; i++) if ((scribbles[i] | 0) !== unlabelled) count++
  const n = Math.max(count, 1)
  let sum = 0
  for (let i = 0; i < scribbles.length; i++) {
    const label = scribbles[i] | 0
    if (label === unlabelled) continue
    const at = i * classes
    let max = -Infinity
    for (let c = 0; c < classes; c++) if (logits[at + c] > max) max = logits[at + c]
    let total = 0
    for (let c = 0; c < classes; c++) total += Math.exp(logits[at + c] - max)
    const logTotal = Math.log(total)
    for (let c = 0; c < classes; c++) {
      const logProb = logits[at + c] - max - logTotal
      if (c === label) sum -= logProb
      grad[at + c] += (weight * (Math.exp(logProb) - (c === label ? 1 : 0))) / n
    }
  }
  return { value: sum / n, grad }
}

const COSINE_EPS = 1e-8

/**
 * 1 - mean over pixels of cos(reference(i), prediction(i)) over the class axis, the
 * cosine's denominator clamped at 1e-8. `grad` is with respect to `prediction` only:
 * the reference is detached.
 */
export const cosineDistance = (
  reference: ClassMaps,
  prediction: ClassMaps,
  classes: number,
  weight = 1,
  grad: Float64Array = new Float64Array(prediction.length),
): Term => {
  const pixels = prediction.length / classes
  let sum = 0
  for (let at = 0; at < prediction.length; at += classes) {
    let dot = 0
    let refNorm2 = 0
    let predNorm2 = 0
    for (let c = 0; c < classes; c++) {
      const a = reference[at + c]
      const b = prediction[at + c]
      dot += a * b
      refNorm2 += a * a
      predNorm2 += b * b
    }
    const norms = refNorm2 * predNorm2
    const inverse = 1 / Math.sqrt(Math.max(norms, COSINE_EPS * COSINE_EPS))
    sum += dot * inverse
    // d cos / d b = a r - (a . b) |a|^2 r^3 b with r = (|a|^2 |b|^2)^(-1/2); the second
    // part vanishes where the clamp holds r constant.
    const radial =
      norms > COSINE_EPS * COSINE_EPS ? dot * refNorm2 * inverse * inverse * inverse : 0
    for (let c = 0; c < classes; c++)
      grad[at + c] -=
        (weight * (reference[at + c] * inverse - radial * prediction[at + c])) / pixels
  }
  return { value: 1 - sum / pixels, grad }
}

/**
 * L_cpl = (1/C') sum_c (1/N_c) sum_{i: Y_c(i) > 0} (P(i, c) - Y_c(i))^2 over the classes with
 * N_c > 0 (N_c counted over the batch); 0 when no class has any. `grad` is with respect to P.
 */
export const cplLoss = (
  probabilities: ClassMaps,
  cpl: ClassMaps,
  classes: number,
  weight = 1,
  grad: Float64Array = new Float64Array(cpl.length),
): Term => {
  const counts = new Float64Array(classes)
  for (let at = 0; at < cpl.length; at += classes)
    for (let c = 0; c < classes; c++) if (cpl[at + c] > 0) counts[c]++
  const present = counts.reduce((n, count) => n + (count > 0 ? 1 : 0), 0)
  // Per class: 1 / (N_c C') where the class is present, else 0.
  const classWeight = counts.map((count) => (count > 0 ? 1 / (count * present) : 0))
  let value = 0
  for (let at = 0; at < cpl.length; at += classes)
    for (let c = 0; c < classes; c++) {
      if (!(cpl[at + c] > 0)) continue
      const residual = probabilities[at + c] - cpl[at + c]
      value += residual * residual * classWeight[c]
      grad[at + c] += 2 * weight * residual * classWeight[c]
    }
  return { value, grad }
}

/** dL/dlogits from dL/dP for P = softmax(logits): P (g - sum_c g_c P_c), added into `out`. */
export const softmaxBackward = (
  probabilities: ClassMaps,
  grad: ClassMaps,
  classes: number,
  out: Float64Array = new Float64Array(grad.length),
): Float64Array => {
  for (let at = 0; at < grad.length; at += classes) {
    let dot = 0
    for (let c = 0; c < classes; c++) dot += grad[at + c] * probabilities[at + c]
    for (let c = 0; c < classes; c++) out[at + c] += probabilities[at + c] * (grad[at + c] - dot)
  }
  return out
}

export interface LossInputs {
  /** Network output for the original images, [B, H, W, C] logits. */
  readonly logits: tf.Tensor4D
  /** Network output for the masked images; needed with `mcm`. */
  readonly maskedLogits?: tf.Tensor4D
  /** Scribble labels [B, H, W]; `unlabelled` marks pixels without one. */
  readonly scribbles: tf.Tensor3D
  readonly unlabelled: number
  /** Continuous pseudo labels [B, H, W, C]; needed with `cpl`. */
  readonly cpl?: tf.Tensor4D
  /** GC region [B, H, W], 0/1; needed with `gc`. */
  readonly gc?: tf.Tensor3D
}

export type LossTerm = 'pce' | 'pceMasked' | 'mcm' | 'gc' | 'cpl'

export interface LossWithGradients {
  readonly total: tf.Scalar
  /** Each enabled term, already weighted: `total` is their sum. */
  readonly terms: Partial<Record<LossTerm, tf.Scalar>>
  /** dL/dlogits, and dL/dmaskedLogits with `mcm`. */
  readonly gradients: { readonly logits: tf.Tensor4D; readonly maskedLogits?: tf.Tensor4D }
}

const required = <T>(value: T | undefined, flag: string, input: string): T => {
  if (value === undefined) throw new TypeError(`the ${flag} loss term needs ${input}`)
  return value
}

/**
 * Whether the active backend's tensors can be read synchronously only once `data()` has
 * brought them to the host (WebGPU's, in Node: its synchronous read needs a canvas).
 */
export const readsOnlyAsync = (): boolean => tf.getBackend() === 'webgpu'

/** Softmax over the class axis of pixel-major `logits`, a loop (max-shifted, float64). */
export const softmax = (logits: ArrayLike<number>, classes: number): Float32Array => {
  const p = new Float32Array(logits.length)
  const e = new Float64Array(classes)
  for (let i = 0; i < logits.length; i += classes) {
    let max = -Infinity
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[i + c])
    let sum = 0
    for (let c = 0; c < classes; c++) sum += e[c] = Math.exp(logits[i + c] - max)
    for (let c = 0; c < classes; c++) p[i + c] = e[c] / sum
  }
  return p
}

/** The backend's softmax, read back: wasm's vectorised exp is twice as fast as `softmax`. */
const backendSoftmax = (z: tf.Tensor4D): ArrayLike<number> => {
  const probabilities = tf.softmax(z)
  const read = probabilities.dataSync()
  probabilities.dispose()
  return read
}

/**
 * The class probabilities of NHWC logits on the host, as every branch of the loss takes them:
 * the backend's softmax where it reads synchronously, else `softmax`. The same on any thread
 * of the same engine, so a worker's branch gives the main thread's bits.
 */
export const probabilitiesOf = (
  logits: Float32Array,
  shape: readonly [number, number, number, number],
): ArrayLike<number> => {
  if (readsOnlyAsync()) return softmax(logits, shape[3])
  const z = tf.tensor4d(logits, [...shape])
  try {
    return backendSoftmax(z)
  } finally {
    z.dispose()
  }
}

/** What the loss reads of a batch besides the logits, on the host, pixel-major like them. */
export interface LossTargets {
  /** Scribble labels [B, H, W]; `unlabelled` marks pixels without one. */
  readonly scribbles: ArrayLike<number>
  readonly unlabelled: number
  /** Continuous pseudo labels [B, H, W, C]; needed with `cpl`. */
  readonly cpl?: ArrayLike<number>
  /** GC region [B, H, W], 0/1; needed with `gc`. */
  readonly gc?: ArrayLike<number>
}

/** One pass's part of the loss: its weighted terms and dL/dlogits of that pass. */
export interface BranchLoss {
  readonly terms: Partial<Record<LossTerm, number>>
  readonly dLogits: Float32Array
}

/** A branch's logits and probabilities, and the gradients its terms add up. */
const branchOf = (logits: ArrayLike<number>, probabilities: ArrayLike<number>) => ({
  logits,
  probabilities,
  dLogits: new Float64Array(logits.length),
  dProbabilities: undefined as Float64Array | undefined,
})
type Branch = ReturnType<typeof branchOf>

const viaSoftmax = (b: Branch) => (b.dProbabilities ??= new Float64Array(b.logits.length))

const gradientOf = (b: Branch, classes: number): Float32Array => {
  if (b.dProbabilities !== undefined)
    softmaxBackward(b.probabilities, b.dProbabilities, classes, b.dLogits)
  return Float32Array.from(b.dLogits)
}

/**
 * The terms of the original images' pass: pCE, L_e and L_cpl (each with its flag), and their
 * gradient with respect to that pass's logits. Nothing here needs the masked pass.
 */
export const originalBranchLoss = (
  config: LossConfig,
  targets: LossTargets,
  logits: ArrayLike<number>,
  probabilities: ArrayLike<number>,
  classes: number,
): BranchLoss => {
  const b = branchOf(logits, probabilities)
  const terms: Partial<Record<LossTerm, number>> = {}
  if (config.pce)
    terms.pce = partialCrossEntropy(
      logits,
      targets.scribbles,
      targets.unlabelled,
      classes,
      1,
      b.dLogits,
    ).value
  if (config.gc) {
    const gc = required(targets.gc, 'gc', 'gc')
    const enhanced = enhancedPrediction(probabilities, gc, classes)
    const w = config.lambdaGc
    terms.gc = w * cosineDistance(enhanced, probabilities, classes, w, viaSoftmax(b)).value
  }
  if (config.cpl) {
    const w = config.lambdaCpl
    const cpl = required(targets.cpl, 'cpl', 'cpl')
    terms.cpl = w * cplLoss(probabilities, cpl, classes, w, viaSoftmax(b)).value
  }
  return { terms, dLogits: gradientOf(b, classes) }
}

/**
 * The terms of the masked images' pass (MCM): beta pCE and L_mcm against the original pass's
 * probabilities `reference` (detached), and their gradient with respect to the masked logits.
 */
export const maskedBranchLoss = (
  config: LossConfig,
  targets: LossTargets,
  logits: ArrayLike<number>,
  probabilities: ArrayLike<number>,
  reference: ArrayLike<number>,
  classes: number,
): BranchLoss => {
  const b = branchOf(logits, probabilities)
  const terms: Partial<Record<LossTerm, number>> = {}
  if (config.pce) {
    const w = config.beta
    terms.pceMasked =
      w *
      partialCrossEntropy(logits, targets.scribbles, targets.unlabelled, classes, w, b.dLogits)
        .value
  }
  const w = config.lambdaMcm
  terms.mcm = w * cosineDistance(reference, probabilities, classes, w, viaSoftmax(b)).value
  return { terms, dLogits: gradientOf(b, classes) }
}

/**
 * Both branches on this thread: the original pass's logits first, the masked pass's (with
 * `mcm`) second, NHWC of `shape`; each pass's `BranchLoss`, in that order.
 */
export const branchLosses = (
  config: LossConfig,
  targets: LossTargets,
  logits: readonly Float32Array[],
  shape: readonly [number, number, number, number],
): BranchLoss[] => {
  const classes = shape[3]
  const [original, ...masked] = logits
  const reference = probabilitiesOf(original, shape)
  return [
    originalBranchLoss(config, targets, original, reference, classes),
    ...masked.map((z) =>
      maskedBranchLoss(config, targets, z, probabilitiesOf(z, shape), reference, classes),
    ),
  ]
}

/** The terms in the order the total adds them. */
export const LOSS_TERMS: readonly LossTerm[] = ['pce', 'pceMasked', 'mcm', 'gc', 'cpl']

/** The total of weighted terms, added in one fixed order whichever branch gave which. */
export const totalLoss = (terms: Partial<Record<LossTerm, number>>): number =>
  LOSS_TERMS.reduce((sum, k) => sum + (terms[k] ?? 0), 0)

/** The terms given, each through `f`, in `LOSS_TERMS` order (the order the log shows them). */
export const mapTerms = <T>(
  terms: Partial<Record<LossTerm, number>>,
  f: (value: number) => T,
): Partial<Record<LossTerm, T>> =>
  Object.fromEntries(LOSS_TERMS.filter((k) => k in terms).map((k) => [k, f(terms[k] as number)]))

/**
 * The MaCo loss of one batch, its weighted parts and its gradients (see the module comment):
 * the tensors read once, then each branch's terms as loops over the pixels in float64.
 */
export const lossWithGradients = (config: LossConfig, inputs: LossInputs): LossWithGradients => {
  const { logits } = inputs
  const maskedLogits = config.mcm ? required(inputs.maskedLogits, 'mcm', 'maskedLogits') : undefined
  const shape = logits.shape
  const targets: LossTargets = {
    scribbles: inputs.scribbles.dataSync(),
    unlabelled: inputs.unlabelled,
    cpl: config.cpl ? required(inputs.cpl, 'cpl', 'cpl').dataSync() : undefined,
    gc: config.gc ? required(inputs.gc, 'gc', 'gc').dataSync() : undefined,
  }
  const branches = branchLosses(
    config,
    targets,
    [logits, ...(maskedLogits ? [maskedLogits] : [])].map((z) => z.dataSync() as Float32Array),
    shape,
  )
  const terms = Object.assign({}, ...branches.map((b) => b.terms))
  const [original, masked] = branches.map((b) => tf.tensor4d(b.dLogits, shape))
  return {
    total: tf.scalar(totalLoss(terms)),
    terms: mapTerms(terms, (v) => tf.scalar(v)),
    gradients: { logits: original, ...(masked === undefined ? {} : { maskedLogits: masked }) },
  }
}

/**
 * The total loss as one differentiable op for `tf.grad`/`tf.variableGrads`: with respect
 * to `logits` and, with `mcm`, `maskedLogits`; the other inputs are constants. `onTerms`
 * gets each weighted term's value, for a log that needs them without a second evaluation.
 */
export const macoLoss = (
  config: LossConfig,
  inputs: LossInputs,
  onTerms?: (terms: Partial<Record<LossTerm, number>>) => void,
): tf.Scalar => {
  const xs = config.mcm
    ? [inputs.logits, required(inputs.maskedLogits, 'mcm', 'maskedLogits')]
    : [inputs.logits]
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[xs.length] as tf.GradSaveFunc
    const [logits, maskedLogits] = args as tf.Tensor4D[]
    const { total, terms, gradients } = lossWithGradients(config, {
      ...inputs,
      logits,
      maskedLogits,
    })
    const parts = Object.entries(terms)
    onTerms?.(Object.fromEntries(parts.map(([k, v]) => [k, v.dataSync()[0]])))
    tf.dispose(parts.map(([, v]) => v))
    // `save` keeps the gradients only while a tape records, for the backward pass.
    save(
      gradients.maskedLogits === undefined
        ? [gradients.logits]
        : [gradients.logits, gradients.maskedLogits],
    )
    return {
      value: total,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => saved.map((g) => tf.mul(dy, g)),
    }
  })(...xs) as tf.Scalar
}
