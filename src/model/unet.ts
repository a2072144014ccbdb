/**
 * The UNet as data: a straight-line program of named ops that both the tfjs builder
 * (training) and the ONNX emitter (serving) interpret, so the two cannot drift apart.
 *
 * The default is the 2D UNet of Baumgartner et al. as WSL4MIS uses it: 5 levels,
 * channels base x (1, 2, 4, 8, 16), block = conv3x3-BN-LeakyReLU-dropout-conv3x3-BN-LeakyReLU,
 * max-pool down; decoder = conv1x1 halving channels, bilinear x2 upsample (align corners),
 * concat [skip, upsampled], block without dropout; output conv3x3 to the classes.
 * 1,813,764 parameters for 1 input channel and 4 classes.
 *
 * Weight layout is tfjs's: conv kernels [kh, kw, in, out]; batch norm gamma, beta,
 * moving mean and variance per channel.
 *
 * @example
 * const spec = unetSpec({ classes: 4 })
 * parameterCount(spec) // 1813764
 */
import { elementCount } from '../util/shape.ts'

export interface UNetOptions {
  readonly inChannels: number
  readonly classes: number
  /** Channels of the first level; level l has base * 2^l. */
  readonly base: number
  readonly levels: number
  /** Dropout rate of each encoder level's block. */
  readonly dropout: readonly number[]
  readonly leakySlope: number
  readonly bnEpsilon: number
}

export const DEFAULT_UNET: UNetOptions = {
  inChannels: 1,
  classes: 4,
  base: 16,
  levels: 5,
  dropout: [0.05, 0.1, 0.2, 0.3, 0.5],
  leakySlope: 0.01,
  bnEpsilon: 1e-5,
}

export type UNetOp =
  | {
      readonly op: 'conv'
      readonly name: string
      readonly inChannels: number
      readonly outChannels: number
      readonly kernel: 1 | 3
    }
  | { readonly op: 'batchNorm'; readonly name: string; readonly channels: number }
  | { readonly op: 'leakyRelu' }
  | { readonly op: 'dropout'; readonly rate: number }
  | { readonly op: 'maxPool' }
  | { readonly op: 'upsample' }
  /** Remember the current tensor under `slot` (an encoder skip). */
  | { readonly op: 'save'; readonly slot: string }
  /** Current = concat([slot, current]) along channels. */
  | { readonly op: 'concat'; readonly slot: string }

export interface UNetSpec {
  readonly options: UNetOptions
  readonly ops: readonly UNetOp[]
}

export interface ParameterShape {
  readonly name: string
  readonly shape: readonly number[]
  /** Batch-norm moving statistics are state, not trained by the optimizer. */
  readonly trainable: boolean
}

const block = (name: string, inCh: number, outCh: number, dropout: number): UNetOp[] => [
  { op: 'conv', name: `${name}.conv1`, inChannels: inCh, outChannels: outCh, kernel: 3 },
  { op: 'batchNorm', name: `${name}.bn1`, channels: outCh },
  { op: 'leakyRelu' },
  ...(dropout > 0 ? [{ op: 'dropout', rate: dropout } as const] : []),
  { op: 'conv', name: `${name}.conv2`, inChannels: outCh, outChannels: outCh, kernel: 3 },
  { op: 'batchNorm', name: `${name}.bn2`, channels: outCh },
  { op: 'leakyRelu' },
]

export const unetSpec = (partial: Partial<UNetOptions> = {}): UNetSpec => {
  const options = { ...DEFAULT_UNET, ...partial }
  const { levels, base } = options
  if (options.dropout.length !== levels)
    throw new RangeError(
      `dropout needs one rate per level (${levels}), got ${options.dropout.length}`,
    )
  const ch = (l: number) => base * 2 ** l
  const ops: UNetOp[] = []
  for (let l = 0; l < levels; l++) {
    if (l > 0) ops.push({ op: 'maxPool' })
    ops.push(
      ...block(`enc${l}`, l === 0 ? options.inChannels : ch(l - 1), ch(l), options.dropout[l]),
    )
    if (l < levels - 1) ops.push({ op: 'save', slot: `skip${l}` })
  }
  for (let l = levels - 2; l >= 0; l--) {
    ops.push({
      op: 'conv',
      name: `dec${l}.reduce`,
      inChannels: ch(l + 1),
      outChannels: ch(l),
      kernel: 1,
    })
    ops.push({ op: 'upsample' })
    ops.push({ op: 'concat', slot: `skip${l}` })
    ops.push(...block(`dec${l}`, 2 * ch(l), ch(l), 0))
  }
  ops.push({ op: 'conv', name: 'out', inChannels: base, outChannels: options.classes, kernel: 3 })
  return { options, ops }
}

export const parameterShapes = (spec: UNetSpec): ParameterShape[] =>
  spec.ops.flatMap((o): ParameterShape[] =>
    o.op === 'conv'
      ? [
          {
            name: `${o.name}.kernel`,
            shape: [o.kernel, o.kernel, o.inChannels, o.outChannels],
            trainable: true,
          },
          { name: `${o.name}.bias`, shape: [o.outChannels], trainable: true },
        ]
      : o.op === 'batchNorm'
        ? [
            { name: `${o.name}.gamma`, shape: [o.channels], trainable: true },
            { name: `${o.name}.beta`, shape: [o.channels], trainable: true },
            { name: `${o.name}.movingMean`, shape: [o.channels], trainable: false },
            { name: `${o.name}.movingVariance`, shape: [o.channels], trainable: false },
          ]
        : [],
  )

/** Each parameter's shape by its name. */
export const shapesByName = (spec: UNetSpec): Map<string, readonly number[]> =>
  new Map(parameterShapes(spec).map((p) => [p.name, p.shape]))

/** Trainable parameters, as PyTorch counts them (moving statistics excluded). */
export const parameterCount = (spec: UNetSpec): number =>
  parameterShapes(spec)
    .filter((p) => p.trainable)
    .reduce((n, p) => n + elementCount(p.shape), 0)

/** Named weights, in the layout of `parameterShapes`. */
export type UNetWeights = Readonly<Record<string, Float32Array>>

/** The spatial size must be divisible by this for the pooling pyramid to line up. */
export const sizeMultiple = (spec: UNetSpec): number => 2 ** (spec.options.levels - 1)
