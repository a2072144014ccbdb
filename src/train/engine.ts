/**
 * Training engines: one tfjs-core, several backends, chosen at run time.
 *
 * - `tensorflow-gpu`: @tensorflow/tfjs-node-gpu (libtensorflow with CUDA 11.2 + cuDNN 8.1)
 * - `webgpu`: @tensorflow/tfjs-backend-webgpu on Dawn (the `webgpu` package): any GPU with a
 *   Vulkan driver, no CUDA libraries needed (`webgpu.ts`)
 * - `onnxruntime-webgpu`: the `onnxruntime` engine's training graphs on onnxruntime-web's
 *   WebGPU provider on the same Dawn adapter, the loss and Adam in tfjs wasm on the host
 *   (`ort-webgpu.ts`); asked for by name (`auto` does not take it until measured on a GPU)
 * - `tensorflow`: @tensorflow/tfjs-node (libtensorflow on the CPU, all cores)
 * - `onnxruntime`: where onnxruntime-node is installed, the training passes run as whole
 *   onnxruntime graphs on its native CPU kernels (MLAS, AVX2 / AVX-512; `ort-passes.ts`), one
 *   thread a pass (all of them for a step of one pass), and so does validation; the loss and
 *   Adam are wasm with its convolutions on the same native kernels (`ort-kernels.ts`)
 * - `wasm`: @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD, one thread in Node; always there)
 * - `cpu`: @tensorflow/tfjs-backend-cpu (plain JS; the reference for tests)
 *
 * The tfjs-node packages download libtensorflow when installed, which fails on machines
 * without that host, so they are optional: imported dynamically, only when asked for (or
 * by `auto`), and never needed by install or tests. They register their `tensorflow`
 * backend on the @tensorflow/tfjs-core they depend on; that is this project's tfjs-core
 * only when the versions match (4.22), so that npm installs a single copy. A mismatch shows
 * as "loaded but registered no 'tensorflow' backend".
 *
 * `auto` takes the first of tensorflow-gpu, webgpu (on a hardware adapter only), tensorflow,
 * onnxruntime, wasm that loads and says why the others were skipped. Loading also registers
 * tfjs's gradients (tfjs-core's Node bundle ships without them) and, for wasm, the kernels it
 * lacks (`wasm-kernels.ts`).
 *
 * @example
 * const engine = await loadEngine('auto')() // Either<string, Engine>
 * // Right({ name: 'wasm', skipped: ['tensorflow-gpu: @tensorflow/tfjs-node-gpu is not installed', ...] })
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { register as registerCommonJs } from 'tsx/cjs/api'
import { installed } from '../util/installed.ts'
import { registerOrtConvs, restoreWasmConvs } from './ort-kernels.ts'
import { loadOrtWebGpu } from './ort-webgpu.ts'
import { registerWasmKernels } from './wasm-kernels.ts'
import { hasGpuDevice, registerWebGpu } from './webgpu.ts'
import { errorLine } from '../util/error-line.ts'

export const ENGINE_NAMES = [
  'tensorflow-gpu',
  'webgpu',
  'onnxruntime-webgpu',
  'tensorflow',
  'onnxruntime',
  'wasm',
  'cpu',
] as const
export type EngineName = (typeof ENGINE_NAMES)[number]
export type EngineChoice = EngineName | 'auto'
export const ENGINE_CHOICES: readonly EngineChoice[] = ['auto', ...ENGINE_NAMES]

export interface Engine {
  readonly name: EngineName
  /** The tfjs backend now active. */
  readonly backend: string
  /** Engines `auto` tried first, each with why it was passed over. */
  readonly skipped: readonly string[]
  /** The GPU it runs on, where the engine says (webgpu). */
  readonly device?: string
}

const AUTO_ORDER: readonly EngineName[] = [
  'tensorflow-gpu',
  'webgpu',
  'tensorflow',
  'onnxruntime',
  'wasm',
]

/** The engines that run one thread per process, so that worker threads can add cores. */
export const singleThreaded = (name: EngineName): boolean =>
  name === 'onnxruntime' || name === 'wasm' || name === 'cpu'

const require = createRequire(import.meta.url)

let gradientsRegistered = false
/**
 * Registers tfjs's gradient functions. tfjs-core's Node (CommonJS) bundle has none, and its
 * ES module tree uses extensionless and directory imports that Node's ESM loader rejects,
 * so the tree is loaded through tsx's CommonJS hook. The gradient registry is global, so
 * they serve this tfjs-core.
 */
export const registerGradients = (): void => {
  if (gradientsRegistered) return
  const unregister = registerCommonJs()
  try {
    require('@tensorflow/tfjs-core/dist/register_all_gradients.js')
  } finally {
    unregister()
  }
  gradientsRegistered = true
}

let wasmPathsSet = false
const loadWasm = async (): Promise<void> => {
  const wasm = await import('@tensorflow/tfjs-backend-wasm')
  if (!wasmPathsSet) {
    // A file path, so the .wasm binaries are read from node_modules, never fetched.
    wasm.setWasmPaths(
      `${join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist')}/`,
    )
    wasmPathsSet = true
  }
  restoreWasmConvs()
  registerWasmKernels()
}

const NODE_PACKAGES = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
} as const

/**
 * Makes `name` the active backend, or says in one line why it cannot be; Right is the
 * backend and, for webgpu, the adapter. `auto` takes webgpu only on a hardware adapter.
 */
const activate = async (
  name: EngineName,
  auto = false,
): Promise<E.Either<string, { backend: string; device?: string }>> => {
  try {
    if (name === 'webgpu') {
      if (auto && !hasGpuDevice())
        return E.left('no GPU device (/dev/nvidiactl, /dev/dri/renderD*)')
      const adapter = await registerWebGpu({ allowSoftware: !auto })
      if (E.isLeft(adapter)) return adapter
      return (await tf.setBackend('webgpu'))
        ? E.right({ backend: 'webgpu', device: adapter.right })
        : E.left(`the webgpu backend failed to start on ${adapter.right}`)
    }
    if (name === 'onnxruntime-webgpu') {
      await loadWasm()
      const ort = await loadOrtWebGpu(true)
      if (E.isLeft(ort)) return ort
      return (await tf.setBackend('wasm'))
        ? E.right({ backend: 'wasm', device: ort.right.device })
        : E.left('the wasm backend failed to start')
    }
    if (name === 'cpu') {
      await import('@tensorflow/tfjs-backend-cpu')
      return (await tf.setBackend('cpu'))
        ? E.right({ backend: 'cpu' })
        : E.left('the cpu backend failed to start')
    }
    if (name === 'wasm' || name === 'onnxruntime') {
      await loadWasm()
      if (name === 'onnxruntime') {
        const native = registerOrtConvs()
        if (E.isLeft(native)) return native
      }
      return (await tf.setBackend('wasm'))
        ? E.right({ backend: 'wasm' })
        : E.left('the wasm backend failed to start')
    }
    const pkg = NODE_PACKAGES[name]
    if (!installed(pkg)) return E.left(`${pkg} is not installed (npm i ${pkg})`)
    await import(pkg)
    if (!tf.engine().registryFactory.tensorflow)
      return E.left(
        `${pkg} loaded but registered no 'tensorflow' backend on @tensorflow/tfjs-core ${tf.version_core} (their versions must match)`,
      )
    return (await tf.setBackend('tensorflow'))
      ? E.right({ backend: 'tensorflow' })
      : E.left(`${pkg} failed to start its backend`)
  } catch (e) {
    return E.left(`failed to load: ${errorLine(e)}`)
  }
}

/** Loads and activates an engine; Left is a one-line reason. */
export const loadEngine =
  (choice: EngineChoice): TE.TaskEither<string, Engine> =>
  async () => {
    try {
      registerGradients()
    } catch (e) {
      return E.left(`tfjs gradients could not be registered: ${errorLine(e)}`)
    }
    if (choice !== 'auto') {
      const r = await activate(choice)
      return E.isRight(r)
        ? E.right({ name: choice, ...r.right, skipped: [] })
        : E.left(`engine '${choice}' is not available: ${r.left}`)
    }
    const skipped: string[] = []
    for (const name of AUTO_ORDER) {
      const r = await activate(name, true)
      if (E.isRight(r)) return E.right({ name, ...r.right, skipped })
      skipped.push(`${name}: ${r.left}`)
    }
    return E.left(`no engine could be loaded (${skipped.join('; ')})`)
  }
