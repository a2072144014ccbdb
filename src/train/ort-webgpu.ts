/**
 * The `onnxruntime-webgpu` engine's runner: the training graphs of ort-graphs.ts (a pass's
 * forward and its hand-written backward, the ones the `onnxruntime` engine runs on the CPU)
 * on onnxruntime-web's WebGPU execution provider, on the GPU Dawn finds (webgpu.ts). A pass
 * is two graph runs (onnxruntime dispatches their nodes from C++ compiled to wasm, where the
 * `webgpu` engine dispatches tfjs's kernels from JavaScript); the forward's saved values stay
 * on the GPU between the two (onnxruntime's `gpu-buffer` outputs fed back as inputs), and so
 * do a step's weights and a pass's dropout masks (uploaded once, read by every run). The
 * loss and Adam stay in tfjs on the host, as on the `onnxruntime` engine.
 *
 * onnxruntime-web looks for `navigator.gpu`, which Node has not: it is given one whose only
 * adapter is Dawn's. Dawn's Node binding refuses to upload from a SharedArrayBuffer, which
 * is what onnxruntime-web's threaded wasm memory is, so uploads from it are copied first.
 *
 * @example
 * const ort = await loadOrtWebGpu(false)        // Either<string, WebGpuOrt>
 * const passes = ortWebGpuPasses(spec, ort.right)
 * await trainStep(passes, state, batch, loss, { seed, step })
 */
import type * as Ort from 'onnxruntime-web'
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { fromParams, type Params } from '../model/tfjs-unet.ts'
import { exportOnnx, INPUT_NAME, PROBABILITIES_NAME } from '../model/onnx-export.ts'
import { shapesByName, type UNetSpec } from '../model/unet.ts'
import { installed } from '../util/installed.ts'
import { seeded } from '../util/rng.ts'
import { backwardGraph, forwardGraph, type Dims } from './ort-graphs.ts'
import {
  graphNames,
  graphPass,
  maskNchw,
  weightArrays,
  type GraphNames,
  type GraphRunner,
} from './ort-passes.ts'
import type { Inference, Pass, Passes } from './step.ts'
import { dawnAdapter, type Adapter } from './webgpu.ts'
import { errorLine } from '../util/error-line.ts'
import { elementCount } from '../util/shape.ts'

type OrtWeb = typeof Ort

export interface WebGpuOrt {
  readonly ort: OrtWeb
  /** The adapter, as webgpu.ts names it. */
  readonly device: string
}

interface Queue {
  writeBuffer: (
    buffer: unknown,
    offset: number,
    data: ArrayBufferView,
    dataOffset?: number,
    size?: number,
  ) => void
}

/** `queue.writeBuffer` that copies a view of shared memory to a plain buffer first. */
const uploadsFromSharedMemory = (queue: Queue): void => {
  const write = queue.writeBuffer.bind(queue)
  queue.writeBuffer = (buffer, offset, data, dataOffset, size) => {
    if (!(data.buffer instanceof SharedArrayBuffer))
      return write(buffer, offset, data, dataOffset, size)
    // dataOffset and size count elements of a typed array, bytes of anything else.
    const unit = 'BYTES_PER_ELEMENT' in data ? (data.BYTES_PER_ELEMENT as number) : 1
    const start = data.byteOffset + (dataOffset ?? 0) * unit
    const bytes = size === undefined ? data.byteLength - (dataOffset ?? 0) * unit : size * unit
    write(buffer, offset, new Uint8Array(data.buffer, start, bytes).slice(), 0, bytes)
  }
}

/** The adapter as onnxruntime-web gets it: its devices' queues upload from shared memory. */
const adapterForOrt = (adapter: Adapter): Adapter =>
  new Proxy(adapter, {
    get: (target, key) => {
      if (key === 'requestDevice')
        return async (descriptor: object) => {
          const device = (await target.requestDevice(descriptor)) as { queue: Queue }
          uploadsFromSharedMemory(device.queue)
          return device
        }
      const value = Reflect.get(target, key, target) as unknown
      return typeof value === 'function' ? value.bind(target) : value
    },
  })

let loaded: WebGpuOrt | undefined

/**
 * onnxruntime-web with its WebGPU provider on Dawn's best adapter (a software one only where
 * `allowSoftware` says so); Left says in one line why not. Loaded once a process.
 */
export const loadOrtWebGpu = async (
  allowSoftware: boolean,
): Promise<E.Either<string, WebGpuOrt>> => {
  if (loaded) return E.right(loaded)
  if (!installed('webgpu')) return E.left('webgpu is not installed (npm i webgpu)')
  const found = await dawnAdapter(allowSoftware)
  if (E.isLeft(found)) return found
  const { gpu: dawn, options } = found.right
  // A fresh adapter each time: onnxruntime opens a device again once its sessions are gone.
  const gpu = {
    requestAdapter: async () => {
      const adapter = await dawn.requestAdapter(options)
      return adapter && adapterForOrt(adapter)
    },
    getPreferredCanvasFormat: () => 'rgba8unorm',
    wgslLanguageFeatures: new Set<string>(),
  }
  const nav = ((globalThis as { navigator?: object }).navigator ??= {})
  Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true })
  try {
    const ort = (await import('onnxruntime-web/webgpu')) as unknown as OrtWeb
    ort.env.wasm.numThreads = 1
    // Its warning that shape computations run on the CPU is by design.
    ort.env.logLevel = 'error'
    loaded = { ort, device: found.right.name }
    return E.right(loaded)
  } catch (e) {
    return E.left(`onnxruntime-web's WebGPU build failed to load: ${errorLine(e)}`)
  }
}

/** Runs one at a time: an onnxruntime-web session takes no second run while one is going. */
const serial = () => {
  let last: Promise<unknown> = Promise.resolve()
  return <T>(run: () => Promise<T>): Promise<T> => {
    const next = last.then(run)
    last = next.catch(() => undefined)
    return next
  }
}

interface WebGraphs extends GraphNames {
  readonly forward: Ort.InferenceSession
  readonly backward: Ort.InferenceSession
  /** Forward outputs the backward reads: they stay on the GPU. */
  readonly saved: readonly string[]
}

const openGraphs = async (ort: OrtWeb, spec: UNetSpec, dims: Dims): Promise<WebGraphs> => {
  const f = forwardGraph(spec, dims)
  const b = backwardGraph(spec, f)
  const saved = [...f.saved.keys()]
  const options = { executionProviders: ['webgpu'], graphOptimizationLevel: 'all' } as const
  return {
    forward: await ort.InferenceSession.create(f.model, {
      ...options,
      preferredOutputLocation: Object.fromEntries(saved.map((name) => [name, 'gpu-buffer'])),
    }),
    backward: await ort.InferenceSession.create(b.model, options),
    saved,
    ...graphNames(f, b),
  }
}

interface GpuBuffer {
  destroy: () => void
}

interface GpuDevice {
  createBuffer: (descriptor: { size: number; usage: number }) => GpuBuffer
  queue: { writeBuffer: (buffer: GpuBuffer, offset: number, data: Float32Array) => void }
}

/** STORAGE | COPY_SRC | COPY_DST (WebGPU's GPUBufferUsage): what onnxruntime's own buffers have. */
const TENSOR_USAGE = 0x80 | 0x04 | 0x08

/**
 * A float32 tensor of onnxruntime's in a GPU buffer of its device, for inputs that several
 * graph runs read: fed as a host tensor, onnxruntime uploads it again for every run (through
 * a fresh mapped buffer each time). The buffer is padded to 16 bytes, as onnxruntime pads
 * its own.
 */
const gpuTensor = (ort: OrtWeb, device: GpuDevice, dims: Dims) => {
  const bytes = elementCount(dims) * 4
  const buffer = device.createBuffer({ size: Math.ceil(bytes / 16) * 16, usage: TENSOR_USAGE })
  return {
    buffer,
    tensor: ort.Tensor.fromGpuBuffer(buffer as unknown as Ort.Tensor.GpuBufferType, {
      dataType: 'float32',
      dims,
    }),
    upload: (data: Float32Array) => device.queue.writeBuffer(buffer, 0, data),
  }
}

type GpuTensor = ReturnType<typeof gpuTensor>

/** The weights of one forward call on the GPU, and how many of its passes await a backward. */
interface WeightSet {
  readonly tensors: Map<string, GpuTensor>
  inFlight: number
  /** A later forward took new buffers: these go when the last pass is done. */
  retired: boolean
}

/** The passes of a step as onnxruntime graphs on the GPU; the sessions are opened per geometry. */
export const ortWebGpuPasses = (spec: UNetSpec, { ort }: WebGpuOrt): Passes => {
  const shapes = shapesByName(spec)
  const geometries = new Map<string, Promise<WebGraphs>>()
  const exclusive = serial()
  const feed = (data: Float32Array, dims: Dims) => new ort.Tensor('float32', data, dims)
  const onHost = (t: Ort.Tensor) => ({ data: t.data as Float32Array, dims: t.dims })
  // The weights stay on the GPU: uploaded once a forward call, for its passes' runs. A
  // forward while passes of the last one await their backward takes new buffers: a backward
  // reads its own forward's weights (the old ones go when their last pass is done).
  const newWeights = (): WeightSet => ({ tensors: new Map(), inFlight: 0, retired: false })
  let weights = newWeights()
  const release = (set: WeightSet) => {
    if (set.retired && set.inFlight === 0) for (const t of set.tensors.values()) t.buffer.destroy()
  }
  const device = async () => (await ort.env.webgpu.device) as unknown as GpuDevice

  const graphsFor = ([n, h, w]: Dims) => {
    const key = [n, h, w].join('x')
    if (!geometries.has(key)) geometries.set(key, openGraphs(ort, spec, [n, h, w]))
    return geometries.get(key) as Promise<WebGraphs>
  }

  const pass = async (
    set: WeightSet,
    image: tf.Tensor4D,
    seed: readonly (string | number)[],
  ): Promise<Pass> => {
    const gs = await graphsFor(image.shape)
    const rng = seeded(...(seed as [string | number, ...(string | number)[]]))
    const gpu = await device()
    // Each mask on the GPU once, for the forward and the backward.
    const maskTensors = gs.masks.map((m) => {
      const t = gpuTensor(ort, gpu, m.shape)
      t.upload(maskNchw(m.shape, m.rate, rng))
      return t
    })
    const masks = gs.masks.map((m, i) => [m.name, maskTensors[i].tensor] as const)
    let saved: Ort.Tensor[] = []
    const runner: GraphRunner<Ort.Tensor> = {
      feed,
      forward: async (feeds) => {
        const out = await exclusive(() => gs.forward.run(feeds))
        saved = gs.saved.map((name) => out[name])
        return { read: (name) => onHost(out[name]), saved: saved.map((t, i) => [gs.saved[i], t]) }
      },
      backward: async (feeds) => {
        const grads = await exclusive(() => gs.backward.run(feeds))
        return (name) => onHost(grads[name])
      },
    }
    const feeds = new Map([...set.tensors].map(([name, t]) => [name, t.tensor]))
    return graphPass(runner, gs, shapes, feeds, image, masks, () => {
      for (const value of saved) value.dispose()
      for (const t of maskTensors) t.buffer.destroy()
      set.inFlight--
      release(set)
    })
  }

  return {
    // One after the other: the GPU runs one graph at a time anyway.
    forward: async (params, images, seeds) => {
      // This call's weights, taken before anything is awaited.
      if (weights.inFlight > 0) {
        weights.retired = true
        weights = newWeights()
      }
      const set = weights
      set.inFlight += images.length
      const passes: Pass[] = []
      try {
        if (images.length > 0) await graphsFor(images[0].shape) // onnxruntime's device is up
        const gpu = await device()
        for (const [name, w] of weightArrays(spec, params)) {
          const t = set.tensors.get(name) ?? gpuTensor(ort, gpu, w.dims)
          set.tensors.set(name, t)
          t.upload(w.data)
        }
        for (const [i, image] of images.entries()) passes.push(await pass(set, image, seeds[i]))
        return passes
      } catch (e) {
        set.inFlight -= images.length - passes.length
        release(set)
        throw e
      }
    },
    inference: ortWebGpuInference(ort, spec),
    close: async () => {
      weights.retired = true
      release(weights)
      for (const g of geometries.values()) {
        const { forward, backward } = await g
        await Promise.all([forward.release(), backward.release()])
      }
      geometries.clear()
    },
  }
}

/** Validation on the GPU: the model `maco export` would write, on the WebGPU provider. */
const ortWebGpuInference =
  (ort: OrtWeb, spec: UNetSpec) =>
  async (params: Params): Promise<Inference> => {
    const session = await ort.InferenceSession.create(
      exportOnnx(spec, await fromParams(spec, params)),
      { executionProviders: ['webgpu'] },
    )
    return {
      probabilities: async (slices, dims) =>
        (await session.run({ [INPUT_NAME]: new ort.Tensor('float32', slices, dims) }))[
          PROBABILITIES_NAME
        ].data as Float32Array,
      release: () => void session.release(),
    }
  }
