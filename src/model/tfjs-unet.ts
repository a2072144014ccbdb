/**
 * The UNet of `unet.ts` in tfjs: weights in and out, inference, and a training forward
 * pass whose backward is written by hand.
 *
 * Why by hand: plain autograd keeps every intermediate until the step ends (out of wasm
 * memory at 256 px, batch 4) and differentiates through kernels that are slow on wasm
 * (Conv2DBackpropInput, SplitV for concat, Sum over batch and space). Here the program is
 * cut into units, each a conv with the batch norm, LeakyReLU and dropout after it; a unit
 * keeps only what its backward needs and uses the fast kernels: the input gradient as a
 * conv with the turned, transposed filter, channel sums as a global average pool, LeakyReLU
 * as prelu, per-channel scale and shift (batch norm forward and backward, the conv bias) as
 * a 1x1 depthwise conv or a fused conv with bias (and prelu), never a broadcasting Add or
 * Mul, and a concat followed by a conv as a sum of convs over the parts (so the concat is
 * never materialised nor split). The conv bias before a batch norm cancels in
 * training (its gradient is exactly 0) and is carried into the batch mean, as PyTorch's
 * running mean does.
 *
 * Batch norm follows PyTorch: batch statistics in training (the returned `stats` hold the
 * batch mean and unbiased variance for the moving averages, see `updateMovingStats`),
 * moving statistics in inference. Dropout is active only in training, with masks drawn
 * from the given seeded RNG in program order.
 *
 * @example
 * const spec = unetSpec()
 * const params = toParams(spec, initialWeights(spec, 42))
 * const pass = forwardTrain(spec, params, images, seeded(42, 'dropout', step))
 * const grads = pass.backward(dLogits) // named like parameterShapes, trainable only
 * const logits = predictLogits(spec, params, images)
 */
import * as tf from '@tensorflow/tfjs-core'
import { parameterShapes, type UNetOp, type UNetSpec, type UNetWeights } from './unet.ts'
import { rawBelow, seeded, type Rng } from '../util/rng.ts'
import { elementCount } from '../util/shape.ts'

/** The weights as tensors, named as `parameterShapes`. */
export type Params = Readonly<Record<string, tf.Tensor>>

/** Per batch-norm layer: batch mean and unbiased batch variance of one training pass. */
export type BatchStats = Readonly<
  Record<string, { readonly mean: tf.Tensor1D; readonly variance: tf.Tensor1D }>
>

export interface TrainForward {
  readonly logits: tf.Tensor4D
  readonly stats: BatchStats
  /**
   * Gradients of the trainable weights given the gradient of the logits. Frees everything
   * the pass kept (the stats too); the caller owns the returned tensors and `logits`.
   */
  readonly backward: (dLogits: tf.Tensor4D) => Record<string, tf.Tensor>
  /** Frees what the pass kept, when no backward will follow. */
  readonly dispose: () => void
}

type ConvOp = Extract<UNetOp, { op: 'conv' }>
type BatchNormOp = Extract<UNetOp, { op: 'batchNorm' }>

/** A conv and/or the channel-wise ops after it, run and differentiated as one. */
export interface Unit {
  readonly kind: 'unit'
  readonly conv?: ConvOp
  readonly batchNorm?: BatchNormOp
  readonly leakyRelu: boolean
  readonly dropout: number
}
export type Step = Unit | Extract<UNetOp, { op: 'maxPool' | 'upsample' | 'save' | 'concat' }>

/** Groups conv, batchNorm, leakyRelu and dropout, in that order, greedily into units. */
export const compile = (ops: readonly UNetOp[]): Step[] => {
  const rank = { conv: 0, batchNorm: 1, leakyRelu: 2, dropout: 3 } as const
  const steps: Step[] = []
  let unit:
    { conv?: ConvOp; batchNorm?: BatchNormOp; leakyRelu: boolean; dropout: number } | undefined
  let last = -1
  const flush = () => {
    if (unit) steps.push({ kind: 'unit', ...unit })
    unit = undefined
    last = -1
  }
  for (const o of ops) {
    if (o.op === 'maxPool' || o.op === 'upsample' || o.op === 'save' || o.op === 'concat') {
      flush()
      steps.push(o)
      continue
    }
    if (rank[o.op] <= last) flush()
    unit ??= { leakyRelu: false, dropout: 0 }
    last = rank[o.op]
    if (o.op === 'conv') unit.conv = o
    else if (o.op === 'batchNorm') unit.batchNorm = o
    else if (o.op === 'leakyRelu') unit.leakyRelu = true
    else unit.dropout = o.rate
  }
  flush()
  return steps
}

/** A value in flight: channel-concatenated parts (more than one only right after a concat). */
type Parts = readonly tf.Tensor4D[]

const channels = (t: tf.Tensor4D): number => t.shape[3]

/** `tf.tidy` for results that hold tensors inside plain records and readonly arrays. */
const scoped = <T>(f: () => T): T => tf.tidy(f as () => tf.TensorContainer) as T

/**
 * Mean over batch and space per channel, as a global average pool: on wasm that is
 * XNNPACK's pooling, ~5x faster than Sum (which transposes first) and ~15x faster than a
 * matMul with ones (which packs the whole tensor as its weights on every call).
 */
const channelMean = (t: tf.Tensor4D): tf.Tensor1D => {
  const [b, h, w, c] = t.shape
  return tf.reshape(
    tf.avgPool(tf.reshape(t, [1, b * h, w, c]) as tf.Tensor4D, [b * h, w], 1, 'valid'),
    [c],
  )
}

const channelSum = (t: tf.Tensor4D): tf.Tensor1D =>
  tf.mul(channelMean(t), t.size / channels(t)) as tf.Tensor1D

/** The slices of a kernel [k, k, in, out] that act on each input part. */
const kernelParts = (kernel: tf.Tensor4D, xs: Parts): tf.Tensor4D[] => {
  if (xs.length === 1) return [kernel]
  let offset = 0
  return xs.map((x) => {
    const part = tf.slice(kernel, [0, 0, offset, 0], [-1, -1, channels(x), -1])
    offset += channels(x)
    return part
  })
}

/**
 * The conv of the parts (their channels concatenated) plus `bias`, the bias fused into the
 * first part's conv: on wasm a separate Add of a channel vector broadcasts in a generic loop.
 */
const convSum = (xs: Parts, kernels: readonly tf.Tensor4D[], bias?: tf.Tensor): tf.Tensor4D =>
  xs
    .map((x, i) =>
      tf.fused.conv2d({
        x,
        filter: kernels[i],
        strides: 1,
        pad: 'same',
        bias: i === 0 ? bias : undefined,
      }),
    )
    .reduce((a, b) => tf.add(a, b))

/**
 * The kernel turned by 180 degrees in space: its k*k taps in reverse order, as a matMul with
 * the reversal permutation (exact: one product by 1 per entry), since Reverse is a slow
 * JavaScript kernel on wasm (~100 ms a step).
 */
const rotate180 = (kernel: tf.Tensor4D): tf.Tensor4D => {
  const [kh, kw, ci, co] = kernel.shape
  const taps = kh * kw
  if (taps === 1) return kernel
  const reversal = tf.tensor2d(
    Float32Array.from({ length: taps * taps }, (_, i) =>
      (i % taps) + Math.floor(i / taps) === taps - 1 ? 1 : 0,
    ),
    [taps, taps],
  )
  return tf.reshape(tf.matMul(reversal, tf.reshape(kernel, [taps, ci * co])), kernel.shape)
}

/** Input gradient of a stride-1 'same' conv: a conv with the turned, transposed filter. */
const convInputGrad = (dz: tf.Tensor4D, kernel: tf.Tensor4D): tf.Tensor4D =>
  tf.conv2d(dz, tf.transpose(rotate180(kernel), [0, 1, 3, 2]), 1, 'same')

const convFilterGrad = (x: tf.Tensor4D, dz: tf.Tensor4D, kernel: tf.Tensor4D): tf.Tensor4D =>
  tf.engine().runKernel('Conv2DBackpropFilter', { x, dy: dz }, {
    strides: [1, 1],
    pad: 'same',
    dataFormat: 'NHWC',
    dimRoundingMode: undefined,
    filterShape: [kernel.shape[0], kernel.shape[1], channels(x), kernel.shape[3]],
  } as unknown as tf.NamedAttrMap) as tf.Tensor4D

const leakyRelu = (y: tf.Tensor4D, slope: number): tf.Tensor4D =>
  tf.prelu(y as tf.Tensor, tf.fill([channels(y)], slope)) as tf.Tensor4D

/**
 * `x * scale + shift` per channel, then LeakyReLU when a slope is given, as a 1x1 depthwise
 * conv with bias (and prelu): on wasm that is one XNNPACK operator, ~6 times faster than a
 * Mul or Add that broadcasts a channel vector (a generic loop there).
 */
const channelAffine = (
  x: tf.Tensor4D,
  scale: tf.Tensor1D,
  shift?: tf.Tensor,
  slope?: number,
): tf.Tensor4D =>
  tf.fused.depthwiseConv2d({
    x,
    filter: tf.reshape(scale, [1, 1, channels(x), 1]) as tf.Tensor4D,
    strides: 1,
    pad: 'valid',
    bias: shift,
    ...(slope !== undefined && {
      activation: 'prelu',
      preluActivationWeights: tf.fill([channels(x)], slope),
    }),
  })

/**
 * Inverted dropout mask values (0 or 1 / (1 - rate)) drawn from `rng`, one draw per element
 * in the order of an NHWC tensor of `shape`: every engine draws the same masks from a seed.
 */
export const dropoutValues = (shape: readonly number[], rate: number, rng: Rng): Float32Array => {
  const values = new Float32Array(elementCount(shape))
  const draws = rng.fillUint32(new Uint32Array(values.length))
  const keep = 1 / (1 - rate)
  const drop = rawBelow(rate)
  // Branch-free: the drops of rates of 0.1 to 0.5 would mispredict a branch often.
  for (let i = 0; i < values.length; i++) values[i] = Number(draws[i] >= drop) * keep
  return values
}

export const dropoutMask = (shape: readonly number[], rate: number, rng: Rng): tf.Tensor =>
  tf.tensor(dropoutValues(shape, rate, rng), [...shape])

const param = (params: Params, name: string): tf.Tensor => {
  const p = params[name]
  if (!p) throw new Error(`missing weight '${name}'`)
  return p
}

/** Joins parts for an op that needs one tensor; `splitLike` undoes it on the gradient. */
const single = (xs: Parts): tf.Tensor4D => (xs.length === 1 ? xs[0] : tf.concat([...xs], 3))
const splitLike = (g: tf.Tensor4D, xs: Parts): Parts =>
  xs.length === 1 ? [g] : (tf.split(g, xs.map(channels), 3) as tf.Tensor4D[])

const addParts = (a: Parts, b: Parts): Parts => a.map((t, i) => tf.add(t, b[i]))

/** What a unit keeps for its backward (all but `xs` owned by the pass). */
interface UnitTape {
  readonly xs: Parts
  readonly out: tf.Tensor4D
  readonly mask?: tf.Tensor
  readonly centred?: tf.Tensor4D
  readonly invStd?: tf.Tensor1D
  readonly scale?: tf.Tensor1D
}

export const forwardTrain = (
  spec: UNetSpec,
  params: Params,
  input: tf.Tensor4D,
  rng: Rng,
): TrainForward => {
  const { leakySlope, bnEpsilon } = spec.options
  const steps = compile(spec.ops)
  const owned: tf.Tensor[] = []
  const keep = <T extends tf.Tensor>(t: T): T => {
    owned.push(t)
    return tf.keep(t)
  }
  const tapes: (UnitTape | Parts | undefined)[] = []
  const stats: Record<string, { mean: tf.Tensor1D; variance: tf.Tensor1D }> = {}
  const slots = new Map<string, Parts>()
  let current: Parts = [input]

  const unitForward = (u: Unit, xs: Parts): UnitTape =>
    scoped(() => {
      // The conv bias before a batch norm cancels (see the module comment).
      let z = u.conv
        ? convSum(
            xs,
            kernelParts(param(params, `${u.conv.name}.kernel`) as tf.Tensor4D, xs),
            u.batchNorm ? undefined : param(params, `${u.conv.name}.bias`),
          )
        : single(xs)
      const tape: { -readonly [K in keyof UnitTape]?: UnitTape[K] } = { xs }
      if (u.batchNorm) {
        const n = z.size / channels(z)
        const mean = channelMean(z)
        const centred = channelAffine(z, tf.onesLike(mean), tf.neg(mean))
        const variance = channelMean(tf.square(centred))
        const invStd = tf.rsqrt(tf.add(variance, bnEpsilon))
        const scale = tf.mul(param(params, `${u.batchNorm.name}.gamma`), invStd) as tf.Tensor1D
        const beta = param(params, `${u.batchNorm.name}.beta`)
        z = channelAffine(centred, scale, beta, u.leakyRelu ? leakySlope : undefined)
        const biasedMean = u.conv ? tf.add(mean, param(params, `${u.conv.name}.bias`)) : mean
        stats[u.batchNorm.name] = {
          mean: keep(biasedMean as tf.Tensor1D),
          variance: keep(tf.mul(variance, n / Math.max(n - 1, 1))),
        }
        Object.assign(tape, { centred: keep(centred), invStd: keep(invStd), scale: keep(scale) })
      }
      if (u.leakyRelu && !u.batchNorm) z = leakyRelu(z, leakySlope)
      if (u.dropout > 0) {
        const mask = keep(dropoutMask(z.shape, u.dropout, rng))
        tape.mask = mask
        z = tf.mul(z, mask)
      }
      tape.out = keep(z)
      return tape as UnitTape
    })

  try {
    for (const s of steps) {
      if ('kind' in s) {
        const tape = unitForward(s, current)
        tapes.push(tape)
        current = [tape.out]
      } else if (s.op === 'maxPool' || s.op === 'upsample') {
        const x = single(current)
        if (x !== current[0]) keep(x)
        const y = tf.tidy(() =>
          s.op === 'maxPool'
            ? tf.maxPool(x, 2, 2, 'valid')
            : tf.image.resizeBilinear(x, [x.shape[1] * 2, x.shape[2] * 2], true),
        )
        tapes.push(current)
        current = [keep(y)]
      } else if (s.op === 'save') {
        slots.set(s.slot, current)
        tapes.push(undefined)
      } else {
        const saved = slots.get(s.slot)
        if (!saved) throw new Error(`concat of slot '${s.slot}' before it was saved`)
        tapes.push(saved)
        current = [...saved, ...current]
      }
    }
  } catch (e) {
    tf.dispose(owned)
    throw e
  }
  const logits = single(current)
  const disposeTape = () => tf.dispose(owned.filter((t) => t !== logits))

  const backward = (dLogits: tf.Tensor4D): Record<string, tf.Tensor> => {
    const grads: Record<string, tf.Tensor> = {}
    const pending = new Map<string, Parts>()
    // Gradients made here, freed as soon as the step before has consumed them.
    const transient = new Set<tf.Tensor>()
    const made = (p: Parts): Parts => {
      p.forEach((t) => transient.add(t))
      return p
    }
    const release = (p: Parts) =>
      p.forEach((t) => {
        if (transient.delete(t)) t.dispose()
      })
    let g: Parts = splitLike(dLogits, current)
    try {
      for (let i = steps.length - 1; i >= 0; i--) {
        const s = steps[i]
        const tape = tapes[i]
        const consumed = g
        if ('kind' in s)
          g = made(unitBackward(s, tape as UnitTape, g, params, grads, input, spec.options))
        else if (s.op === 'maxPool' || s.op === 'upsample')
          g = made(resampleBackward(s.op, tape as Parts, g))
        else if (s.op === 'concat') {
          const n = (tape as Parts).length
          pending.set(s.slot, g.slice(0, n))
          g = g.slice(n)
          continue
        } else {
          const skip = pending.get(s.slot)
          if (!skip) continue
          g = made(scoped(() => addParts(consumed, skip)))
          release(skip)
        }
        release(consumed)
      }
      return grads
    } finally {
      tf.dispose([...transient])
      disposeTape()
    }
  }
  return { logits, stats, backward, dispose: disposeTape }
}

const resampleBackward = (op: 'maxPool' | 'upsample', xs: Parts, gOut: Parts): Parts =>
  scoped(() => {
    const x = single(xs)
    const dy = single(gOut)
    const dx =
      op === 'maxPool'
        ? tf
            .engine()
            .runKernel('MaxPoolGrad', { dy, input: x, output: tf.maxPool(x, 2, 2, 'valid') }, {
              filterSize: [2, 2],
              strides: [2, 2],
              pad: 'valid',
              dimRoundingMode: undefined,
            } as unknown as tf.NamedAttrMap)
        : tf.engine().runKernel('ResizeBilinearGrad', { images: x, dy }, {
            alignCorners: true,
            halfPixelCenters: false,
          } as unknown as tf.NamedAttrMap)
    return splitLike(dx as tf.Tensor4D, xs)
  })

const unitBackward = (
  u: Unit,
  tape: UnitTape,
  gOut: Parts,
  params: Params,
  grads: Record<string, tf.Tensor>,
  input: tf.Tensor4D,
  options: UNetSpec['options'],
): Parts => {
  const result = scoped(() => {
    let g = single(gOut)
    if (tape.mask) g = tf.mul(g, tape.mask)
    if (u.leakyRelu) g = tf.mul(g, tf.step(tape.out, options.leakySlope))
    const named: Record<string, tf.Tensor> = {}
    if (u.batchNorm && tape.centred && tape.invStd && tape.scale) {
      const n = g.size / channels(g)
      const sumDy = channelSum(g)
      const sumDyCentred = channelSum(tf.mul(g, tape.centred))
      named[`${u.batchNorm.name}.gamma`] = tf.mul(sumDyCentred, tape.invStd)
      named[`${u.batchNorm.name}.beta`] = sumDy
      // dz = scale (dy - mean(dy) - xhat mean(dy xhat)), xhat = centred * invStd
      const onCentred = tf.neg(
        tf.mul(tf.mul(tape.scale, tf.square(tape.invStd)), tf.div(sumDyCentred, n)),
      ) as tf.Tensor1D
      const constant = tf.neg(tf.mul(tape.scale, tf.div(sumDy, n)))
      g = tf.add(channelAffine(g, tape.scale, constant), channelAffine(tape.centred, onCentred))
    }
    if (!u.conv) return { named, dx: splitLike(g, tape.xs) }
    const kernel = param(params, `${u.conv.name}.kernel`) as tf.Tensor4D
    const kernels = kernelParts(kernel, tape.xs)
    const filterGrads = tape.xs.map((x, i) => convFilterGrad(x, g, kernels[i]))
    named[`${u.conv.name}.kernel`] =
      filterGrads.length === 1 ? filterGrads[0] : tf.concat(filterGrads, 2)
    named[`${u.conv.name}.bias`] = u.batchNorm
      ? tf.zerosLike(param(params, `${u.conv.name}.bias`))
      : channelSum(g)
    const needsInputGrad = !(tape.xs.length === 1 && tape.xs[0] === input)
    return { named, dx: needsInputGrad ? tape.xs.map((_, i) => convInputGrad(g, kernels[i])) : [] }
  })
  Object.assign(grads, result.named)
  return result.dx
}

/** Logits in inference mode: moving statistics folded into the convs, no dropout. */
export const predictLogits = (spec: UNetSpec, params: Params, input: tf.Tensor4D): tf.Tensor4D =>
  tf.tidy(() => {
    const { leakySlope, bnEpsilon } = spec.options
    const slots = new Map<string, Parts>()
    let current: Parts = [input]
    for (const s of compile(spec.ops)) {
      if ('kind' in s) {
        let z: tf.Tensor4D
        if (s.conv) {
          let kernel = param(params, `${s.conv.name}.kernel`) as tf.Tensor4D
          let bias = param(params, `${s.conv.name}.bias`)
          if (s.batchNorm) {
            const scale = tf.mul(
              param(params, `${s.batchNorm.name}.gamma`),
              tf.rsqrt(tf.add(param(params, `${s.batchNorm.name}.movingVariance`), bnEpsilon)),
            )
            kernel = tf.mul(kernel, scale)
            bias = tf.add(
              tf.mul(tf.sub(bias, param(params, `${s.batchNorm.name}.movingMean`)), scale),
              param(params, `${s.batchNorm.name}.beta`),
            )
          }
          z = convSum(current, kernelParts(kernel, current), bias)
        } else {
          z = single(current)
          if (s.batchNorm) {
            const name = s.batchNorm.name
            z = tf.batchNorm<tf.Rank.R4>(
              z,
              param(params, `${name}.movingMean`) as tf.Tensor1D,
              param(params, `${name}.movingVariance`) as tf.Tensor1D,
              param(params, `${name}.beta`) as tf.Tensor1D,
              param(params, `${name}.gamma`) as tf.Tensor1D,
              bnEpsilon,
            )
          }
        }
        current = [s.leakyRelu ? leakyRelu(z, leakySlope) : z]
      } else if (s.op === 'maxPool') current = [tf.maxPool(single(current), 2, 2, 'valid')]
      else if (s.op === 'upsample') {
        const x = single(current)
        current = [tf.image.resizeBilinear(x, [x.shape[1] * 2, x.shape[2] * 2], true)]
      } else if (s.op === 'save') slots.set(s.slot, current)
      else current = [...(slots.get(s.slot) ?? []), ...current]
    }
    return single(current)
  })

/**
 * PyTorch's moving averages: `moving = (1 - momentum) moving + momentum batch`, per batch
 * norm layer in `stats`. Returns the new params (moving statistics replaced, the old ones
 * disposed); the other tensors are shared.
 */
export const updateMovingStats = (params: Params, stats: BatchStats, momentum = 0.1): Params => {
  const next: Record<string, tf.Tensor> = { ...params }
  for (const [name, s] of Object.entries(stats)) {
    for (const [key, batch] of [
      ['movingMean', s.mean],
      ['movingVariance', s.variance],
    ] as const) {
      const old = param(params, `${name}.${key}`)
      next[`${name}.${key}`] = tf.tidy(() =>
        tf.add(tf.mul(old, 1 - momentum), tf.mul(batch, momentum)),
      )
      old.dispose()
    }
  }
  return next
}

/**
 * Seeded initial weights: He (Kaiming) normal for conv kernels (std sqrt(2 / fan in)),
 * zero biases, batch norm gamma 1, beta 0, moving mean 0, moving variance 1.
 */
export const initialWeights = (spec: UNetSpec, seed: number | string): UNetWeights =>
  Object.fromEntries(
    parameterShapes(spec).map(({ name, shape }) => {
      const values = new Float32Array(elementCount(shape))
      if (name.endsWith('.kernel')) {
        const rng = seeded(seed, 'init', name)
        const std = Math.sqrt(2 / (shape[0] * shape[1] * shape[2]))
        for (let i = 0; i < values.length; i++) values[i] = rng.normal() * std
      } else if (name.endsWith('.gamma') || name.endsWith('.movingVariance')) values.fill(1)
      return [name, values]
    }),
  )

/** Tensors from named weights; every weight of the spec must be there with its size. */
export const toParams = (spec: UNetSpec, weights: UNetWeights): Params => {
  const shapes = parameterShapes(spec)
  for (const { name, shape } of shapes) {
    const w = weights[name]
    const size = elementCount(shape)
    if (!w) throw new RangeError(`weights lack '${name}'`)
    if (w.length !== size)
      throw new RangeError(
        `weight '${name}' has ${w.length} values, expected ${size} (${shape.join('x')})`,
      )
  }
  return Object.fromEntries(
    shapes.map(({ name, shape }) => [name, tf.tensor(weights[name], [...shape])]),
  )
}

/** Named Float32Arrays (copies) of the params, in `parameterShapes` order. */
export const fromParams = async (spec: UNetSpec, params: Params): Promise<UNetWeights> => {
  const names = parameterShapes(spec).map((p) => p.name)
  const values = await Promise.all(
    names.map((n) => param(params, n).data() as Promise<Float32Array>),
  )
  return Object.fromEntries(names.map((n, i) => [n, Float32Array.from(values[i])]))
}
