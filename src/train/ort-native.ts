/**
 * onnxruntime-node's native binding, used directly by the training engine: its own
 * `run` is synchronous (the package's public `run` only defers it with setImmediate),
 * which a tfjs kernel needs, and its sessions load models built here in memory. Also the
 * few helpers that build those small ONNX graphs (opset 17).
 *
 * @example
 * const ort = loadNative()              // Either<string, NativeOrt>
 * const session = openSession(ort.right, graph([node('Relu', ['x'], 'y')], [], [x], [y]), 1)
 * session.run({ x: ort.right.tensor(data, dims) }, { y: null }, {}).y.data
 */
import * as E from 'fp-ts/lib/Either.js'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import {
  DataType,
  encodeModel,
  type AttributeProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from '../model/onnx-proto.ts'
import { installed } from '../util/installed.ts'
import { errorLine } from '../util/error-line.ts'

export interface NativeTensor {
  readonly data: Float32Array
  readonly dims: readonly number[]
}

export interface NativeSession {
  loadModel(buffer: ArrayBuffer, byteOffset: number, byteLength: number, options: object): void
  run(
    feeds: Record<string, unknown>,
    /** null: onnxruntime allocates the output; a tensor: it is written there. */
    fetches: Record<string, unknown>,
    options: object,
  ): Record<string, NativeTensor>
  /** Writes the profile of a session opened with `enableProfiling`. */
  endProfiling(): void
  dispose(): void
}

export interface NativeOrt {
  readonly newSession: () => NativeSession
  readonly tensor: (data: Float32Array, dims: readonly number[]) => unknown
}

const PACKAGE = 'onnxruntime-node'
const require = createRequire(import.meta.url)
let native: NativeOrt | undefined

/** onnxruntime-node's binding, loaded once; Left says in one line why it cannot be. */
export const loadNative = (): E.Either<string, NativeOrt> => {
  if (native) return E.right(native)
  if (!installed(PACKAGE)) return E.left(`${PACKAGE} is not installed (npm i ${PACKAGE})`)
  try {
    const bindingFile = join(dirname(require.resolve(PACKAGE)), 'binding.js')
    const own = createRequire(bindingFile)
    const { binding, initOrt } = own(bindingFile) as {
      binding: { InferenceSession: new () => NativeSession }
      initOrt: () => void
    }
    // The binding makes its outputs with the Tensor of its own onnxruntime-common.
    const { Tensor } = own('onnxruntime-common') as {
      Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => unknown
    }
    initOrt()
    native = {
      newSession: () => new binding.InferenceSession(),
      tensor: (data, dims) => new Tensor('float32', data, dims),
    }
    return E.right(native)
  } catch (e) {
    return E.left(`${PACKAGE} failed to load: ${errorLine(e)}`)
  }
}

/**
 * A session of `model` on `threads` intra-op threads, fully optimised, run sequentially;
 * `options` adds session options (bench/ort-profile.ts: onnxruntime's per-node profile).
 */
export const openSession = (
  ort: NativeOrt,
  model: Uint8Array,
  threads: number,
  options: object = {},
): NativeSession => {
  const session = ort.newSession()
  session.loadModel(model.buffer as ArrayBuffer, model.byteOffset, model.byteLength, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    ...options,
  })
  return session
}

export const int64s = (name: string, values: readonly number[]): TensorProto => {
  const raw = new Uint8Array(values.length * 8)
  const view = new DataView(raw.buffer)
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true))
  return { name, dims: [values.length], dataType: DataType.INT64, rawData: raw }
}

export const floats = (
  name: string,
  dims: readonly number[],
  values: Float32Array,
): TensorProto => ({
  name,
  dims,
  dataType: DataType.FLOAT,
  rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
})

export const node = (
  opType: string,
  input: readonly string[],
  output: string,
  attribute: readonly AttributeProto[] = [],
): NodeProto => ({ name: output, opType, input, output: [output], attribute })

/** An opset-17 model of one graph. */
export const graph = (
  nodes: readonly NodeProto[],
  initializer: readonly TensorProto[],
  input: readonly ValueInfoProto[],
  output: readonly ValueInfoProto[],
): Uint8Array =>
  encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: { name: 'graph', node: nodes, initializer, input, output },
  })
