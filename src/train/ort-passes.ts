/**
 * Training passes as two whole onnxruntime graphs, the `onnxruntime` engine's runner: the
 * forward pass of `forwardTrain` (tfjs-unet.ts) and its hand-written backward, op for op,
 * built from the same op program (`unetSpec`) in NCHW. On that engine a pass used to be tfjs
 * wasm with each conv on onnxruntime (an NHWC <-> NCHW reorder around every conv, every batch
 * norm and activation a wasm kernel of its own); as one graph onnxruntime runs MLAS's
 * blocked-layout convs end to end and fuses the element-wise ops between them.
 *
 * What stays in tfjs is what the step does between and after the passes (the MaCo loss, the
 * moving averages, Adam): a pass takes the weights, images and dropout seeds as tfjs
 * tensors and gives back tfjs tensors, so `trainStep` runs unchanged. The dropout masks are
 * drawn from the same seeded RNG in the same order as on every other engine (`maskNchw`).
 *
 * The backward, per op (x the input, g the gradient of the output, sums over batch and space):
 * - conv: the filter gradient as one MatMul per kernel tap over a contiguous range of the
 *   padded grid (as ort-kernels.ts, per image, then summed over the batch); the input
 *   gradient as a conv with the turned, transposed kernel; a bias before a batch norm cancels
 *   in training, so its gradient is 0 (as in tfjs-unet.ts);
 * - batch norm: dz = scale (g - mean(g) - xhat mean(g xhat)), xhat = centred * invStd;
 * - LeakyReLU: g * (out > 0 ? 1 : slope); dropout: g * mask;
 * - max pool: MaxUnpool of g at the pool's argmax (recomputed from x; the first maximum of
 *   a window wins, as in wasm-kernels.ts);
 * - bilinear x2 (align corners): the transposed interpolation matrices, U_h^T g U_w;
 * - concat: the channel ranges of g; a saved skip adds the gradient that comes back to it.
 *
 * One pair of sessions per batch geometry (n, h, w): the shapes are fixed, so onnxruntime
 * plans all memory once. `threads` is onnxruntime's intra-op thread count. Validation runs
 * on onnxruntime too (`ortInference`).
 *
 * @example
 * const passes = ortPasses(spec, 2)   // Either<string, Passes>: Left when onnxruntime-node is absent
 * await trainStep(passes.right, state, batch, loss, { seed, step })
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { compile, fromParams, type BatchStats, type Params } from '../model/tfjs-unet.ts'
import { exportOnnx, INPUT_NAME, PROBABILITIES_NAME } from '../model/onnx-export.ts'
import {
  float,
  int,
  ints,
  string,
  tensorInfo,
  type AttributeProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from '../model/onnx-proto.ts'
import { parameterShapes, type UNetSpec } from '../model/unet.ts'
import { seeded, type Rng } from '../util/rng.ts'
import {
  floats,
  graph,
  int64s,
  loadNative,
  openSession,
  type NativeOrt,
  type NativeSession,
} from './ort-native.ts'
import type { Inference, Pass, Passes } from './step.ts'

type Dims = readonly number[]

/** An ONNX graph under construction, its values named `prefix` and a counter. */
const builder = (prefix: string) => {
  const nodes: NodeProto[] = []
  const initializers: TensorProto[] = []
  let count = 0
  const op = (
    type: string,
    inputs: readonly string[],
    attributes: readonly AttributeProto[] = [],
    outputs = 1,
  ): string[] => {
    const names = Array.from({ length: outputs }, () => `${prefix}${count++}`)
    nodes.push({
      name: names[0],
      opType: type,
      input: inputs,
      output: names,
      attribute: attributes,
    })
    return names
  }
  return {
    nodes,
    initializers,
    /** One op with one output. */
    op1: (type: string, inputs: readonly string[], attrs?: readonly AttributeProto[]) =>
      op(type, inputs, attrs)[0],
    op,
    /** One op whose output has a given name (a graph output). */
    named: (
      type: string,
      inputs: readonly string[],
      output: string,
      attrs: readonly AttributeProto[] = [],
    ) =>
      void nodes.push({
        name: output,
        opType: type,
        input: inputs,
        output: [output],
        attribute: attrs,
      }),
    longs: (values: readonly number[]) => {
      const name = `${prefix}c${count++}`
      initializers.push(int64s(name, values))
      return name
    },
    constant: (values: Float32Array, shape: Dims) => {
      const name = `${prefix}c${count++}`
      initializers.push(floats(name, shape, values))
      return name
    },
  }
}
type Builder = ReturnType<typeof builder>

const ALL_BUT_CHANNELS = [0, 2, 3]

/**
 * The rows of an align-corners bilinear x2 resize of `n` samples: `2n x n`, row i taking
 * source position i (n - 1) / (2n - 1).
 */
export const upsampleMatrix = (n: number): Float32Array => {
  const m = new Float32Array(2 * n * n)
  const step = n > 1 ? (n - 1) / (2 * n - 1) : 0
  for (let i = 0; i < 2 * n; i++) {
    const x = i * step
    const lo = Math.min(Math.floor(x), n - 1)
    const w = x - lo
    m[i * n + lo] += 1 - w
    if (w > 0) m[i * n + lo + 1] += w
  }
  return m
}

const transposed = (m: Float32Array, rows: number, columns: number): Float32Array => {
  const t = new Float32Array(m.length)
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < columns; c++) t[c * rows + r] = m[r * columns + c]
  return t
}

/**
 * `dropoutValues` laid out NCHW: the same draws, in the same (NHWC) order, each written
 * where NCHW keeps it, so the masks are every other engine's.
 */
export const maskNchw = ([n, c, h, w]: Dims, rate: number, rng: Rng): Float32Array => {
  const values = new Float32Array(n * c * h * w)
  const keep = 1 / (1 - rate)
  const plane = h * w
  for (let b = 0; b < n; b++)
    for (let p = 0; p < plane; p++) {
      const first = b * c * plane + p
      for (let channel = 0; channel < c; channel++)
        values[first + channel * plane] = rng.uniform() < rate ? 0 : keep
    }
  return values
}

/** HWIO (tfjs) kernel input `name` as OIHW. */
const oihw = (b: Builder, name: string) => b.op1('Transpose', [name], [ints('perm', [3, 2, 0, 1])])

const samePads = (k: number) => {
  const p = (k - 1) / 2
  return ints('pads', [p, p, p, p])
}

/** sum over batch and space per channel, as [C] (or [1, C, 1, 1] with keepDims). */
const channelSum = (b: Builder, x: string, keepDims = false) =>
  b.op1('ReduceSum', [x, b.longs(ALL_BUT_CHANNELS)], [int('keepdims', keepDims ? 1 : 0)])

/**
 * dW of a stride-1 'same' conv, HWIO, from x [n, ci, h, w] and g [n, co, h, w]: on the
 * rows of the padded grid, tap (i, j) of output position p reads position p + i wp + j, so
 * with g zero-padded to the same grid each tap is one product of a contiguous range of x
 * with g's first L positions.
 */
const filterGradient = (
  b: Builder,
  x: string,
  g: string,
  k: number,
  [n, ci, h, w]: Dims,
  co: number,
) => {
  const p = (k - 1) / 2
  const [hp, wp] = [h + 2 * p, w + 2 * p]
  const plane = hp * wp
  const reach = (k - 1) * wp + (k - 1)
  const used = plane - reach
  const xRows = b.op1('Reshape', [
    p > 0 ? b.op1('Pad', [x, b.longs([0, 0, p, p, 0, 0, p, p])]) : x,
    b.longs([n, ci, plane]),
  ])
  const gPadded = k > 1 ? b.op1('Pad', [g, b.longs([0, 0, 0, 0, 0, 0, k - 1, k - 1])]) : g
  const gRows = b.op1('Reshape', [gPadded, b.longs([n, co, plane])])
  const gUsed = b.op1(
    'Transpose',
    [reach > 0 ? b.op1('Slice', [gRows, b.longs([0]), b.longs([used]), b.longs([2])]) : gRows],
    [ints('perm', [0, 2, 1])],
  )
  const taps = Array.from({ length: k * k }, (_, t) => {
    const start = Math.floor(t / k) * wp + (t % k)
    const xTap =
      reach > 0
        ? b.op1('Slice', [xRows, b.longs([start]), b.longs([start + used]), b.longs([2])])
        : xRows
    return b.op1('ReduceSum', [b.op1('MatMul', [xTap, gUsed]), b.longs([0])], [int('keepdims', 1)])
  })
  const stacked = taps.length === 1 ? taps[0] : b.op1('Concat', taps, [int('axis', 0)])
  return b.op1('Reshape', [stacked, b.longs([k, k, ci, co])])
}

interface PassGraphs {
  readonly forward: NativeSession
  readonly backward: NativeSession
  /** Forward outputs the backward reads, by name. */
  readonly saved: readonly string[]
  /** Per dropout unit in program order: the NCHW shape of its mask and its rate. */
  readonly masks: readonly { readonly name: string; readonly shape: Dims; readonly rate: number }[]
  /** The batch norms, whose batch statistics the forward returns. */
  readonly batchNorms: readonly string[]
  /** Weights the forward reads. */
  readonly weights: readonly string[]
  /** Kernels the backward reads (the input gradients'). */
  readonly kernels: readonly string[]
  /** Conv biases before a batch norm: their gradient is exactly 0. */
  readonly cancelled: readonly string[]
  /** The weights whose gradients the backward gives. */
  readonly gradients: readonly string[]
}

const buildGraphs = (
  spec: UNetSpec,
  [n, h, w]: Dims,
  ort: NativeOrt,
  threads: number,
): PassGraphs => {
  const { leakySlope, bnEpsilon, inChannels, classes } = spec.options
  const shapes = new Map(parameterShapes(spec).map((p) => [p.name, p.shape]))
  const steps = compile(spec.ops)
  const f = builder('f')
  const weights = new Set<string>()
  const weight = (name: string) => {
    weights.add(name)
    return name
  }
  const masks: { name: string; shape: Dims; rate: number }[] = []
  const batchNorms: string[] = []
  const cancelled: string[] = []
  /** Per step, what the backward needs of the forward. */
  const tapes: Record<string, string>[] = []
  const concatSkip: number[] = []
  const shapeAt: Dims[] = []
  const slots = new Map<string, { name: string; channels: number }>()

  let current = f.op1('Transpose', ['image'], [ints('perm', [0, 3, 1, 2])])
  let shape: Dims = [n, inChannels, h, w]
  const image = current
  steps.forEach((s, i) => {
    shapeAt[i] = shape
    const tape: Record<string, string> = {}
    tapes[i] = tape
    if ('kind' in s) {
      tape.x = current
      let z = current
      if (s.conv) {
        const { name, kernel, outChannels } = s.conv
        const inputs = [current, oihw(f, weight(`${name}.kernel`))]
        if (!s.batchNorm) inputs.push(weight(`${name}.bias`))
        else cancelled.push(`${name}.bias`)
        z = f.op1('Conv', inputs, [samePads(kernel)])
        shape = [n, outChannels, shape[2], shape[3]]
      }
      const c = shape[1]
      if (s.batchNorm) {
        const bn = s.batchNorm.name
        const count = n * shape[2] * shape[3]
        const mean = f.op1('ReduceMean', [z], [ints('axes', ALL_BUT_CHANNELS)])
        const centred = f.op1('Sub', [z, mean])
        const variance = f.op1(
          'ReduceMean',
          [f.op1('Mul', [centred, centred])],
          [ints('axes', ALL_BUT_CHANNELS)],
        )
        const eps = f.constant(Float32Array.of(bnEpsilon), [])
        const invStd = f.op1('Reciprocal', [f.op1('Sqrt', [f.op1('Add', [variance, eps])])])
        const perChannel = f.longs([1, c, 1, 1])
        const scale = f.op1('Mul', [f.op1('Reshape', [weight(`${bn}.gamma`), perChannel]), invStd])
        z = f.op1('Add', [
          f.op1('Mul', [centred, scale]),
          f.op1('Reshape', [weight(`${bn}.beta`), perChannel]),
        ])
        const flat = f.longs([c])
        const batchMean = f.op1('Reshape', [mean, flat])
        // The cancelled conv bias belongs to the batch mean, as PyTorch's running mean has it.
        if (s.conv) f.named('Add', [batchMean, weight(`${s.conv.name}.bias`)], `${bn}.mean`)
        else f.named('Identity', [batchMean], `${bn}.mean`)
        const unbiased = f.constant(Float32Array.of(count / Math.max(count - 1, 1)), [])
        f.named('Mul', [f.op1('Reshape', [variance, flat]), unbiased], `${bn}.variance`)
        batchNorms.push(bn)
        Object.assign(tape, { centred, invStd, scale })
      }
      if (s.leakyRelu) z = f.op1('LeakyRelu', [z], [float('alpha', leakySlope)])
      if (s.dropout > 0) {
        const name = `mask${masks.length}`
        masks.push({ name, shape: [n, c, shape[2], shape[3]], rate: s.dropout })
        z = f.op1('Mul', [z, name])
        tape.mask = name
      }
      if (s.leakyRelu) tape.out = z
      current = z
    } else if (s.op === 'maxPool') {
      tape.x = current
      current = f.op1('MaxPool', [current], [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])])
      shape = [n, shape[1], shape[2] / 2, shape[3] / 2]
    } else if (s.op === 'upsample') {
      const scales = f.constant(Float32Array.of(1, 1, 2, 2), [4])
      current = f.op1(
        'Resize',
        [current, '', scales],
        [string('mode', 'linear'), string('coordinate_transformation_mode', 'align_corners')],
      )
      shape = [n, shape[1], shape[2] * 2, shape[3] * 2]
    } else if (s.op === 'save') slots.set(s.slot, { name: current, channels: shape[1] })
    else {
      const skip = slots.get(s.slot)
      if (!skip) throw new Error(`concat of slot '${s.slot}' before it was saved`)
      current = f.op1('Concat', [skip.name, current], [int('axis', 1)])
      concatSkip[i] = skip.channels
      shape = [n, shape[1] + skip.channels, shape[2], shape[3]]
    }
  })
  f.named('Transpose', [current], 'logits', [ints('perm', [0, 2, 3, 1])])

  // The forward values the backward reads, with their shapes (its inputs need them).
  const savedShape = new Map<string, Dims>()
  steps.forEach((s, i) => {
    const tape = tapes[i]
    const at = shapeAt[i]
    if (tape.x && tape.x !== image) savedShape.set(tape.x, at)
    if (!('kind' in s)) return
    const out: Dims = [n, s.conv ? s.conv.outChannels : at[1], at[2], at[3]]
    if (tape.centred) {
      savedShape.set(tape.centred, out)
      savedShape.set(tape.invStd, [1, out[1], 1, 1])
      savedShape.set(tape.scale, [1, out[1], 1, 1])
    }
    if (tape.out) savedShape.set(tape.out, out)
  })
  const saved = [...savedShape.keys()]
  const maskInputs = masks.map((m) => tensorInfo(m.name, m.shape))
  const forward = graph(
    f.nodes,
    f.initializers,
    [
      tensorInfo('image', [n, h, w, inChannels]),
      ...[...weights].map((name) => tensorInfo(name, shapes.get(name) as Dims)),
      ...maskInputs,
    ],
    [
      tensorInfo('logits', [n, h, w, classes]),
      ...saved.map((name) => tensorInfo(name, savedShape.get(name) as Dims)),
      ...batchNorms.flatMap((bn) => {
        const c = (shapes.get(`${bn}.gamma`) as Dims)[0]
        return [tensorInfo(`${bn}.mean`, [c]), tensorInfo(`${bn}.variance`, [c])]
      }),
    ],
  )

  // The backward, step by step from the last.
  const b = builder('b')
  const gradOutputs: ValueInfoProto[] = []
  const gradient = (name: string, value: string) => {
    b.named('Identity', [value], `grad.${name}`)
    gradOutputs.push(tensorInfo(`grad.${name}`, shapes.get(name) as Dims))
  }
  const pending = new Map<string, string>()
  const kernelsRead = new Set<string>()
  let g = b.op1('Transpose', ['dlogits'], [ints('perm', [0, 3, 1, 2])])
  let gShape: Dims = [n, classes, h, w]
  for (let i = steps.length - 1; i >= 0; i--) {
    const s = steps[i]
    const tape = tapes[i]
    const at = shapeAt[i]
    if ('kind' in s) {
      if (tape.mask) g = b.op1('Mul', [g, tape.mask])
      if (tape.out) {
        const positive = b.op1('Greater', [tape.out, b.constant(Float32Array.of(0), [])])
        const slope = b.op1('Where', [
          positive,
          b.constant(Float32Array.of(1), []),
          b.constant(Float32Array.of(leakySlope), []),
        ])
        g = b.op1('Mul', [g, slope])
      }
      if (s.batchNorm) {
        const bn = s.batchNorm.name
        const count = b.constant(Float32Array.of(gShape[0] * gShape[2] * gShape[3]), [])
        const sumG = channelSum(b, g, true)
        const sumGCentred = channelSum(b, b.op1('Mul', [g, tape.centred]), true)
        const c = gShape[1]
        gradient(
          `${bn}.gamma`,
          b.op1('Reshape', [b.op1('Mul', [sumGCentred, tape.invStd]), b.longs([c])]),
        )
        gradient(`${bn}.beta`, b.op1('Reshape', [sumG, b.longs([c])]))
        const onCentred = b.op1('Neg', [
          b.op1('Mul', [
            b.op1('Mul', [tape.scale, b.op1('Mul', [tape.invStd, tape.invStd])]),
            b.op1('Div', [sumGCentred, count]),
          ]),
        ])
        const constant = b.op1('Neg', [b.op1('Mul', [tape.scale, b.op1('Div', [sumG, count])])])
        g = b.op1('Add', [
          b.op1('Add', [b.op1('Mul', [g, tape.scale]), constant]),
          b.op1('Mul', [tape.centred, onCentred]),
        ])
      }
      if (s.conv) {
        const { name, kernel, inChannels: ci, outChannels: co } = s.conv
        const x =
          tape.x === image ? b.op1('Transpose', ['image'], [ints('perm', [0, 3, 1, 2])]) : tape.x
        gradient(`${name}.kernel`, filterGradient(b, x, g, kernel, at, co))
        if (!s.batchNorm) gradient(`${name}.bias`, channelSum(b, g))
        if (tape.x !== image) {
          // The input gradient: a conv with the kernel turned by 180 degrees, in and out swapped.
          kernelsRead.add(`${name}.kernel`)
          const swapped = b.op1('Transpose', [`${name}.kernel`], [ints('perm', [2, 3, 0, 1])])
          const turned = b.op1('Slice', [
            swapped,
            b.longs([-1, -1]),
            b.longs([-(kernel + 1), -(kernel + 1)]),
            b.longs([2, 3]),
            b.longs([-1, -1]),
          ])
          g = b.op1('Conv', [g, turned], [samePads(kernel)])
        }
        gShape = [n, ci, at[2], at[3]]
      }
    } else if (s.op === 'maxPool') {
      const [, argmax] = b.op(
        'MaxPool',
        [tape.x],
        [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])],
        2,
      )
      g = b.op1(
        'MaxUnpool',
        [g, argmax, b.longs([...at])],
        [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])],
      )
      gShape = at
    } else if (s.op === 'upsample') {
      const [rows, columns] = [at[2], at[3]]
      const alongWidth = b.constant(upsampleMatrix(columns), [2 * columns, columns])
      const alongHeight = b.constant(transposed(upsampleMatrix(rows), 2 * rows, rows), [
        rows,
        2 * rows,
      ])
      g = b.op1('MatMul', [alongHeight, b.op1('MatMul', [g, alongWidth])])
      gShape = at
    } else if (s.op === 'concat') {
      const skip = concatSkip[i]
      const axis = b.longs([1])
      pending.set(s.slot, b.op1('Slice', [g, b.longs([0]), b.longs([skip]), axis]))
      g = b.op1('Slice', [g, b.longs([skip]), b.longs([gShape[1]]), axis])
      gShape = at
    } else {
      const skip = pending.get(s.slot)
      if (skip) g = b.op1('Add', [g, skip])
    }
  }
  const backward = graph(
    b.nodes,
    b.initializers,
    [
      tensorInfo('dlogits', [n, h, w, classes]),
      tensorInfo('image', [n, h, w, inChannels]),
      ...[...kernelsRead].map((name) => tensorInfo(name, shapes.get(name) as Dims)),
      ...maskInputs,
      ...saved.map((name) => tensorInfo(name, savedShape.get(name) as Dims)),
    ],
    gradOutputs,
  )
  return {
    forward: openSession(ort, forward, threads),
    backward: openSession(ort, backward, threads),
    saved,
    masks,
    batchNorms,
    weights: [...weights],
    kernels: [...kernelsRead],
    cancelled,
    gradients: gradOutputs.map((o) => o.name.slice('grad.'.length)),
  }
}

/**
 * The passes of a step as onnxruntime graphs on `threads` intra-op threads; Left (one line)
 * when onnxruntime-node cannot be loaded.
 */
export const ortPasses = (spec: UNetSpec, threads = 1): E.Either<string, Passes> => {
  const loaded = loadNative()
  if (E.isLeft(loaded)) return loaded
  const ort = loaded.right
  const shapes = new Map(parameterShapes(spec).map((p) => [p.name, p.shape]))
  const geometries = new Map<string, PassGraphs>()
  const graphsFor = (dims: Dims) => {
    const key = dims.join('x')
    const known = geometries.get(key)
    if (known) return known
    const built = buildGraphs(spec, dims, ort, threads)
    geometries.set(key, built)
    return built
  }
  const feed = (data: Float32Array, dims: Dims) => ort.tensor(data, dims)

  const pass = (
    weights: ReadonlyMap<string, Float32Array>,
    image: tf.Tensor4D,
    seed: readonly (string | number)[],
  ): Pass => {
    const [n, h, w, c] = image.shape
    const gs = graphsFor([n, h, w])
    const rng = seeded(...(seed as [string | number, ...(string | number)[]]))
    const masks = gs.masks.map(
      (m) => [m.name, feed(maskNchw(m.shape, m.rate, rng), m.shape)] as const,
    )
    const imageFeed = feed(image.dataSync() as Float32Array, [n, h, w, c])
    const weightFeed = (name: string) =>
      [name, feed(weights.get(name) as Float32Array, shapes.get(name) as Dims)] as const
    const out = gs.forward.run(
      Object.fromEntries([['image', imageFeed], ...gs.weights.map(weightFeed), ...masks]),
      Object.fromEntries(
        [
          'logits',
          ...gs.saved,
          ...gs.batchNorms.flatMap((bn) => [`${bn}.mean`, `${bn}.variance`]),
        ].map((name) => [name, null]),
      ),
      {},
    )
    const stats: BatchStats = Object.fromEntries(
      gs.batchNorms.map((bn) => [
        bn,
        {
          mean: tf.tensor1d(out[`${bn}.mean`].data),
          variance: tf.tensor1d(out[`${bn}.variance`].data),
        },
      ]),
    )
    const freeStats = () => tf.dispose(Object.values(stats).flatMap((s) => [s.mean, s.variance]))
    const logits = out.logits
    return {
      logits: tf.tensor4d(logits.data, logits.dims as [number, number, number, number]),
      stats,
      backward: async (dLogits) => {
        try {
          const d = (await dLogits.data()) as Float32Array
          const grads = gs.backward.run(
            Object.fromEntries([
              ['dlogits', feed(d, dLogits.shape)],
              ['image', imageFeed],
              ...gs.kernels.map(weightFeed),
              ...masks,
              ...gs.saved.map((name) => [name, feed(out[name].data, out[name].dims)]),
            ]),
            Object.fromEntries(gs.gradients.map((name) => [`grad.${name}`, null])),
            {},
          )
          return Object.fromEntries([
            ...gs.gradients.map((name) => [
              name,
              tf.tensor(grads[`grad.${name}`].data, [...(shapes.get(name) as Dims)]),
            ]),
            ...gs.cancelled.map((name) => [name, tf.zeros([...(shapes.get(name) as Dims)])]),
          ])
        } finally {
          freeStats()
        }
      },
    }
  }

  return E.right({
    inference: ortInference(ort, spec, threads),
    forward: async (params: Params, images, seeds) => {
      const weights = new Map(
        parameterShapes(spec).map((p) => [p.name, params[p.name].dataSync() as Float32Array]),
      )
      return images.map((image, i) => pass(weights, image, seeds[i]))
    },
    close: async () => {
      for (const g of geometries.values()) [g.forward, g.backward].forEach((s) => s.dispose())
      geometries.clear()
    },
  })
}

/**
 * Validation on onnxruntime: the weights exported as `maco export` writes them (batch norm
 * folded into the convs) and run as `maco predict` runs a model in Node, so the in-run
 * validation scores what the exported checkpoint will predict.
 */
export const ortInference =
  (ort: NativeOrt, spec: UNetSpec, threads: number) =>
  async (params: Params): Promise<Inference> => {
    const session = openSession(ort, exportOnnx(spec, await fromParams(spec, params)), threads)
    return {
      probabilities: async (slices, dims) =>
        session.run({ [INPUT_NAME]: ort.tensor(slices, dims) }, { [PROBABILITIES_NAME]: null }, {})[
          PROBABILITIES_NAME
        ].data,
      release: () => session.dispose(),
    }
  }
