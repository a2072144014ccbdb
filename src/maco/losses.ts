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
 * value and its gradient; the detached sides simply get none. `macoLoss` wraps the whole
 * thing in `tf.customGrad` for code that does use `tf.grad`.
 *
 * @example
 * const config = pipe(decodeLossConfig({ cpl: false }), E.getOrElseW(fail))
 * const { total, terms, gradients } = lossWithGradients(config, { logits, maskedLogits, scribbles, gc, unlabelled: 4 })
 * original.backward(gradients.logits); masked.backward(gradients.maskedLogits!)
 * // terms: { pce, pceMasked, mcm, gc }, each already weighted; total is their sum
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

/** A loss term's value and its gradient with respect to its differentiable input. */
export interface Term {
  readonly value: tf.Scalar
  readonly grad: tf.Tensor4D
}

/**
 * Mean cross-entropy over the pixels whose scribble is not `unlabelled`; 0 when there are
 * none. `grad` is with respect to the logits: (softmax - one-hot) / n on labelled pixels.
 */
export const partialCrossEntropy = (
  logits: tf.Tensor4D,
  scribbles: tf.Tensor3D,
  unlabelled: number,
): Term =>
  tf.tidy(() => {
    const classes = logits.shape[3]
    const labels = tf.cast(scribbles, 'int32')
    const isLabelled = tf.notEqual(labels, unlabelled)
    const labelled = tf.expandDims(tf.cast(isLabelled, 'float32'), 3)
    const target = tf.oneHot(tf.where(isLabelled, labels, tf.zerosLike(labels)), classes)
    const count = tf.maximum(tf.sum(labelled), 1)
    const logProb = tf.logSoftmax(logits)
    const value = tf.div<tf.Scalar>(
      tf.neg(tf.sum(tf.mul(tf.mul(target, logProb), labelled))),
      count,
    )
    const grad = tf.div<tf.Tensor4D>(tf.mul(tf.sub(tf.exp(logProb), target), labelled), count)
    return { value, grad }
  })

const COSINE_EPS = 1e-8

/**
 * 1 - mean over pixels of cos(reference(i), prediction(i)) over the class axis, the
 * cosine's denominator clamped at 1e-8. `grad` is with respect to `prediction` only:
 * the reference is detached.
 */
export const cosineDistance = (reference: tf.Tensor4D, prediction: tf.Tensor4D): Term =>
  tf.tidy(() => {
    const pixels = prediction.size / prediction.shape[3]
    const dot = tf.sum(tf.mul(reference, prediction), 3, true)
    const refNorm2 = tf.sum(tf.square(reference), 3, true)
    const norms = tf.mul(refNorm2, tf.sum(tf.square(prediction), 3, true))
    const clamped = tf.maximum(norms, COSINE_EPS * COSINE_EPS)
    const inverse = tf.rsqrt(clamped)
    const cos = tf.mul(dot, inverse)
    // d cos / d b = a r - (a . b) |a|^2 r^3 b with r = (|a|^2 |b|^2)^(-1/2); the second
    // part vanishes where the clamp holds r constant.
    const free = tf.cast(tf.greater(norms, COSINE_EPS * COSINE_EPS), 'float32')
    const radial = tf.mul(tf.mul(tf.mul(dot, refNorm2), tf.pow(inverse, 3)), free)
    const dCos = tf.sub(tf.mul(reference, inverse), tf.mul(radial, prediction))
    return {
      value: tf.sub<tf.Scalar>(1, tf.mean(cos)),
      grad: tf.div<tf.Tensor4D>(tf.neg(dCos), pixels),
    }
  })

/**
 * L_cpl = (1/C') sum_c (1/N_c) sum_{i: Y_c(i) > 0} (P(i, c) - Y_c(i))^2 over the classes with
 * N_c > 0 (N_c counted over the batch); 0 when no class has any. `grad` is with respect to P.
 */
export const cplLoss = (probabilities: tf.Tensor4D, cpl: tf.Tensor4D): Term =>
  tf.tidy(() => {
    const support = tf.cast(tf.greater(cpl, 0), 'float32')
    const residual = tf.mul(tf.sub(probabilities, cpl), support)
    const counts = tf.sum(support, [0, 1, 2])
    const present = tf.cast(tf.greater(counts, 0), 'float32')
    // Per class: 1 / (N_c C') where the class is present, else 0.
    const classWeight = tf.div(
      present,
      tf.mul(tf.maximum(counts, 1), tf.maximum(tf.sum(present), 1)),
    )
    return {
      value: tf.sum<tf.Scalar>(tf.mul(tf.sum(tf.square(residual), [0, 1, 2]), classWeight)),
      grad: tf.mul<tf.Tensor4D>(tf.mul(residual, classWeight), 2),
    }
  })

/** dL/dlogits from dL/dP for P = softmax(logits): P (g - sum_c g_c P_c). */
export const softmaxBackward = (probabilities: tf.Tensor4D, grad: tf.Tensor4D): tf.Tensor4D =>
  tf.tidy(() => tf.mul(probabilities, tf.sub(grad, tf.sum(tf.mul(grad, probabilities), 3, true))))

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

/** The MaCo loss of one batch, its weighted parts and its gradients (see the module comment). */
export const lossWithGradients = (config: LossConfig, inputs: LossInputs): LossWithGradients => {
  const { logits, scribbles, unlabelled } = inputs
  const maskedLogits = config.mcm ? required(inputs.maskedLogits, 'mcm', 'maskedLogits') : undefined
  const cpl = config.cpl ? required(inputs.cpl, 'cpl', 'cpl') : undefined
  const gc = config.gc ? required(inputs.gc, 'gc', 'gc') : undefined
  return tf.tidy(() => {
    const terms: Partial<Record<LossTerm, tf.Scalar>> = {}
    // Gradients gathered per input: with respect to the logits directly, or to P = softmax.
    const dLogits: tf.Tensor4D[] = []
    const dOriginal: tf.Tensor4D[] = []
    const dMaskedLogits: tf.Tensor4D[] = []
    const dMasked: tf.Tensor4D[] = []
    const add = (name: LossTerm, weight: number, term: Term, grads: tf.Tensor4D[]) => {
      terms[name] = tf.mul<tf.Scalar>(weight, term.value)
      grads.push(tf.mul<tf.Tensor4D>(weight, term.grad))
    }
    const original = tf.softmax(logits)
    if (config.pce) add('pce', 1, partialCrossEntropy(logits, scribbles, unlabelled), dLogits)
    const masked = maskedLogits === undefined ? undefined : tf.softmax(maskedLogits)
    if (maskedLogits !== undefined && masked !== undefined) {
      if (config.pce)
        add(
          'pceMasked',
          config.beta,
          partialCrossEntropy(maskedLogits, scribbles, unlabelled),
          dMaskedLogits,
        )
      add('mcm', config.lambdaMcm, cosineDistance(original, masked), dMasked)
    }
    if (gc !== undefined)
      add(
        'gc',
        config.lambdaGc,
        cosineDistance(enhancedPrediction(original, gc), original),
        dOriginal,
      )
    if (cpl !== undefined) add('cpl', config.lambdaCpl, cplLoss(original, cpl), dOriginal)
    const sum = (direct: tf.Tensor4D[], viaSoftmax: tf.Tensor4D[], probabilities: tf.Tensor4D) =>
      tf.addN([
        tf.zerosLike(probabilities),
        ...direct,
        ...(viaSoftmax.length > 0 ? [softmaxBackward(probabilities, tf.addN(viaSoftmax))] : []),
      ])
    const parts = Object.values(terms)
    return {
      total: parts.length === 0 ? tf.scalar(0) : tf.addN<tf.Scalar>(parts),
      terms,
      gradients: {
        logits: sum(dLogits, dOriginal, original),
        ...(masked === undefined ? {} : { maskedLogits: sum(dMaskedLogits, dMasked, masked) }),
      },
    }
  })
}

/**
 * The total loss as one differentiable op for `tf.grad`/`tf.variableGrads`: with respect
 * to `logits` and, with `mcm`, `maskedLogits`; the other inputs are constants.
 */
export const macoLoss = (config: LossConfig, inputs: LossInputs): tf.Scalar => {
  const xs = config.mcm
    ? [inputs.logits, required(inputs.maskedLogits, 'mcm', 'maskedLogits')]
    : [inputs.logits]
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[xs.length] as tf.GradSaveFunc
    const [logits, maskedLogits] = args as tf.Tensor4D[]
    const { total, gradients } = lossWithGradients(config, { ...inputs, logits, maskedLogits })
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
