/**
 * The one inference runtime interface: an ONNX session that takes image slices and gives
 * class probabilities, over onnxruntime-common's API, whichever runtime is underneath.
 *
 * - `web`: onnxruntime-web (WebAssembly). Runs everywhere: Workers, browsers, and Node as
 *   the fallback (in Node it loads its bundled wasm from node_modules, no network).
 * - `node`: onnxruntime-node (native CPU build), about 8x faster where it is installed.
 * - `auto` (default): `node` in Node when it loads, else `web`; `fallbackReason` says why.
 *
 * Like transformers.js, the runtime packages are isolated here. onnxruntime-node is
 * imported dynamically through a specifier bundlers do not follow, so this module bundles
 * for Workers; onnxruntime-web is imported lazily so Node never loads it when native runs.
 *
 * onnxruntime-web fixes its thread count when its wasm starts (the first web session of the
 * process); a later session asking for another count gets the first one, and `threads`
 * reports what it got. To serve the wasm from elsewhere (Workers), set `env.wasm.wasmPaths`
 * or `env.wasm.wasmBinary` of onnxruntime-web before the first `createSession`.
 *
 * @example
 * const session = await createSession(modelBytes, { runtime: 'auto', threads: 2 })
 * const { probabilities, dims } = await session.run(slice, [1, 1, 256, 256]) // dims [1, C, 256, 256]
 * await session.release()
 */
import type * as Ort from 'onnxruntime-common'
import { elementCount } from '../util/shape.ts'
import { errorLine } from '../util/error-line.ts'

export type RuntimeChoice = 'web' | 'node' | 'auto'
export type RuntimeName = 'onnxruntime-node' | 'onnxruntime-web'

export interface SessionOptions {
  readonly runtime?: RuntimeChoice
  /** Intra-op threads (default 1: predictable on a shared machine, and all that Workers offer). */
  readonly threads?: number
}

export interface Prediction {
  /** Softmax over classes, NCHW. */
  readonly probabilities: Float32Array
  /** [N, classes, H, W]. */
  readonly dims: readonly number[]
}

export interface Session {
  readonly runtimeName: RuntimeName
  /** Threads the runtime actually uses. */
  readonly threads: number
  /** Why `auto` did not get onnxruntime-node (absent when it did, or was not asked to). */
  readonly fallbackReason?: string
  /** `input` holds N x 1 x H x W float32 values, NCHW; H and W multiples of the model's size multiple. */
  readonly run: (
    input: Float32Array,
    dims: readonly [number, number, number, number],
  ) => Promise<Prediction>
  readonly release: () => Promise<void>
}

type OrtModule = typeof Ort

const inNode = (): boolean => typeof process !== 'undefined' && process.versions?.node !== undefined

/** A variable specifier: bundlers leave it alone, so Workers builds never see the native addon. */
const NODE_PACKAGE = 'onnxruntime-node'

const loadNode = async (): Promise<OrtModule> => {
  if (!inNode()) throw new Error('onnxruntime-node runs only in Node')
  return (await import(NODE_PACKAGE)) as OrtModule
}

/** The output the exporter writes and a segmentation needs. */
const OUTPUT = 'probabilities'

/** Whether this process has started onnxruntime-web's wasm (which fixes its thread count). */
let webStarted = false

const open = async (
  ort: OrtModule,
  runtimeName: RuntimeName,
  model: Uint8Array,
  threads: number,
  fallbackReason: string | undefined,
): Promise<Session> => {
  const options: Ort.InferenceSession.SessionOptions =
    runtimeName === 'onnxruntime-node'
      ? { executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1 }
      : { executionProviders: ['wasm'] }
  if (runtimeName === 'onnxruntime-web' && !webStarted) {
    ort.env.wasm.numThreads = threads
    webStarted = true
  }
  // errors only: run() rethrows them in one line, and warnings are noise in a server's log
  const session = await ort.InferenceSession.create(model, {
    ...options,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  }).catch((e: unknown) => {
    throw new Error(`${runtimeName} cannot load the model: ${errorLine(e)}`)
  })
  if (!session.outputNames.includes(OUTPUT)) {
    await session.release()
    throw new Error(
      `the model has no 'probabilities' output (outputs: ${session.outputNames.join(', ')})`,
    )
  }
  return {
    runtimeName,
    // onnxruntime-web writes the count it settled on back into env at start-up
    threads: runtimeName === 'onnxruntime-web' ? (ort.env.wasm.numThreads ?? threads) : threads,
    ...(fallbackReason === undefined ? {} : { fallbackReason }),
    run: async (input, dims) => {
      const expected = elementCount(dims)
      if (input.length !== expected)
        throw new RangeError(
          `input has ${input.length} values, dims [${dims.join(', ')}] need ${expected}`,
        )
      const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', input, [...dims]) }
      const result = await session.run(feeds, [OUTPUT]).catch((e: unknown) => {
        throw new Error(`inference failed: ${errorLine(e)}`)
      })
      const probabilities = result[OUTPUT]
      return { probabilities: probabilities.data as Float32Array, dims: probabilities.dims }
    },
    release: () => session.release(),
  }
}

/** A session on `modelBytes` (an ONNX file with a `probabilities` output) in the chosen runtime. */
export const createSession = async (
  modelBytes: Uint8Array,
  options: SessionOptions = {},
): Promise<Session> => {
  const { runtime = 'auto', threads = 1 } = options
  if (!Number.isInteger(threads) || threads < 1)
    throw new RangeError(`threads must be a positive integer, got ${threads}`)
  const web = async (reason?: string) =>
    open(await import('onnxruntime-web'), 'onnxruntime-web', modelBytes, threads, reason)
  if (runtime === 'web') return web()
  if (runtime === 'node') {
    const ort = await loadNode().catch((e: unknown) => {
      throw new Error(`onnxruntime-node is not available: ${errorLine(e)}`)
    })
    return open(ort, 'onnxruntime-node', modelBytes, threads, undefined)
  }
  if (!inNode()) return web()
  const ort = await loadNode().then(
    (m) => m,
    (e: unknown) => errorLine(e),
  )
  return typeof ort === 'string'
    ? web(`onnxruntime-node did not load (${ort})`)
    : open(ort, 'onnxruntime-node', modelBytes, threads, undefined)
}
