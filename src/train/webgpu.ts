/**
 * The `webgpu` engine: @tensorflow/tfjs-backend-webgpu on Dawn, Chrome's WebGPU, built for
 * Node by the `webgpu` package. Both are optional dependencies, loaded only when asked for.
 *
 * Why a second GPU engine: tfjs-node-gpu needs libtensorflow 2.9 built for CUDA 11.2 and
 * cuDNN 8.1, which today's CUDA boxes do not have and which its install script downloads
 * from a host that is often out of reach. Dawn needs only the GPU driver's Vulkan (Metal on
 * a Mac, D3D12 on Windows).
 *
 * tfjs's own factory looks for `navigator.gpu`, which Node does not have, so the backend is
 * registered here on an adapter chosen here:
 * - a hardware adapter (Vulkan and the like) when there is one;
 * - else, only where `allowSoftware` says so, a software one: Mesa's llvmpipe through
 *   OpenGL ES on surfaceless EGL, in WebGPU's compatibility mode. It is slower than the wasm
 *   engine, so `auto` never takes it; tests use it to run the GPU code path on CPU machines.
 *
 * @example
 * const adapter = await registerWebGpu({ allowSoftware: false }) // Either<string, string>
 * // Right('NVIDIA H200 (nvidia, vulkan)'), then tf.setBackend('webgpu')
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { existsSync, readdirSync } from 'node:fs'
import { installed } from '../util/installed.ts'
import { registerWebGpuKernels } from './webgpu-kernels.ts'

/** What the parts of Dawn's API used here look like (the `webgpu` package ships no types we use). */
export interface Adapter {
  readonly info: {
    vendor: string
    architecture: string
    device: string
    description: string
    isFallbackAdapter?: boolean
  }
  readonly features: ReadonlySet<string>
  readonly limits: Readonly<Record<string, number>>
  readonly requestDevice: (descriptor: object) => Promise<unknown>
}
export interface Gpu {
  readonly requestAdapter: (options: object) => Promise<Adapter | null>
}
interface Dawn {
  readonly create: (flags: string[]) => Gpu
  readonly globals: Record<string, unknown>
}

const describe = (a: Adapter, kind: string): string => {
  const { vendor, architecture, device, description } = a.info
  const name = [vendor, architecture, device].filter((s) => s).join(' ')
  return name
    ? `${name} (${[description, kind].filter((s) => s).join(', ')})`
    : `${description} (${kind})`
}

/** A CPU rendering a GPU (Mesa's lavapipe and llvmpipe, SwiftShader): slower than wasm. */
const isSoftware = (a: Adapter): boolean =>
  a.info.isFallbackAdapter === true ||
  /llvmpipe|lavapipe|swiftshader/i.test(`${a.info.device} ${a.info.description}`)

/**
 * An adapter Dawn found, the instance and options that found it (an adapter gives one device:
 * asking again with them gives a fresh one of the same GPU), and a line saying which it is.
 */
export interface FoundAdapter {
  readonly gpu: Gpu
  readonly options: object
  readonly adapter: Adapter
  readonly name: string
}

/** The hardware adapter, else (when allowed) the software one, with a line saying which. */
const findAdapter = async (
  dawn: Dawn,
  allowSoftware: boolean,
): Promise<E.Either<string, FoundAdapter>> => {
  const gpu = dawn.create([])
  const fast = { powerPreference: 'high-performance' }
  const hardware = await gpu.requestAdapter(fast).catch(() => null)
  if (hardware && !isSoftware(hardware))
    return E.right({ gpu, options: fast, adapter: hardware, name: describe(hardware, 'hardware') })
  if (!allowSoftware)
    return E.left(
      'no GPU adapter: Dawn found no Vulkan device (needs libvulkan1 and the driver\'s ICD, e.g. VK_DRIVER_FILES=.../nvidia_icd.json; README, "On a GPU box with WebGPU")',
    )
  // Mesa reads this when Dawn opens EGL: no display server, no window.
  process.env.EGL_PLATFORM ??= 'surfaceless'
  const gles = dawn.create(['backend=opengles'])
  const compatible = { featureLevel: 'compatibility' }
  const software = await gles.requestAdapter(compatible).catch(() => null)
  return software
    ? E.right({
        gpu: gles,
        options: compatible,
        adapter: software,
        name: describe(software, 'software, compatibility mode'),
      })
    : E.left('no GPU adapter, hardware or software (Vulkan, or EGL with Mesa)')
}

/**
 * Whether this Linux machine has a GPU device node at all. Dawn writes its warnings
 * straight to stderr, so `auto` looks here first rather than probing on every CPU machine.
 */
export const hasGpuDevice = (): boolean => {
  if (process.platform !== 'linux') return true
  if (existsSync('/dev/nvidiactl')) return true
  try {
    return readdirSync('/dev/dri').some((f) => f.startsWith('renderD'))
  } catch {
    return false
  }
}

/**
 * Dawn's best adapter (as `findAdapter` picks it), with the WebGPU constants
 * (GPUBufferUsage and the like) set as the globals that tfjs and onnxruntime-web read.
 */
export const dawnAdapter = async (
  allowSoftware: boolean,
): Promise<E.Either<string, FoundAdapter>> => {
  const dawn = (await import('webgpu')) as unknown as Dawn
  for (const [k, v] of Object.entries(dawn.globals))
    if (!(k in globalThis)) Object.assign(globalThis, { [k]: v })
  return findAdapter(dawn, allowSoftware)
}

let registered: string | undefined

/**
 * Registers tfjs's `webgpu` backend on the best adapter; Right is the adapter's name. Once
 * registered it stays (a process has one GPU device), and later calls give the same name.
 */
export const registerWebGpu = async (options: {
  readonly allowSoftware: boolean
}): Promise<E.Either<string, string>> => {
  if (registered !== undefined) return E.right(registered)
  for (const pkg of ['webgpu', '@tensorflow/tfjs-backend-webgpu'])
    if (!installed(pkg))
      return E.left(`${pkg} is not installed (npm i webgpu @tensorflow/tfjs-backend-webgpu)`)
  // Imported before navigator.gpu exists, so that its own factory (which would take the first
  // adapter it is given, or none) stays unregistered and ours is the only one.
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu')
  const found = await dawnAdapter(options.allowSoftware)
  if (E.isLeft(found)) return found
  const { gpu, adapter, name } = found.right
  // tfjs's backend checks for navigator.gpu before it starts.
  const nav = ((globalThis as { navigator?: object }).navigator ??= {})
  if (!('gpu' in nav)) Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true })
  // The limits and features tfjs's own factory asks for.
  const limits = [
    'maxComputeWorkgroupStorageSize',
    'maxComputeWorkgroupsPerDimension',
    'maxStorageBufferBindingSize',
    'maxBufferSize',
    'maxComputeWorkgroupSizeX',
    'maxComputeInvocationsPerWorkgroup',
  ]
  const device = await adapter.requestDevice({
    requiredFeatures: ['timestamp-query'].filter((f) => adapter.features.has(f)),
    requiredLimits: Object.fromEntries(limits.map((l) => [l, adapter.limits[l]])),
  })
  tf.registerBackend(
    'webgpu',
    () =>
      new WebGPUBackend(
        device as ConstructorParameters<typeof WebGPUBackend>[0],
        adapter.info as unknown as ConstructorParameters<typeof WebGPUBackend>[1],
      ),
  )
  registerWebGpuKernels()
  registered = name
  return E.right(name)
}
