/**
 * Weights back from an ONNX file that `exportOnnx` wrote, so a shipped model can be
 * fine-tuned. The file holds batch norm folded into the convs, so the weights come back as
 * the folded conv kernels (HWIO again) and biases with an identity batch norm:
 *
 *   gamma = 1, beta = 0, movingMean = 0, movingVariance = fround(1 - eps)
 *
 * With that variance, gamma / sqrt(variance + eps) differs from 1 by at most 2^-26 (the
 * float32 rounding of 1 - eps), under half a float32 ulp of any value, so exporting the
 * imported weights again rounds every folded value back to itself: ONNX -> weights -> ONNX
 * gives identical bytes.
 *
 * @example
 * pipe(importOnnxWeights(bytes, unetSpec()), E.map((weights) => exportOnnx(spec, weights)))
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import { forEachKernelIndex } from './onnx-export.ts'
import { decodeModel, DataType, type ModelProto, type TensorProto } from './onnx-proto.ts'
import type { UNetSpec, UNetWeights } from './unet.ts'
import { elementCount } from '../util/shape.ts'

const decode = (bytes: Uint8Array): E.Either<string, ModelProto> =>
  E.tryCatch(
    () => decodeModel(bytes),
    (e) => `not an ONNX model (${e instanceof Error ? e.message : String(e)})`,
  )

const floats = (t: TensorProto): E.Either<string, Float32Array> => {
  if (t.dataType !== DataType.FLOAT) return E.left(`initializer '${t.name}' is not float32`)
  const n = elementCount(t.dims)
  const raw = t.rawData
  if (raw !== undefined && raw.length > 0) {
    if (raw.length !== n * 4)
      return E.left(`initializer '${t.name}' has ${raw.length} bytes, dims need ${n * 4}`)
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
    return E.right(Float32Array.from({ length: n }, (_, i) => view.getFloat32(i * 4, true)))
  }
  const data = t.floatData ?? []
  return data.length === n
    ? E.right(Float32Array.from(data))
    : E.left(`initializer '${t.name}' has ${data.length} values, dims need ${n}`)
}

const sameDims = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((v, i) => v === b[i])

/** The UNet weights stored in `bytes`, or why the file does not fit `spec`. */
export const importOnnxWeights = (
  bytes: Uint8Array,
  spec: UNetSpec,
): E.Either<string, UNetWeights> => {
  const model = decode(bytes)
  if (E.isLeft(model)) return model
  const initializers = new Map((model.right.graph?.initializer ?? []).map((t) => [t.name, t]))
  const tensor = (name: string, dims: readonly number[]): E.Either<string, Float32Array> => {
    const t = initializers.get(name)
    if (t === undefined) return E.left(`the model has no initializer '${name}'`)
    if (!sameDims(t.dims, dims))
      return E.left(
        `initializer '${name}' has dims [${t.dims.join(', ')}], the UNet expects [${dims.join(', ')}]`,
      )
    return floats(t)
  }
  const weights: Record<string, Float32Array> = {}
  const eps = spec.options.bnEpsilon
  for (const op of spec.ops) {
    if (op.op === 'conv') {
      const { name, kernel: k, inChannels: ci, outChannels: co } = op
      const oihw = tensor(`${name}.weight`, [co, ci, k, k])
      if (E.isLeft(oihw)) return oihw
      const bias = tensor(`${name}.bias`, [co])
      if (E.isLeft(bias)) return bias
      const hwio = new Float32Array(oihw.right.length)
      forEachKernelIndex(k, ci, co, (h, q) => void (hwio[h] = oihw.right[q]))
      weights[`${name}.kernel`] = hwio
      weights[`${name}.bias`] = bias.right
    } else if (op.op === 'batchNorm') {
      weights[`${op.name}.gamma`] = new Float32Array(op.channels).fill(1)
      weights[`${op.name}.beta`] = new Float32Array(op.channels)
      weights[`${op.name}.movingMean`] = new Float32Array(op.channels)
      weights[`${op.name}.movingVariance`] = new Float32Array(op.channels).fill(1 - eps)
    }
  }
  return E.right(weights)
}

/** The file's metadata_props (where the model card may travel), or why the bytes are not a model. */
export const onnxMetadata = (
  bytes: Uint8Array,
): E.Either<string, Readonly<Record<string, string>>> =>
  pipe(
    decode(bytes),
    E.map((m) => Object.fromEntries((m.metadataProps ?? []).map((p) => [p.key, p.value]))),
  )
