/**
 * The worker thread of `parallel.ts`: loads its own engine, then runs training forward
 * passes and their backwards on request, keeping each pass until its backward arrives. On
 * the `onnxruntime` engine the passes are its graphs on the host arrays the messages carry
 * (`ortHostPasses`): the weights and gradients, 7 MB each for the paper UNet, go straight
 * between the message and onnxruntime, with no tfjs tensors made of them and read back
 * (four copies a pass, and their garbage). Elsewhere they are this thread's tfjs passes
 * (`singlePasses`).
 *
 * A forward that brings the MaCo loss (`WorkerLoss`) is a whole pass: the worker evaluates
 * its pass's branch of the loss and runs the backward at once, without a round trip to the
 * main thread. The masked branch needs the original pass's probabilities: the original
 * pass's worker sends them over the port that links the two workers (`peer`), before it
 * evaluates its own branch.
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { parentPort, type MessagePort } from 'node:worker_threads'
import {
  maskedBranchLoss,
  originalBranchLoss,
  probabilitiesOf,
  type BranchLoss,
} from '../maco/losses.ts'
import { toParams } from '../model/tfjs-unet.ts'
import { parameterShapes, type UNetSpec } from '../model/unet.ts'
import { loadEngine } from './engine.ts'
import { ortHostPasses, type HostPasses } from './ort-passes.ts'
import {
  pack,
  singlePasses,
  unpack,
  type FromWorker,
  type ToPeer,
  type ToWorker,
  type WorkerLoss,
} from './parallel.ts'
import type { Passes } from './step.ts'

type Shapes = ReturnType<typeof parameterShapes>
type Forward = Extract<ToWorker, { type: 'forward' }>
type Dims4 = readonly [number, number, number, number]

const port = parentPort
if (!port) throw new Error('parallel-worker.ts runs only as a worker thread')

/** A forward pass on this thread, on host arrays, until its backward. */
interface Held {
  /** NHWC; it may be the runtime's own buffer: a copy is what can be transferred. */
  readonly logits: Float32Array
  readonly shape: Dims4
  readonly stats: Readonly<Record<string, readonly [Float32Array, Float32Array]>>
  /** The trainable weights' gradients packed in `parameterShapes` order; frees the pass. */
  readonly backward: (dLogits: Float32Array) => Promise<Float32Array>
}

/** How this thread runs a forward, once its engine is loaded. */
let forwardOf: ((m: Forward) => Promise<Held>) | undefined
let peer: MessagePort | undefined
const held = new Map<number, Held>()

const reply = (m: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer)

/** The onnxruntime engine's passes: its graphs straight on the message's arrays. */
const hostForward =
  (graphs: HostPasses, shapes: Shapes, trainable: Shapes) =>
  async (m: Forward): Promise<Held> => {
    const views = unpack(shapes, m.weights)
    const weights = new Map(shapes.map((p) => [p.name, { data: views[p.name], dims: p.shape }]))
    const pass = await graphs.pass(weights, { data: m.image, dims: m.shape }, m.seed)
    return {
      logits: pass.logits.data,
      shape: pass.logits.dims as unknown as Dims4,
      stats: pass.stats,
      backward: async (dLogits) => pack(trainable, await pass.backward(dLogits)),
    }
  }

/** Every other engine's passes, in tfjs on this thread. */
const tfjsForward =
  (runner: Passes, spec: UNetSpec, shapes: Shapes, trainable: Shapes) =>
  async (m: Forward): Promise<Held> => {
    const params = toParams(spec, unpack(shapes, m.weights))
    const image = tf.tensor4d(m.image, [...m.shape])
    const [pass] = await runner.forward(params, [image as tf.Tensor4D], [m.seed])
    const shape = pass.logits.shape as unknown as Dims4
    return {
      logits: (await pass.logits.data()) as Float32Array,
      shape,
      stats: Object.fromEntries(
        Object.entries(pass.stats).map(([name, s]) => [
          name,
          [s.mean.dataSync() as Float32Array, s.variance.dataSync() as Float32Array] as const,
        ]),
      ),
      backward: async (dLogits) => {
        const d = tf.tensor4d(dLogits, [...shape])
        try {
          const grads = await pass.backward(d)
          const packed = pack(trainable, (n) => grads[n].dataSync() as Float32Array)
          tf.dispose(Object.values(grads))
          return packed
        } finally {
          tf.dispose([d, pass.logits, image, ...Object.values(params)])
        }
      },
    }
  }

/** The original pass's probabilities by step, from the peer: arrived, or awaited. */
const arrived = new Map<number, Float32Array | Error>()
const awaited = new Map<number, (v: Float32Array | Error) => void>()

const fromPeer = (m: ToPeer) => {
  const value = m.failed === undefined ? m.probabilities : new Error(m.failed)
  const waiting = awaited.get(m.pair)
  awaited.delete(m.pair)
  if (waiting) waiting(value)
  else arrived.set(m.pair, value)
}

const peerProbabilities = (pair: number): Promise<Float32Array> =>
  new Promise((resolve, reject) => {
    const settle = (v: Float32Array | Error) => (v instanceof Error ? reject(v) : resolve(v))
    const value = arrived.get(pair)
    arrived.delete(pair)
    if (value !== undefined) settle(value)
    else awaited.set(pair, settle)
  })

const toPeer = (m: ToPeer, transfer: ArrayBuffer[] = []) => {
  if (!peer) throw new Error('the masked branch needs two linked workers')
  peer.postMessage(m, transfer)
}

/** This pass's branch of the loss (see the module comment). */
const branchLoss = async (pass: Held, loss: WorkerLoss): Promise<BranchLoss> => {
  const classes = pass.shape[3]
  const probabilities = probabilitiesOf(pass.logits, pass.shape)
  if (loss.branch === 'masked') {
    const reference = await peerProbabilities(loss.pair)
    return maskedBranchLoss(
      loss.config,
      loss.targets,
      pass.logits,
      probabilities,
      reference,
      classes,
    )
  }
  if (loss.peer) {
    const copy = Float32Array.from(probabilities)
    toPeer({ pair: loss.pair, probabilities: copy }, [copy.buffer as ArrayBuffer])
  }
  return originalBranchLoss(loss.config, loss.targets, pass.logits, probabilities, classes)
}

/** A forward with the loss: its branch, its backward, one reply. */
const wholePass = async (m: Forward, loss: WorkerLoss, forward: (m: Forward) => Promise<Held>) => {
  let pass: Held
  try {
    pass = await forward(m)
  } catch (e) {
    // The masked branch waits for these probabilities: tell it they are not coming.
    if (loss.branch === 'original' && loss.peer)
      toPeer({ pair: loss.pair, failed: e instanceof Error ? e.message : String(e) })
    throw e
  }
  const branch = await branchLoss(pass, loss)
  const grads = await pass.backward(branch.dLogits)
  reply({ type: 'passed', id: m.id, stats: pass.stats, terms: branch.terms, grads }, [
    grads.buffer as ArrayBuffer,
  ])
}

const init = async (m: Extract<ToWorker, { type: 'init' }>) => {
  const r = await loadEngine(m.engine)()
  if (E.isLeft(r)) throw new Error(r.left)
  const shapes = parameterShapes(m.spec)
  const trainable = shapes.filter((p) => p.trainable)
  if (m.engine === 'onnxruntime') {
    const graphs = ortHostPasses(m.spec)
    if (E.isLeft(graphs)) throw new Error(graphs.left)
    forwardOf = hostForward(graphs.right, shapes, trainable)
  } else forwardOf = tfjsForward(await singlePasses(m.spec, m.engine), m.spec, shapes, trainable)
  peer = m.peer
  peer?.on('message', fromPeer)
}

const handle = async (m: ToWorker): Promise<void> => {
  if (m.type === 'init') {
    await init(m)
    return reply({ type: 'ready', id: -1 })
  }
  if (!forwardOf) throw new Error('worker used before init')
  if (m.type === 'forward') {
    if (m.loss) return wholePass(m, m.loss, forwardOf)
    const pass = await forwardOf(m)
    held.set(m.id, pass)
    const logits = pass.logits.slice()
    return reply({ type: 'forwarded', id: m.id, logits, shape: pass.shape, stats: pass.stats }, [
      logits.buffer as ArrayBuffer,
    ])
  }
  const pass = held.get(m.id)
  if (!pass) throw new Error(`no pass ${m.id} to differentiate`)
  held.delete(m.id)
  const grads = await pass.backward(m.dLogits)
  reply({ type: 'gradients', id: m.id, grads }, [grads.buffer as ArrayBuffer])
}

port.on('message', (m: ToWorker) => {
  handle(m).catch((e: unknown) =>
    reply({
      type: 'failed',
      id: 'id' in m ? m.id : -1,
      message: e instanceof Error ? e.message : String(e),
    }),
  )
})
