import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { DEFAULT_LOSS, macoLoss, softmax } from '../../src/maco/losses.ts'
import { initialWeights, toParams } from '../../src/model/tfjs-unet.ts'
import { unetSpec } from '../../src/model/unet.ts'
import { loadEngine } from '../../src/train/engine.ts'
import { computeGradients, inProcess, type StepBatch } from '../../src/train/step.ts'
import { seeded } from '../../src/util/rng.ts'
import { elementCount } from '../../src/util/shape.ts'

// The webgpu engine on whatever adapter this machine has: on a CPU machine, Mesa's llvmpipe
// (OpenGL ES, compatibility mode; .ci/run installs it). Skips with the reason when none.
const webgpu = await loadEngine('webgpu')()
const skip = E.isLeft(webgpu) && `no webgpu engine here: ${webgpu.left}`

const spec = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2], classes: 3 })
const [n, size, classes] = [2, 16, 3]

/** A MaCo batch made by code: noise images, a masked copy, scribbles, GC region, CPL. */
const batchArrays = () => {
  const rng = seeded(3, 'webgpu batch')
  const image = Float32Array.from({ length: n * size * size }, () => rng.normal())
  const masked = image.map((v, i) => (Math.floor(i / 4) % 3 === 0 ? 0 : v))
  // Every fourth pixel scribbled (class by position), the rest unlabelled (= classes).
  const scribbles = Int32Array.from({ length: n * size * size }, (_, i) =>
    i % 4 === 0 ? (i >> 2) % classes : classes,
  )
  const gc = Float32Array.from({ length: n * size * size }, (_, i) => (i % size > 3 ? 1 : 0))
  const cpl = Float32Array.from({ length: n * size * size * classes }, () => rng.uniform())
  return { image, masked, scribbles, gc, cpl }
}

type MacoBatch = StepBatch & { scribbles: tf.Tensor3D; gc: tf.Tensor3D; cpl: tf.Tensor4D }

/** The gradients of one full MaCo step (both passes, the real loss) on the active engine. */
const stepGradients = async () => {
  const a = batchArrays()
  const batch: MacoBatch = {
    image: tf.tensor4d(a.image, [n, size, size, 1]),
    masked: tf.tensor4d(a.masked, [n, size, size, 1]),
    scribbles: tf.tensor3d(a.scribbles, [n, size, size], 'int32'),
    gc: tf.tensor3d(a.gc, [n, size, size]),
    cpl: tf.tensor4d(a.cpl, [n, size, size, classes]),
  }
  const params = toParams(spec, initialWeights(spec, 7))
  const loss = (logits: tf.Tensor4D, maskedLogits: tf.Tensor4D | undefined, b: MacoBatch) =>
    macoLoss(DEFAULT_LOSS, { ...b, logits, maskedLogits, unlabelled: classes })
  const g = await computeGradients(inProcess(spec), params, batch, loss, { seed: 1, step: 0 })
  const grads: Record<string, Float32Array> = {}
  for (const [k, v] of Object.entries(g.grads)) grads[k] = (await v.data()) as Float32Array
  tf.dispose([...Object.values(g.grads), ...Object.values(g.params), ...Object.values(batch)])
  return { loss: g.loss, grads }
}

t.test('a MaCo step on webgpu gives the cpu backend gradients', { skip }, async (t) => {
  t.comment(E.isRight(webgpu) ? `adapter: ${webgpu.right.device}` : '')
  const onGpu = await stepGradients()
  await loadEngine('cpu')()
  const onCpu = await stepGradients()
  await tf.setBackend('webgpu')
  t.ok(Math.abs(onGpu.loss - onCpu.loss) < 1e-4 * Math.abs(onCpu.loss), 'same loss')
  t.same(Object.keys(onGpu.grads).sort(), Object.keys(onCpu.grads).sort(), 'same weights')
  let worst = 0
  for (const [k, ref] of Object.entries(onCpu.grads)) {
    const got = onGpu.grads[k]
    const scale = Math.max(...ref.map(Math.abs), 1e-6)
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]) / scale)
  }
  t.ok(
    worst < 1e-3,
    `largest difference ${worst.toExponential(2)} of each weight's largest gradient`,
  )
})

t.test('the host softmax used on webgpu equals tf.softmax and sums to 1', async (t) => {
  const logits = Float32Array.from(
    { length: 5 * 4 },
    (_, i) => ((i * 37) % 11) - 5 + (i === 3 ? 90 : 0),
  )
  const p = softmax(logits, 4)
  const engine = await loadEngine('cpu')()
  t.ok(E.isRight(engine))
  const ref = tf.softmax(tf.tensor2d(logits, [5, 4])).dataSync()
  for (let i = 0; i < p.length; i++) t.ok(Math.abs(p[i] - ref[i]) < 1e-6, `p[${i}]`)
  for (let r = 0; r < 5; r++)
    t.ok(Math.abs(p.subarray(4 * r, 4 * r + 4).reduce((a, b) => a + b, 0) - 1) < 1e-6, `row ${r}`)
  if (!skip) await tf.setBackend('webgpu')
})

t.test('the webgpu filter gradient and global pool equal the cpu backend', { skip }, async (t) => {
  const cases = [
    { x: [2, 5, 7, 3], k: 3, o: 4 },
    { x: [1, 6, 4, 2], k: 1, o: 3 },
    { x: [3, 7, 5, 2], k: 5, o: 2 },
  ]
  const run = async (backend: string) => {
    await tf.setBackend(backend)
    const rng = seeded(9, 'inputs')
    const normal = (shape: number[]) =>
      Float32Array.from({ length: elementCount(shape) }, () => rng.normal())
    const results: Float32Array[] = []
    for (const c of cases) {
      const [b, h, w, ci] = c.x
      const x = tf.tensor4d(normal(c.x), c.x as [number, number, number, number])
      const dy = tf.tensor4d(normal([b, h, w, c.o]), [b, h, w, c.o])
      const dw = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, {
        strides: [1, 1],
        pad: 'same',
        dataFormat: 'NHWC',
        dimRoundingMode: undefined,
        filterShape: [c.k, c.k, ci, c.o],
      } as unknown as tf.NamedAttrMap) as tf.Tensor
      results.push((await dw.data()) as Float32Array)
      const pooled = tf.avgPool(x, [h, w], 1, 'valid')
      t.same(pooled.shape, [b, 1, 1, ci], `pooled shape on ${backend}`)
      results.push((await pooled.data()) as Float32Array)
      tf.dispose([x, dy, dw, pooled])
    }
    return results
  }
  const onGpu = await run('webgpu')
  const onCpu = await run('cpu')
  await tf.setBackend('webgpu')
  onCpu.forEach((ref, k) => {
    const worst = Math.max(...ref.map((v, i) => Math.abs(v - onGpu[k][i])))
    t.ok(worst < 1e-4, `result ${k}: largest difference ${worst.toExponential(2)}`)
  })
})
