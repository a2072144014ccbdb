/**
 * Training passes on worker threads, each with its own engine (tfjs wasm is single-threaded
 * in Node, so this is how a step uses both cores). A MaCo step has two passes of the same
 * weights, on the original and on the masked images: with two workers each runs one, with
 * its whole batch, so batch-norm statistics are exactly those of the single-threaded step.
 * Adam and the moving averages stay on the calling thread (see `step.ts`): per pass the
 * workers receive the weights and images and send back the logits, batch statistics and,
 * given dL/dlogits, the weight gradients, as transferred Float32Arrays. With the MaCo loss
 * as data (`withLoss`) each worker also evaluates its pass's branch of the loss and runs
 * the backward straight away, the two workers linked by a port for the one thing the
 * masked branch needs of the original (its probabilities): the step then has no stop on
 * this thread between the forwards and the backwards, where both cores would wait for it.
 *
 * @example
 * const passes = await workerPasses(spec, 'wasm', 2)
 * await trainStep(passes, state, batch, loss, { seed, step }) // both passes at once
 * await trainStep(passes, state, batch, { kind: 'maco', config, targets }, { seed, step }) // the loss there too
 * await passes.close()
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import {
  MessageChannel,
  type MessagePort,
  type TransferListItem,
  type Worker,
} from 'node:worker_threads'
import type { LossConfig, LossTargets, LossTerm } from '../maco/losses.ts'
import { parameterShapes, type UNetSpec } from '../model/unet.ts'
import { singleThreaded, type EngineName } from './engine.ts'
import { loadNative } from './ort-native.ts'
import { batchStats, ortInference, ortPasses } from './ort-passes.ts'
import { loadOrtWebGpu, ortWebGpuPasses, type WebGpuOrt } from './ort-webgpu.ts'
import { inProcess, type Pass, type Passes } from './step.ts'
import { tsWorker } from '../util/ts-worker.ts'
import { elementCount } from '../util/shape.ts'

/**
 * The MaCo loss of a forward, for its worker to evaluate (parallel-worker.ts): which branch,
 * the targets, and the step's number `pair`, which the original branch's probabilities carry
 * to the masked branch's worker (sent when `peer`).
 */
export type WorkerLoss = {
  readonly config: LossConfig
  readonly targets: LossTargets
  readonly pair: number
} & ({ readonly branch: 'original'; readonly peer: boolean } | { readonly branch: 'masked' })

/** Between the two workers: the original pass's probabilities of a step, or why there are none. */
export type ToPeer =
  | { readonly pair: number; readonly probabilities: Float32Array; readonly failed?: undefined }
  | { readonly pair: number; readonly failed: string }

/** Messages to a worker. */
export type ToWorker =
  | {
      readonly type: 'init'
      readonly spec: UNetSpec
      readonly engine: EngineName
      /** The other worker of a pair, for `WorkerLoss`. */
      readonly peer?: MessagePort
    }
  | {
      readonly type: 'forward'
      readonly id: number
      readonly weights: Float32Array
      readonly image: Float32Array
      readonly shape: readonly [number, number, number, number]
      readonly seed: readonly (string | number)[]
      /** With it, the whole pass: the reply is 'passed'. */
      readonly loss?: WorkerLoss
    }
  | { readonly type: 'backward'; readonly id: number; readonly dLogits: Float32Array }

/** Messages from a worker, answering the request with the same id (init: id -1). */
export type FromWorker =
  | { readonly type: 'ready'; readonly id: -1 }
  | {
      readonly type: 'forwarded'
      readonly id: number
      readonly logits: Float32Array
      readonly shape: readonly [number, number, number, number]
      readonly stats: Readonly<Record<string, readonly [Float32Array, Float32Array]>>
    }
  | { readonly type: 'gradients'; readonly id: number; readonly grads: Float32Array }
  | {
      readonly type: 'passed'
      readonly id: number
      readonly stats: Readonly<Record<string, readonly [Float32Array, Float32Array]>>
      readonly terms: Partial<Record<LossTerm, number>>
      readonly grads: Float32Array
    }
  | { readonly type: 'failed'; readonly id: number; readonly message: string }

type Shapes = readonly { readonly name: string; readonly shape: readonly number[] }[]

/** Named arrays end to end in the order of `shapes` (one buffer to transfer). */
export const pack = (shapes: Shapes, valueOf: (name: string) => Float32Array): Float32Array => {
  const out = new Float32Array(shapes.reduce((n, s) => n + elementCount(s.shape), 0))
  let offset = 0
  for (const s of shapes) {
    const v = valueOf(s.name)
    out.set(v, offset)
    offset += v.length
  }
  return out
}

/** The inverse of `pack` (views, no copy). */
export const unpack = (shapes: Shapes, packed: Float32Array): Record<string, Float32Array> => {
  let offset = 0
  return Object.fromEntries(
    shapes.map((s) => {
      const n = elementCount(s.shape)
      const v = packed.subarray(offset, offset + n)
      offset += n
      return [s.name, v]
    }),
  )
}

interface Pending {
  readonly resolve: (m: FromWorker) => void
  readonly reject: (e: Error) => void
}

const WORKER_URL = new URL('./parallel-worker.ts', import.meta.url)

/**
 * The passes of this thread for an engine: the `onnxruntime` engine's as whole onnxruntime
 * graphs on `threads` threads (ort-passes.ts), `onnxruntime-webgpu`'s as the same graphs on
 * the GPU (ort-webgpu.ts), every other engine's in tfjs (`inProcess`).
 */
export const singlePasses = async (
  spec: UNetSpec,
  engine: EngineName,
  threads = 1,
): Promise<Passes> => {
  const graphs =
    engine === 'onnxruntime'
      ? ortPasses(spec, threads)
      : engine === 'onnxruntime-webgpu'
        ? E.map((ort: WebGpuOrt) => ortWebGpuPasses(spec, ort))(await loadOrtWebGpu(true))
        : E.right(inProcess(spec))
  if (E.isLeft(graphs)) throw new Error(graphs.left)
  return graphs.right
}

/**
 * The passes of a training step on `engine` with `workers` threads: one per pass on worker
 * threads for the single-threaded engines (onnxruntime, wasm, cpu), else this thread's. A
 * step without the masked pass (no MCM) has one pass, nothing to share out: on onnxruntime
 * it runs on this thread with all `workers` threads inside its graphs.
 */
export const trainingPasses = async (
  spec: UNetSpec,
  engine: EngineName,
  workers: number,
  masked = true,
): Promise<Passes> =>
  !masked
    ? singlePasses(spec, engine, workers)
    : workers > 1 && singleThreaded(engine)
      ? workerPasses(spec, engine, workers)
      : singlePasses(spec, engine)

export const workerPasses = async (
  spec: UNetSpec,
  engine: EngineName,
  count: number,
): Promise<Passes> => {
  const pending = new Map<number, Pending>()
  let nextId = 0
  const workers = Array.from({ length: count }, () => {
    const w = tsWorker(WORKER_URL)
    w.on('message', (m: FromWorker) => {
      const p = pending.get(m.id)
      if (!p) return
      pending.delete(m.id)
      if (m.type === 'failed') p.reject(new Error(m.message))
      else p.resolve(m)
    })
    w.on('error', (e) => {
      for (const p of pending.values()) p.reject(e)
      pending.clear()
    })
    return w
  })
  const request = (w: Worker, m: ToWorker, id: number, transfer: TransferListItem[] = []) =>
    new Promise<FromWorker>((resolve, reject) => {
      pending.set(id, { resolve, reject })
      w.postMessage(m, transfer)
    })
  // The pair's link for the masked branch (`withLoss`): the original pass runs on the first.
  const link = count === 2 ? new MessageChannel() : undefined
  const peers: (MessagePort | undefined)[] = [link?.port1, link?.port2]
  // Init requests share id -1: answer them one worker at a time.
  try {
    for (const [i, w] of workers.entries()) {
      const peer = peers[i]
      await request(w, { type: 'init', spec, engine, peer }, -1, peer ? [peer] : [])
    }
  } catch (e) {
    await Promise.all(workers.map((w) => w.terminate()))
    throw e
  }

  const trainable = parameterShapes(spec).filter((p) => p.trainable)
  /** Sends each image's forward to its worker; `loss` gives a forward its `WorkerLoss`. */
  const sendForwards = (
    params: Parameters<Passes['forward']>[0],
    images: readonly tf.Tensor4D[],
    seeds: readonly (readonly (string | number)[])[],
    loss?: (i: number) => WorkerLoss,
  ) => {
    const weights = pack(parameterShapes(spec), (n) => params[n].dataSync() as Float32Array)
    return Promise.all(
      images.map((image, i) => {
        const id = nextId++
        const data = (image.dataSync() as Float32Array).slice()
        // Each worker is sent its own copy (a transfer empties it); the last one gets the original.
        const copy = i === images.length - 1 ? weights : weights.slice()
        const shape = image.shape as [number, number, number, number]
        const w = workers[i % workers.length]
        const m: ToWorker = {
          type: 'forward',
          id,
          weights: copy,
          image: data,
          shape,
          seed: seeds[i],
          ...(loss ? { loss: loss(i) } : {}),
        }
        return request(w, m, id, [copy.buffer as ArrayBuffer, data.buffer as ArrayBuffer]).then(
          (reply) => ({ m: reply, w, id }),
        )
      }),
    )
  }
  const gradientTensors = (packed: Float32Array) => {
    const grads = unpack(trainable, packed)
    return Object.fromEntries(
      trainable.map((p) => [p.name, tf.tensor(grads[p.name], [...p.shape])]),
    )
  }
  const forward: Passes['forward'] = async (params, images, seeds) => {
    const replies = await sendForwards(params, images, seeds)
    return replies.map(({ m, w, id }): Pass => {
      if (m.type !== 'forwarded') throw new Error(`unexpected reply '${m.type}' to a forward`)
      const stats = batchStats(m.stats)
      return {
        logits: tf.tensor4d(m.logits, [...m.shape]),
        stats,
        backward: async (d) => {
          tf.dispose(Object.values(stats).flatMap((s) => [s.mean, s.variance]))
          const dLogits = (d.dataSync() as Float32Array).slice()
          const reply = await request(w, { type: 'backward', id, dLogits }, id, [
            dLogits.buffer as ArrayBuffer,
          ])
          if (reply.type !== 'gradients')
            throw new Error(`unexpected reply '${reply.type}' to a backward`)
          return gradientTensors(reply.grads)
        },
      }
    })
  }
  let pairs = 0
  const withLoss: Passes['withLoss'] = async (params, images, seeds, { config, targets }) => {
    const pair = pairs++
    // What each branch reads: the masked one only the scribbles.
    const original = { config, targets, pair, branch: 'original', peer: images.length > 1 } as const
    const masked = {
      config,
      targets: { scribbles: targets.scribbles, unlabelled: targets.unlabelled },
      pair,
      branch: 'masked',
    } as const
    const replies = await sendForwards(params, images, seeds, (i) => (i === 0 ? original : masked))
    const passed = replies.map(({ m }) => {
      if (m.type !== 'passed') throw new Error(`unexpected reply '${m.type}' to a whole pass`)
      return m
    })
    return {
      stats: passed.map((m) => batchStats(m.stats)),
      terms: Object.assign({}, ...passed.map((m) => m.terms)),
      grads: passed.map((m) => gradientTensors(m.grads)),
    }
  }
  // Between the steps the workers wait: validation takes their cores on this thread.
  const native = engine === 'onnxruntime' ? loadNative() : undefined
  return {
    forward,
    ...(count === 2 ? { withLoss } : {}),
    ...(native && E.isRight(native) ? { inference: ortInference(native.right, spec, count) } : {}),
    close: async () => void (await Promise.all(workers.map((w) => w.terminate()))),
  }
}
