/**
 * The ONNX graphs of one training pass of the UNet, built from its op program (`unetSpec`)
 * in NCHW: the forward pass of `forwardTrain` (tfjs-unet.ts) with batch norm in training
 * mode and dropout masks as inputs, and its hand-written backward, op for op. `ort-passes.ts`
 * runs them on onnxruntime.
 *
 * The backward, per op (x the input, g the gradient of the output, sums over batch and space):
 * - conv: the filter gradient as one MatMul per kernel tap over a contiguous range of the
 *   padded grid (as ort-kernels.ts, per image, then summed over the batch); the input
 *   gradient as a conv with the turned, transposed kernel; a bias before a batch norm cancels
 *   in training, so its gradient is 0 (as in tfjs-unet.ts);
 * - batch norm: dz = scale (g - mean(g) - xhat mean(g xhat)), xhat = centred * invStd;
 * - LeakyReLU: g * (out > 0 ? 1 : slope); dropout: g * mask;
 * - max pool: g routed to the first maximum of each window (recomputed from x, as
 *   wasm-kernels.ts picks it; `maxPoolBackward`);
 * - bilinear x2 (align corners): the transposed interpolation matrices, U_h^T g U_w;
 * - concat: the channel ranges of g; a saved skip adds the gradient that comes back to it.
 *
 * @example
 * const f = forwardGraph(spec, [4, 128, 128])  // f.model: the encoded forward graph
 * const b = backwardGraph(spec, f)             // b.model reads f.saved, f's masks, b.kernels
 */
import { compile, type Step } from '../model/tfjs-unet.ts'
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
import { shapesByName, type UNetSpec } from '../model/unet.ts'
import { floats, graph, int64s } from './ort-native.ts'

export type Dims = readonly number[]

/** An ONNX graph under construction, its values named `prefix` and a counter. */
export const builder = (prefix: string) => {
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
export type Builder = ReturnType<typeof builder>

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
 * The gradient of a 2 x 2, stride 2 max pool of `x` (NCHW `[n, c, h, w]`): `g` goes to the
 * first maximum of each window in row-major order, as onnxruntime's and tfjs's argmax pick
 * it. Made of reshapes, a transpose and element-wise ops rather than MaxPool's indices and
 * MaxUnpool, which onnxruntime's WebGPU provider does not have: the four values of a window
 * side by side on an axis, the maxima on it marked, and of those the one of highest priority
 * (8, 4, 2, 1 in row-major order) kept.
 */
export const maxPoolBackward = (b: Builder, x: string, g: string, [n, c, h, w]: Dims): string => {
  const [hh, hw] = [h / 2, w / 2]
  // [n, c, h/2, 2, w/2, 2] <-> [n, 2, 2, c, h/2, w/2]: a window's row and column offsets first.
  const windows = b.op1('Reshape', [
    b.op1(
      'Transpose',
      [b.op1('Reshape', [x, b.longs([n, c, hh, 2, hw, 2])])],
      [ints('perm', [0, 3, 5, 1, 2, 4])],
    ),
    b.longs([n, 4, c, hh, hw]),
  ])
  const along = [ints('axes', [1]), int('keepdims', 1)]
  const isMax = b.op1(
    'Cast',
    [b.op1('Equal', [windows, b.op1('ReduceMax', [windows], along)])],
    [int('to', 1)],
  )
  const priority = b.op1('Mul', [isMax, b.constant(Float32Array.of(8, 4, 2, 1), [4, 1, 1, 1])])
  const first = b.op1('Equal', [priority, b.op1('ReduceMax', [priority], along)])
  const routed = b.op1('Where', [
    first,
    b.op1('Reshape', [g, b.longs([n, 1, c, hh, hw])]),
    b.constant(Float32Array.of(0), []),
  ])
  return b.op1('Reshape', [
    b.op1(
      'Transpose',
      [b.op1('Reshape', [routed, b.longs([n, 2, 2, c, hh, hw])])],
      [ints('perm', [0, 3, 4, 1, 5, 2])],
    ),
    b.longs([n, c, h, w]),
  ])
}

/** Per step of the op program, the forward values its backward reads. */
interface Tape {
  /** The step's input (a unit's or a max pool's). */
  x?: string
  /** Batch norm: the centred conv output, 1 / std and gamma / std. */
  centred?: string
  invStd?: string
  scale?: string
  /** The LeakyReLU's output (after dropout), whose sign picks the slope. */
  out?: string
  /** The dropout mask input. */
  mask?: string
}

/** A value the forward put on the tape for this step (a broken program otherwise). */
const taped = (tape: Tape, what: keyof Tape): string => {
  const value = tape[what]
  if (value === undefined) throw new Error(`the forward kept no '${what}' for this step`)
  return value
}

/** A dropout mask the forward and backward read: its NCHW shape and rate. */
export interface MaskInput {
  readonly name: string
  readonly shape: Dims
  readonly rate: number
}

export interface ForwardGraph {
  readonly model: Uint8Array
  readonly dims: Dims
  readonly steps: readonly Step[]
  readonly tapes: readonly Tape[]
  /** The NCHW shape of each step's input. */
  readonly shapeAt: readonly Dims[]
  /** Per concat step, the channels of its skip. */
  readonly concatSkip: readonly number[]
  /** The value the image becomes (NCHW): the backward makes its own, it is not saved. */
  readonly image: string
  /** Forward outputs the backward reads, by name, with their shapes. */
  readonly saved: ReadonlyMap<string, Dims>
  /** Per dropout unit in program order. */
  readonly masks: readonly MaskInput[]
  /** The batch norms, whose batch statistics the forward returns (`${bn}.mean`, `.variance`). */
  readonly batchNorms: readonly string[]
  /** Weights the forward reads. */
  readonly weights: readonly string[]
  /** Conv biases before a batch norm: their gradient is exactly 0. */
  readonly cancelled: readonly string[]
}

export interface BackwardGraph {
  readonly model: Uint8Array
  /** Kernels the backward reads (the input gradients'). */
  readonly kernels: readonly string[]
  /** The weights whose gradients it gives, as outputs `grad.${name}`. */
  readonly gradients: readonly string[]
}

/**
 * Training-mode batch norm of `z` (NCHW, `c` channels over `count` values each): the
 * normalised output, its batch mean and unbiased variance as graph outputs (the cancelled
 * conv bias, when there is one, belongs to the mean, as PyTorch's running mean has it), and
 * what its backward reads.
 */
const batchNorm = (
  f: Builder,
  z: string,
  [c, count]: readonly [number, number],
  bn: string,
  weight: (name: string) => string,
  bias: string | undefined,
  epsilon: number,
) => {
  const mean = f.op1('ReduceMean', [z], [ints('axes', ALL_BUT_CHANNELS)])
  const centred = f.op1('Sub', [z, mean])
  const variance = f.op1(
    'ReduceMean',
    [f.op1('Mul', [centred, centred])],
    [ints('axes', ALL_BUT_CHANNELS)],
  )
  const eps = f.constant(Float32Array.of(epsilon), [])
  const invStd = f.op1('Reciprocal', [f.op1('Sqrt', [f.op1('Add', [variance, eps])])])
  const perChannel = f.longs([1, c, 1, 1])
  const scale = f.op1('Mul', [f.op1('Reshape', [weight(`${bn}.gamma`), perChannel]), invStd])
  const out = f.op1('Add', [
    f.op1('Mul', [centred, scale]),
    f.op1('Reshape', [weight(`${bn}.beta`), perChannel]),
  ])
  const flat = f.longs([c])
  const batchMean = f.op1('Reshape', [mean, flat])
  if (bias) f.named('Add', [batchMean, bias], `${bn}.mean`)
  else f.named('Identity', [batchMean], `${bn}.mean`)
  const unbiased = f.constant(Float32Array.of(count / Math.max(count - 1, 1)), [])
  f.named('Mul', [f.op1('Reshape', [variance, flat]), unbiased], `${bn}.variance`)
  return { out, centred, invStd, scale }
}

/** The forward graph of a batch of `n` images of `h` x `w` (inputs NHWC, as tfjs's). */
export const forwardGraph = (spec: UNetSpec, [n, h, w]: Dims): ForwardGraph => {
  const { leakySlope, bnEpsilon, inChannels, classes } = spec.options
  const shapes = shapesByName(spec)
  const steps = compile(spec.ops)
  const f = builder('f')
  const weights = new Set<string>()
  const weight = (name: string) => {
    weights.add(name)
    return name
  }
  const masks: MaskInput[] = []
  const batchNorms: string[] = []
  const cancelled: string[] = []
  const tapes: Tape[] = []
  const concatSkip: number[] = []
  const shapeAt: Dims[] = []
  const slots = new Map<string, { name: string; channels: number }>()

  const image = f.op1('Transpose', ['image'], [ints('perm', [0, 3, 1, 2])])
  let current = image
  let shape: Dims = [n, inChannels, h, w]
  steps.forEach((s, i) => {
    shapeAt[i] = shape
    const tape: Tape = {}
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
        const bias = s.conv ? weight(`${s.conv.name}.bias`) : undefined
        const count = n * shape[2] * shape[3]
        const normed = batchNorm(f, z, [c, count], s.batchNorm.name, weight, bias, bnEpsilon)
        batchNorms.push(s.batchNorm.name)
        z = normed.out
        Object.assign(tape, { centred: normed.centred, invStd: normed.invStd, scale: normed.scale })
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

  const saved = savedValues(steps, tapes, shapeAt, image, n)
  const model = graph(
    f.nodes,
    f.initializers,
    [
      tensorInfo('image', [n, h, w, inChannels]),
      ...[...weights].map((name) => tensorInfo(name, shapes.get(name) as Dims)),
      ...masks.map((m) => tensorInfo(m.name, m.shape)),
    ],
    [
      tensorInfo('logits', [n, h, w, classes]),
      ...[...saved].map(([name, dims]) => tensorInfo(name, dims)),
      ...batchNorms.flatMap((bn) => {
        const c = (shapes.get(`${bn}.gamma`) as Dims)[0]
        return [tensorInfo(`${bn}.mean`, [c]), tensorInfo(`${bn}.variance`, [c])]
      }),
    ],
  )
  return {
    model,
    dims: [n, h, w],
    steps,
    tapes,
    shapeAt,
    concatSkip,
    image,
    saved,
    masks,
    batchNorms,
    weights: [...weights],
    cancelled,
  }
}

/** The forward values the backward reads, with their shapes (its inputs need them). */
const savedValues = (
  steps: readonly Step[],
  tapes: readonly Tape[],
  shapeAt: readonly Dims[],
  image: string,
  n: number,
): Map<string, Dims> => {
  const saved = new Map<string, Dims>()
  steps.forEach((s, i) => {
    const tape = tapes[i]
    const at = shapeAt[i]
    if (tape.x && tape.x !== image) saved.set(tape.x, at)
    if (!('kind' in s)) return
    const out: Dims = [n, s.conv ? s.conv.outChannels : at[1], at[2], at[3]]
    if (s.batchNorm) {
      saved.set(taped(tape, 'centred'), out)
      saved.set(taped(tape, 'invStd'), [1, out[1], 1, 1])
      saved.set(taped(tape, 'scale'), [1, out[1], 1, 1])
    }
    if (tape.out) saved.set(tape.out, out)
  })
  return saved
}

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

/**
 * The batch norm's backward: the gradients of gamma and beta (through `gradient`) and the
 * gradient of its input, for g of `shape`.
 */
const batchNormBackward = (
  b: Builder,
  g: string,
  shape: Dims,
  bn: string,
  { centred, invStd, scale }: Required<Pick<Tape, 'centred' | 'invStd' | 'scale'>>,
  gradient: (name: string, value: string) => void,
) => {
  const c = shape[1]
  const count = b.constant(Float32Array.of(shape[0] * shape[2] * shape[3]), [])
  const sumG = channelSum(b, g, true)
  const sumGCentred = channelSum(b, b.op1('Mul', [g, centred]), true)
  gradient(`${bn}.gamma`, b.op1('Reshape', [b.op1('Mul', [sumGCentred, invStd]), b.longs([c])]))
  gradient(`${bn}.beta`, b.op1('Reshape', [sumG, b.longs([c])]))
  const onCentred = b.op1('Neg', [
    b.op1('Mul', [
      b.op1('Mul', [scale, b.op1('Mul', [invStd, invStd])]),
      b.op1('Div', [sumGCentred, count]),
    ]),
  ])
  const constant = b.op1('Neg', [b.op1('Mul', [scale, b.op1('Div', [sumG, count])])])
  return b.op1('Add', [
    b.op1('Add', [b.op1('Mul', [g, scale]), constant]),
    b.op1('Mul', [centred, onCentred]),
  ])
}

/** The gradient of a 'same' conv's input: a conv with the kernel turned by 180 degrees, in and out swapped. */
const convInputGradient = (b: Builder, g: string, kernelName: string, kernel: number) => {
  const swapped = b.op1('Transpose', [kernelName], [ints('perm', [2, 3, 0, 1])])
  const turned = b.op1('Slice', [
    swapped,
    b.longs([-1, -1]),
    b.longs([-(kernel + 1), -(kernel + 1)]),
    b.longs([2, 3]),
    b.longs([-1, -1]),
  ])
  return b.op1('Conv', [g, turned], [samePads(kernel)])
}

/** The backward graph of `forward`: dL/dlogits (NHWC) in, a gradient per trainable weight out. */
export const backwardGraph = (spec: UNetSpec, forward: ForwardGraph): BackwardGraph => {
  const { leakySlope, inChannels, classes } = spec.options
  const [n, h, w] = forward.dims
  const { steps, tapes, shapeAt, image } = forward
  const shapes = shapesByName(spec)
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
        const kept = {
          centred: taped(tape, 'centred'),
          invStd: taped(tape, 'invStd'),
          scale: taped(tape, 'scale'),
        }
        g = batchNormBackward(b, g, gShape, s.batchNorm.name, kept, gradient)
      }
      if (s.conv) {
        const { name, kernel, inChannels: ci, outChannels: co } = s.conv
        const input = taped(tape, 'x')
        const x =
          input === image ? b.op1('Transpose', ['image'], [ints('perm', [0, 3, 1, 2])]) : input
        gradient(`${name}.kernel`, filterGradient(b, x, g, kernel, at, co))
        if (!s.batchNorm) gradient(`${name}.bias`, channelSum(b, g))
        if (input !== image) {
          kernelsRead.add(`${name}.kernel`)
          g = convInputGradient(b, g, `${name}.kernel`, kernel)
        }
        gShape = [n, ci, at[2], at[3]]
      }
    } else if (s.op === 'maxPool') {
      g = maxPoolBackward(b, taped(tape, 'x'), g, at)
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
      const skip = forward.concatSkip[i]
      const axis = b.longs([1])
      pending.set(s.slot, b.op1('Slice', [g, b.longs([0]), b.longs([skip]), axis]))
      g = b.op1('Slice', [g, b.longs([skip]), b.longs([gShape[1]]), axis])
      gShape = at
    } else {
      const skip = pending.get(s.slot)
      if (skip) g = b.op1('Add', [g, skip])
    }
  }
  const model = graph(
    b.nodes,
    b.initializers,
    [
      tensorInfo('dlogits', [n, h, w, classes]),
      tensorInfo('image', [n, h, w, inChannels]),
      ...[...kernelsRead].map((name) => tensorInfo(name, shapes.get(name) as Dims)),
      ...forward.masks.map((m) => tensorInfo(m.name, m.shape)),
      ...[...forward.saved].map(([name, dims]) => tensorInfo(name, dims)),
    ],
    gradOutputs,
  )
  return {
    model,
    kernels: [...kernelsRead],
    gradients: gradOutputs.map((o) => o.name.slice('grad.'.length)),
  }
}
