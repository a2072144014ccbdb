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
 * The graphs themselves, and the backward's op by op derivation, are ort-graphs.ts. A pass
 * over them is written once for any runtime that can run them (`GraphRunner`):
 * onnxruntime-node here, onnxruntime-web on a GPU in ort-webgpu.ts. It works on host arrays
 * (`hostGraphPass`, what a worker thread runs: `ortHostPasses`), and `graphPass` and
 * `ortPasses` put tfjs tensors around it for the step.
 *
 * One pair of sessions per batch geometry (n, h, w): the shapes are fixed, so onnxruntime
 * plans all memory once. `threads` is onnxruntime's intra-op thread count. Validation runs
 * on onnxruntime too (`ortInference`).
 *
 * @example
 * const passes = ortPasses(spec, 2)   // Either<string, Passes>: Left when onnxruntime-node is absent
 * await trainStep(passes.right, state, batch, loss, { seed, step })
 * const host = ortHostPasses(spec)    // the same graphs on Float32Arrays
 * const pass = await host.right.pass(weights, { data: image, dims: [4, 128, 128, 1] }, seed)
 * const gradient = await pass.backward(dLogits) // (name) => Float32Array
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { fromParams, type BatchStats, type Params } from '../model/tfjs-unet.ts'
import { exportOnnx, INPUT_NAME, PROBABILITIES_NAME } from '../model/onnx-export.ts'
import { parameterShapes, shapesByName, type UNetSpec } from '../model/unet.ts'
import { rawBelow, seeded, type Rng } from '../util/rng.ts'
import {
  backwardGraph,
  forwardGraph,
  type BackwardGraph,
  type Dims,
  type ForwardGraph,
  type MaskInput,
} from './ort-graphs.ts'
import { loadNative, openSession, type NativeOrt, type NativeSession } from './ort-native.ts'
import type { Inference, Pass, Passes } from './step.ts'
import { elementCount } from '../util/shape.ts'

/**
 * `dropoutValues` laid out NCHW: the same draws, in the same (NHWC) order, each written
 * where NCHW keeps it, so the masks are every other engine's.
 */
export const maskNchw = (
  [n, c, h, w]: Dims,
  rate: number,
  rng: Rng,
  values = new Float32Array(n * c * h * w),
): Float32Array => {
  const keep = 1 / (1 - rate)
  const drop = rawBelow(rate)
  const plane = h * w
  // The draws of a run of pixels at a time (all their channels, NHWC order), not of the whole
  // mask: a pass's masks are two million draws, and 64 k of them stay in the cache.
  const pixels = Math.max(1, Math.min(plane, Math.floor(65536 / c)))
  const chunk = new Uint32Array(pixels * c)
  for (let b = 0; b < n; b++)
    for (let from = 0; from < plane; from += pixels) {
      const count = Math.min(pixels, plane - from)
      const draws = rng.fillUint32(count === pixels ? chunk : chunk.subarray(0, count * c))
      // Channel by channel: the writes run along the mask, the strided reads stay in the chunk.
      for (let channel = 0; channel < c; channel++) {
        const first = (b * c + channel) * plane + from
        for (let p = 0; p < count; p++)
          values[first + p] = Number(draws[p * c + channel] >= drop) * keep
      }
    }
  return values
}

/** What the forward graph gives back to the step: the logits and each batch norm's statistics. */
export const forwardOutputs = (batchNorms: readonly string[]): string[] => [
  'logits',
  ...batchNorms.flatMap((bn) => [`${bn}.mean`, `${bn}.variance`]),
]

/** A pass's batch statistics as tfjs tensors. */
export const batchStats = (stats: HostPass['stats']): BatchStats =>
  Object.fromEntries(
    Object.entries(stats).map(([bn, [mean, variance]]) => [
      bn,
      { mean: tf.tensor1d(mean), variance: tf.tensor1d(variance) },
    ]),
  )

const disposeStats = (stats: BatchStats): void =>
  tf.dispose(Object.values(stats).flatMap((s) => [s.mean, s.variance]))

/** The trainable weights' names and shapes: a backward's gradients, by `parameterShapes`. */
type Trainable = readonly { readonly name: string; readonly shape: readonly number[] }[]

/** `HostPass` as a tfjs `Pass`: tensors of its logits, statistics and gradients. */
const tfjsPass = (host: HostPass, trainable: Trainable): Pass => {
  const stats = batchStats(host.stats)
  return {
    logits: tf.tensor4d(host.logits.data, host.logits.dims as [number, number, number, number]),
    stats,
    backward: async (dLogits) => {
      try {
        const gradient = await host.backward((await dLogits.data()) as Float32Array)
        return Object.fromEntries(
          trainable.map((p) => [p.name, tf.tensor(gradient(p.name), [...p.shape])]),
        )
      } finally {
        disposeStats(stats)
      }
    },
  }
}

/** An output of a graph run, on the host. */
export interface HostValue {
  readonly data: Float32Array
  readonly dims: readonly number[]
}

/**
 * How a runtime runs a pass's two graphs, `T` its tensor: onnxruntime-node on the CPU
 * (`ortPasses`), onnxruntime-web on the GPU (ort-webgpu.ts).
 */
export interface GraphRunner<T> {
  readonly feed: (data: Float32Array, dims: Dims) => T
  /** The forward: what the step reads by name, and the saved values as backward feeds. */
  readonly forward: (feeds: Record<string, T>) => Promise<{
    readonly read: (name: string) => HostValue
    readonly saved: readonly (readonly [string, T])[]
  }>
  /** The backward: its outputs by name. */
  readonly backward: (feeds: Record<string, T>) => Promise<(name: string) => HostValue>
}

/**
 * A pass on the host, before any tfjs: the logits (NHWC), each batch norm's mean and variance,
 * and, given dL/dlogits, every trainable weight's gradient. A worker thread sends these as
 * they are (`ortHostPasses`); `graphPass` makes tfjs tensors of them.
 */
export interface HostPass {
  readonly logits: HostValue
  readonly stats: Readonly<Record<string, readonly [Float32Array, Float32Array]>>
  readonly backward: (dLogits: Float32Array) => Promise<(name: string) => Float32Array>
}

/**
 * One pass of an image through a runner's graphs, on the host: the forward now, the backward
 * when the step has dL/dlogits; `done` runs after the backward (what the pass held is free
 * then). The weights and masks come as the runner's feeds, made once for both graphs.
 */
export const hostGraphPass = async <T>(
  runner: GraphRunner<T>,
  names: GraphNames,
  shapes: ReadonlyMap<string, Dims>,
  weights: ReadonlyMap<string, T>,
  image: HostValue,
  masks: readonly (readonly [string, T])[],
  done: () => void,
): Promise<HostPass> => {
  const imageFeed = runner.feed(image.data, image.dims)
  const weightFeed = (name: string) => [name, weights.get(name) as T] as const
  const out = await runner.forward(
    Object.fromEntries([['image', imageFeed], ...names.weights.map(weightFeed), ...masks]),
  )
  const logits = out.read('logits')
  // Batch norm cancels the conv biases before it: their gradient is zero.
  const cancelled = new Set(names.cancelled)
  return {
    logits,
    stats: Object.fromEntries(
      names.batchNorms.map((bn) => [
        bn,
        [out.read(`${bn}.mean`).data, out.read(`${bn}.variance`).data] as const,
      ]),
    ),
    backward: async (dLogits) => {
      try {
        const grads = await runner.backward(
          Object.fromEntries([
            ['dlogits', runner.feed(dLogits, logits.dims)],
            ['image', imageFeed],
            ...names.kernels.map(weightFeed),
            ...masks,
            ...out.saved,
          ]),
        )
        return (name) =>
          cancelled.has(name)
            ? new Float32Array(elementCount(shapes.get(name) as Dims))
            : grads(`grad.${name}`).data
      } finally {
        done()
      }
    },
  }
}

/** `hostGraphPass` with tfjs tensors in and out: a `Pass` of the step. */
export const graphPass = async <T>(
  runner: GraphRunner<T>,
  names: GraphNames,
  shapes: ReadonlyMap<string, Dims>,
  weights: ReadonlyMap<string, T>,
  image: tf.Tensor4D,
  masks: readonly (readonly [string, T])[],
  done: () => void,
): Promise<Pass> =>
  tfjsPass(
    await hostGraphPass(runner, names, shapes, weights, hostImage(image), masks, done),
    [...names.gradients, ...names.cancelled].map((name) => ({
      name,
      shape: shapes.get(name) as Dims,
    })),
  )

const hostImage = (image: tf.Tensor4D): HostValue => ({
  data: image.dataSync() as Float32Array,
  dims: image.shape,
})

/** The weights by name on the host, as the graphs read them. */
export const weightArrays = (spec: UNetSpec, params: Params): Map<string, HostValue> =>
  new Map(
    parameterShapes(spec).map((p) => [
      p.name,
      { data: params[p.name].dataSync() as Float32Array, dims: p.shape },
    ]),
  )

/**
 * What a pass holds from its forward to its backward: onnxruntime writes the saved values
 * into them and the masks are drawn into them, so passes reuse them instead of allocating
 * about 90 MB of fresh arrays each (the paper UNet at 128 px, batch 4: a thousand page faults
 * a forward, measured).
 */
interface PassBuffers {
  readonly saved: Readonly<Record<string, Float32Array<ArrayBuffer>>>
  readonly masks: readonly Float32Array<ArrayBuffer>[]
}

const newBuffers = (gs: Pick<PassGraphs, 'saved' | 'masks'>): PassBuffers => ({
  saved: Object.fromEntries(
    [...gs.saved].map(([name, dims]) => [name, new Float32Array(elementCount(dims))]),
  ),
  masks: gs.masks.map((m) => new Float32Array(elementCount(m.shape))),
})

/** The two sessions of a batch geometry, and what their feeds and fetches are named. */
interface PassGraphs extends GraphNames {
  readonly forward: NativeSession
  readonly backward: NativeSession
  /** Forward outputs the backward reads, with their shapes. */
  readonly saved: ReadonlyMap<string, Dims>
  /** Buffers of finished passes (their saved values and masks), for the next to fill. */
  readonly spare: PassBuffers[]
}

/** What a pass feeds and fetches by name, of a forward graph and its backward. */
export interface GraphNames {
  readonly masks: readonly MaskInput[]
  readonly batchNorms: readonly string[]
  readonly weights: readonly string[]
  readonly kernels: readonly string[]
  readonly cancelled: readonly string[]
  readonly gradients: readonly string[]
}

export const graphNames = (f: ForwardGraph, b: BackwardGraph): GraphNames => ({
  masks: f.masks,
  batchNorms: f.batchNorms,
  weights: f.weights,
  kernels: b.kernels,
  cancelled: f.cancelled,
  gradients: b.gradients,
})

const openGraphs = (spec: UNetSpec, dims: Dims, ort: NativeOrt, threads: number): PassGraphs => {
  const f = forwardGraph(spec, dims)
  const b = backwardGraph(spec, f)
  return {
    forward: openSession(ort, f.model, threads),
    backward: openSession(ort, b.model, threads),
    saved: f.saved,
    spare: [],
    ...graphNames(f, b),
  }
}

/**
 * Passes over onnxruntime graphs on host arrays: the weights by name, the image (NHWC) and
 * its shape, the dropout seed in; a `HostPass` out. What a worker thread runs, so that the
 * weights it is sent and the gradients it sends back never pass through tfjs.
 */
export interface HostPasses {
  readonly pass: (
    weights: ReadonlyMap<string, HostValue>,
    image: HostValue,
    seed: readonly (string | number)[],
  ) => Promise<HostPass>
  readonly ort: NativeOrt
  readonly close: () => Promise<void>
}

/**
 * The passes of a step as onnxruntime graphs on `threads` intra-op threads, on host arrays;
 * Left (one line) when onnxruntime-node cannot be loaded.
 */
export const ortHostPasses = (spec: UNetSpec, threads = 1): E.Either<string, HostPasses> => {
  const loaded = loadNative()
  if (E.isLeft(loaded)) return loaded
  const ort = loaded.right
  const shapes = shapesByName(spec)
  const geometries = new Map<string, PassGraphs>()
  const graphsFor = (dims: Dims) => {
    const key = dims.join('x')
    const known = geometries.get(key)
    if (known) return known
    const built = openGraphs(spec, dims, ort, threads)
    geometries.set(key, built)
    return built
  }
  const feed = (data: Float32Array, dims: Dims) => ort.tensor(data, dims)

  const pass = (
    weights: ReadonlyMap<string, HostValue>,
    image: HostValue,
    seed: readonly (string | number)[],
  ): Promise<HostPass> => {
    const [n, h, w] = image.dims
    const gs = graphsFor([n, h, w])
    const rng = seeded(...(seed as [string | number, ...(string | number)[]]))
    const buffers = gs.spare.pop() ?? newBuffers(gs)
    const masks = gs.masks.map(
      (m, i) => [m.name, feed(maskNchw(m.shape, m.rate, rng, buffers.masks[i]), m.shape)] as const,
    )
    const saved = [...gs.saved].map(
      ([name, dims]) => [name, feed(buffers.saved[name], dims)] as const,
    )
    const runner: GraphRunner<unknown> = {
      feed,
      forward: async (feeds) => {
        const out = gs.forward.run(
          feeds,
          Object.fromEntries([
            ...forwardOutputs(gs.batchNorms).map((name) => [name, null]),
            ...saved,
          ]),
          {},
        )
        return { read: (name) => out[name], saved }
      },
      backward: async (feeds) => {
        const grads = gs.backward.run(
          feeds,
          Object.fromEntries(gs.gradients.map((name) => [`grad.${name}`, null])),
          {},
        )
        return (name) => grads[name]
      },
    }
    const feeds = new Map([...weights].map(([name, v]) => [name, feed(v.data, v.dims)]))
    return hostGraphPass(runner, gs, shapes, feeds, image, masks, () => gs.spare.push(buffers))
  }

  return E.right({
    pass,
    ort,
    close: async () => {
      for (const g of geometries.values()) [g.forward, g.backward].forEach((s) => s.dispose())
      geometries.clear()
    },
  })
}

/** `ortHostPasses` with tfjs tensors in and out: the `onnxruntime` engine's passes on this thread. */
export const ortPasses = (spec: UNetSpec, threads = 1): E.Either<string, Passes> =>
  E.map((host: HostPasses): Passes => {
    const trainable = parameterShapes(spec).filter((p) => p.trainable)
    return {
      inference: ortInference(host.ort, spec, threads),
      forward: async (params: Params, images, seeds) => {
        const weights = weightArrays(spec, params)
        return Promise.all(
          images.map(async (image, i) =>
            tfjsPass(await host.pass(weights, hostImage(image), seeds[i]), trainable),
          ),
        )
      },
      close: host.close,
    }
  })(ortHostPasses(spec, threads))

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
