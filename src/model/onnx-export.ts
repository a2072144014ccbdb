/**
 * ONNX export of a UNet, written by code from the same op program (`unetSpec`) that builds
 * the tfjs model, so the served graph is the trained graph op for op.
 *
 * Inference form: each batch norm is folded into the conv before it, with the moving
 * statistics (w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps)
 * + beta, computed in float64 and rounded once to float32); dropout is left out. Input
 * `image` float32 [N, inChannels, H, W] with N, H, W dynamic (H and W multiples of
 * `sizeMultiple(spec)`); outputs `logits` and `probabilities` (Softmax over axis 1), both
 * [N, classes, H, W]. Conv kernels are stored OIHW (tfjs keeps HWIO) as initializers named
 * `<conv name>.weight` and `<conv name>.bias`, raw little-endian float32.
 *
 * `metadata` lands in the model's metadata_props (the model card JSON goes there).
 *
 * @example
 * const spec = unetSpec()
 * const bytes = exportOnnx(spec, weights, { opset: 17, metadata: { 'maco.modelCard': json } })
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import {
  parameterShapes,
  sizeMultiple,
  type UNetOp,
  type UNetSpec,
  type UNetWeights,
} from './unet.ts'
import {
  DataType,
  encodeModel,
  float,
  int,
  ints,
  string,
  tensorInfo,
  type AttributeProto,
  type NodeProto,
  type TensorProto,
} from './onnx-proto.ts'
import { elementCount } from '../util/shape.ts'

export interface ExportOptions {
  /** ONNX opset; every op used keeps the same semantics from 17 through 21. */
  readonly opset?: number
  readonly metadata?: Readonly<Record<string, string>>
}

export const IR_VERSION = 8
export const INPUT_NAME = 'image'
export const LOGITS_NAME = 'logits'
export const PROBABILITIES_NAME = 'probabilities'
const SCALES_NAME = 'upsample.scales'

/** Every parameter of `spec` present with its shape's element count, else why not. */
export const checkWeights = (
  spec: UNetSpec,
  weights: UNetWeights,
): E.Either<string, UNetWeights> => {
  for (const { name, shape } of parameterShapes(spec)) {
    const w = weights[name]
    const n = elementCount(shape)
    if (w === undefined) return E.left(`missing weight '${name}'`)
    if (w.length !== n)
      return E.left(
        `weight '${name}' has ${w.length} values, shape [${shape.join(', ')}] needs ${n}`,
      )
  }
  return E.right(weights)
}

export const floatTensor = (
  name: string,
  dims: readonly number[],
  data: Float32Array,
): TensorProto => {
  const raw = new Uint8Array(data.length * 4)
  const view = new DataView(raw.buffer)
  data.forEach((v, i) => view.setFloat32(i * 4, v, true))
  return { name, dims, dataType: DataType.FLOAT, rawData: raw }
}

/**
 * Visits a k x k conv kernel's elements with their indices in tfjs's HWIO layout and in
 * ONNX's OIHW layout (and the output channel), to copy between the two.
 */
export const forEachKernelIndex = (
  k: number,
  ci: number,
  co: number,
  f: (hwio: number, oihw: number, o: number) => void,
): void => {
  for (let o = 0; o < co; o++)
    for (let i = 0; i < ci; i++)
      for (let y = 0; y < k; y++)
        for (let x = 0; x < k; x++)
          f(((y * k + x) * ci + i) * co + o, ((o * ci + i) * k + y) * k + x, o)
}

/** The batch norm applied after a conv, as a per-channel scale and shift. */
interface Affine {
  readonly scale: Float64Array
  readonly shift: Float64Array
}

const batchNormAffine = (name: string, weights: UNetWeights, eps: number): Affine => {
  const gamma = weights[`${name}.gamma`]
  const beta = weights[`${name}.beta`]
  const mean = weights[`${name}.movingMean`]
  const variance = weights[`${name}.movingVariance`]
  const scale = Float64Array.from(gamma, (g, c) => g / Math.sqrt(variance[c] + eps))
  return { scale, shift: Float64Array.from(beta, (b, c) => b - mean[c] * scale[c]) }
}

/** Conv weights in ONNX layout with the following batch norm (if any) folded in. */
const foldedConv = (
  op: Extract<UNetOp, { op: 'conv' }>,
  weights: UNetWeights,
  bn: Affine | undefined,
): TensorProto[] => {
  const { kernel: k, inChannels: ci, outChannels: co, name } = op
  const hwio = weights[`${name}.kernel`]
  const bias = weights[`${name}.bias`]
  const scale = (o: number) => (bn === undefined ? 1 : bn.scale[o])
  const oihw = new Float32Array(hwio.length)
  forEachKernelIndex(k, ci, co, (h, q, o) => void (oihw[q] = hwio[h] * scale(o)))
  const b = Float32Array.from(bias, (v, o) =>
    bn === undefined ? v : v * bn.scale[o] + bn.shift[o],
  )
  return [floatTensor(`${name}.weight`, [co, ci, k, k], oihw), floatTensor(`${name}.bias`, [co], b)]
}

interface Graph {
  readonly nodes: NodeProto[]
  readonly initializers: TensorProto[]
}

/** Nodes and initializers of the op program; the last node's output is the current tensor. */
const emit = (spec: UNetSpec, weights: UNetWeights): Graph => {
  const { ops, options } = spec
  const nodes: NodeProto[] = []
  const initializers: TensorProto[] = spec.ops.some((o) => o.op === 'upsample')
    ? [floatTensor(SCALES_NAME, [4], Float32Array.of(1, 1, 2, 2))]
    : []
  const slots = new Map<string, string>()
  let current = INPUT_NAME
  const node = (
    name: string,
    opType: string,
    input: string[],
    attribute: AttributeProto[] = [],
  ) => {
    nodes.push({ name, opType, input, output: [name], attribute })
    current = name
  }
  ops.forEach((op, index) => {
    switch (op.op) {
      case 'conv': {
        const next = ops[index + 1]
        const bn =
          next?.op === 'batchNorm'
            ? batchNormAffine(next.name, weights, options.bnEpsilon)
            : undefined
        initializers.push(...foldedConv(op, weights, bn))
        const pad = (op.kernel - 1) / 2
        node(
          op.name,
          'Conv',
          [current, `${op.name}.weight`, `${op.name}.bias`],
          [
            ints('kernel_shape', [op.kernel, op.kernel]),
            ints('pads', [pad, pad, pad, pad]),
            ints('strides', [1, 1]),
          ],
        )
        return
      }
      case 'batchNorm':
        if (ops[index - 1]?.op !== 'conv')
          throw new RangeError(`batch norm '${op.name}' must follow a conv to be folded`)
        return
      case 'dropout':
        return
      case 'leakyRelu':
        return node(
          `${current}.leakyRelu`,
          'LeakyRelu',
          [current],
          [float('alpha', options.leakySlope)],
        )
      case 'maxPool':
        return node(
          `${current}.maxPool`,
          'MaxPool',
          [current],
          [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])],
        )
      case 'upsample':
        return node(
          `${current}.upsample`,
          'Resize',
          [current, '', SCALES_NAME],
          [string('mode', 'linear'), string('coordinate_transformation_mode', 'align_corners')],
        )
      case 'save':
        return void slots.set(op.slot, current)
      case 'concat': {
        const skip = slots.get(op.slot)
        if (skip === undefined)
          throw new RangeError(`concat reads slot '${op.slot}' before it is saved`)
        return node(`${current}.concat`, 'Concat', [skip, current], [int('axis', 1)])
      }
    }
  })
  return { nodes, initializers }
}

/** The ONNX file of `spec` with `weights`; throws a RangeError naming a missing or mis-shaped weight. */
export const exportOnnx = (
  spec: UNetSpec,
  weights: UNetWeights,
  exportOptions: ExportOptions = {},
): Uint8Array => {
  const { opset = 17, metadata = {} } = exportOptions
  if (!Number.isInteger(opset) || opset < 17 || opset > 21)
    throw new RangeError(`opset must be an integer from 17 to 21, got ${opset}`)
  pipe(
    checkWeights(spec, weights),
    E.getOrElseW((reason) => {
      throw new RangeError(reason)
    }),
  )
  const { nodes, initializers } = emit(spec, weights)
  const last = nodes[nodes.length - 1]
  const graphNodes: NodeProto[] = [
    ...nodes.slice(0, -1),
    { ...last, output: [LOGITS_NAME] },
    {
      name: PROBABILITIES_NAME,
      opType: 'Softmax',
      input: [LOGITS_NAME],
      output: [PROBABILITIES_NAME],
      attribute: [int('axis', 1)],
    },
  ]
  const { inChannels, classes } = spec.options
  return encodeModel({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: opset }],
    producerName: 'maco-toolkit',
    docString: `MaCo UNet: image [N, ${inChannels}, H, W] z-scored per slice, H and W multiples of ${sizeMultiple(spec)}`,
    graph: {
      name: 'unet',
      node: graphNodes,
      initializer: initializers,
      input: [tensorInfo(INPUT_NAME, ['N', inChannels, 'H', 'W'])],
      output: [
        tensorInfo(LOGITS_NAME, ['N', classes, 'H', 'W']),
        tensorInfo(PROBABILITIES_NAME, ['N', classes, 'H', 'W']),
      ],
    },
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  })
}
