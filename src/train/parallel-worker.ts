/**
 * The worker thread of `parallel.ts`: loads its own engine, then runs training forward
 * passes and their backwards on request, keeping each pass until its backward arrives. On
 * the `onnxruntime` engine the passes are its graphs on the host arrays the messages carry
 * (`ortHostPasses`): the weights and gradients, 7 MB each for the paper UNet, go straight
 * between the message and onnxruntime, with no tfjs tensors made of them and read back
 * (four copies a pass, and their garbage). Elsewhere they are this thread's tfjs passes
 * (`singlePasses`).
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { parentPort } from 'node:worker_threads'
import { toParams, type Params } from '../model/tfjs-unet.ts'
import { parameterShapes, type UNetSpec } from '../model/unet.ts'
import { loadEngine } from './engine.ts'
import { ortHostPasses, type HostPass, type HostPasses } from './ort-passes.ts'
import { pack, singlePasses, unpack, type FromWorker, type ToWorker } from './parallel.ts'
import type { Pass, Passes } from './step.ts'

type Shapes = ReturnType<typeof parameterShapes>

const port = parentPort
if (!port) throw new Error('parallel-worker.ts runs only as a worker thread')

let spec: UNetSpec | undefined
let runner: Passes | undefined
/** On the `onnxruntime` engine: its graphs on host arrays, and the weights' layout in a message. */
let host:
  { readonly graphs: HostPasses; readonly shapes: Shapes; readonly trainable: Shapes } | undefined
const passes = new Map<number, { pass: Pass; params: Params; image: tf.Tensor }>()
const hostPasses = new Map<number, HostPass>()

const reply = (m: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer)

const handle = async (m: ToWorker): Promise<void> => {
  if (m.type === 'init') {
    const r = await loadEngine(m.engine)()
    if (E.isLeft(r)) throw new Error(r.left)
    spec = m.spec
    if (m.engine === 'onnxruntime') {
      const graphs = ortHostPasses(m.spec)
      if (E.isLeft(graphs)) throw new Error(graphs.left)
      const shapes = parameterShapes(m.spec)
      host = { graphs: graphs.right, shapes, trainable: shapes.filter((p) => p.trainable) }
    } else runner = await singlePasses(m.spec, m.engine)
    return reply({ type: 'ready', id: -1 })
  }
  if (!spec) throw new Error('worker used before init')
  if (host) return handleOnHost(host, m)
  if (!runner) throw new Error('worker used before init')
  if (m.type === 'forward') {
    const params = toParams(spec, unpack(parameterShapes(spec), m.weights))
    const image = tf.tensor4d(m.image, [...m.shape])
    const [pass] = await runner.forward(params, [image as tf.Tensor4D], [m.seed])
    passes.set(m.id, { pass, params, image })
    const logits = (await pass.logits.data()) as Float32Array
    const stats = Object.fromEntries(
      Object.entries(pass.stats).map(([name, s]) => [
        name,
        [s.mean.dataSync() as Float32Array, s.variance.dataSync() as Float32Array] as const,
      ]),
    )
    return reply(
      {
        type: 'forwarded',
        id: m.id,
        logits,
        shape: pass.logits.shape as [number, number, number, number],
        stats,
      },
      [logits.buffer as ArrayBuffer],
    )
  }
  const held = passes.get(m.id)
  if (!held) throw new Error(`no pass ${m.id} to differentiate`)
  passes.delete(m.id)
  const dLogits = tf.tensor4d(m.dLogits, held.pass.logits.shape)
  try {
    const grads = await held.pass.backward(dLogits)
    const trainable = parameterShapes(spec).filter((p) => p.trainable)
    const packed = pack(trainable, (n) => grads[n].dataSync() as Float32Array)
    tf.dispose(Object.values(grads))
    reply({ type: 'gradients', id: m.id, grads: packed }, [packed.buffer as ArrayBuffer])
  } finally {
    tf.dispose([dLogits, held.pass.logits, held.image, ...Object.values(held.params)])
  }
}

const handleOnHost = async (
  { graphs, shapes, trainable }: NonNullable<typeof host>,
  m: Exclude<ToWorker, { type: 'init' }>,
): Promise<void> => {
  if (m.type === 'forward') {
    const views = unpack(shapes, m.weights)
    const weights = new Map(shapes.map((p) => [p.name, { data: views[p.name], dims: p.shape }]))
    const pass = await graphs.pass(weights, { data: m.image, dims: m.shape }, m.seed)
    hostPasses.set(m.id, pass)
    // A copy to transfer: onnxruntime's output buffers are its own.
    const logits = pass.logits.data.slice()
    const shape = pass.logits.dims as [number, number, number, number]
    return reply({ type: 'forwarded', id: m.id, logits, shape, stats: pass.stats }, [
      logits.buffer as ArrayBuffer,
    ])
  }
  const pass = hostPasses.get(m.id)
  if (!pass) throw new Error(`no pass ${m.id} to differentiate`)
  hostPasses.delete(m.id)
  const gradient = await pass.backward(m.dLogits)
  const packed = pack(trainable, gradient)
  reply({ type: 'gradients', id: m.id, grads: packed }, [packed.buffer as ArrayBuffer])
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
