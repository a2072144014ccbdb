/**
 * The worker thread of `parallel.ts`: loads its own engine, then runs training forward
 * passes and their backwards on request, keeping each pass until its backward arrives. The
 * passes are this thread's runner for the engine (`singlePasses`): onnxruntime graphs on the
 * `onnxruntime` engine, tfjs elsewhere.
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { parentPort } from 'node:worker_threads'
import { toParams, type Params } from '../model/tfjs-unet.ts'
import { parameterShapes, type UNetSpec } from '../model/unet.ts'
import { loadEngine } from './engine.ts'
import { pack, singlePasses, unpack, type FromWorker, type ToWorker } from './parallel.ts'
import type { Pass, Passes } from './step.ts'

const port = parentPort
if (!port) throw new Error('parallel-worker.ts runs only as a worker thread')

let spec: UNetSpec | undefined
let runner: Passes | undefined
const passes = new Map<number, { pass: Pass; params: Params; image: tf.Tensor }>()

const reply = (m: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer)

const handle = async (m: ToWorker): Promise<void> => {
  if (m.type === 'init') {
    const r = await loadEngine(m.engine)()
    if (E.isLeft(r)) throw new Error(r.left)
    spec = m.spec
    runner = await singlePasses(m.spec, m.engine)
    return reply({ type: 'ready', id: -1 })
  }
  if (!spec || !runner) throw new Error('worker used before init')
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

port.on('message', (m: ToWorker) => {
  handle(m).catch((e: unknown) =>
    reply({
      type: 'failed',
      id: 'id' in m ? m.id : -1,
      message: e instanceof Error ? e.message : String(e),
    }),
  )
})
