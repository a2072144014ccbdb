import * as tf from '@tensorflow/tfjs-core'
import t from 'tap'
import { initialWeights, toParams } from '../../src/model/tfjs-unet.ts'
import { unetSpec } from '../../src/model/unet.ts'
import { loadEngine } from '../../src/train/engine.ts'
import {
  adamUpdate,
  disposeState,
  initialState,
  inProcess,
  trainStep,
  type StepBatch,
} from '../../src/train/step.ts'
import { seeded } from '../../src/util/rng.ts'

// wasm: the cpu backend's filter gradient is ~20x slower, and wasm is always there.
const engine = await loadEngine('wasm')()
if (engine._tag === 'Left') throw new Error(engine.left)

const tiny = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2], classes: 2 })

/** Bright discs on noise; the target is the disc. */
const discBatch = (n: number, size: number) => {
  const rng = seeded(1, 'discs')
  const image = new Float32Array(n * size * size)
  const target = new Float32Array(n * size * size * 2)
  for (let b = 0; b < n; b++) {
    const cx = size * (0.3 + 0.4 * rng.uniform())
    const cy = size * (0.3 + 0.4 * rng.uniform())
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++) {
        const i = (b * size + y) * size + x
        const inside = (x - cx) ** 2 + (y - cy) ** 2 < (size / 5) ** 2 ? 1 : 0
        image[i] = inside + 0.3 * rng.normal()
        target[2 * i + inside] = 1
      }
  }
  const imageT = tf.tensor4d(image, [n, size, size, 1])
  return {
    image: imageT,
    masked: tf.mul(
      imageT,
      tf.tensor4d(
        image.map((_, i) => (Math.floor(i / 8) % 2 ? 1 : 0)),
        [n, size, size, 1],
      ),
    ) as tf.Tensor4D,
    target: tf.tensor4d(target, [n, size, size, 2]),
  }
}
type DiscBatch = StepBatch & { target: tf.Tensor4D }

/** Cross-entropy on both passes plus their squared disagreement: MaCo's shape of loss. */
const loss = (logits: tf.Tensor4D, masked: tf.Tensor4D | undefined, b: DiscBatch) =>
  tf.tidy(() => {
    const ce = (l: tf.Tensor4D) => tf.neg(tf.mean(tf.sum(tf.mul(b.target, tf.logSoftmax(l)), 3)))
    if (!masked) return ce(logits)
    return tf.add(
      tf.add(ce(logits), tf.mul(ce(masked), 0.5)),
      tf.mean(tf.squaredDifference(tf.softmax(logits), tf.softmax(masked))),
    )
  }) as tf.Scalar

t.test('Adam follows PyTorch, bias correction included, over several steps', async (t) => {
  const p0 = [0.5, -1, 2]
  const grads = [
    [0.1, -0.2, 0.3],
    [-0.4, 0.1, 0.0],
    [0.2, 0.2, -0.5],
  ]
  const o = { learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
  const p = [...p0]
  const m = [0, 0, 0]
  const v = [0, 0, 0]
  grads.forEach((g, k) => {
    for (let j = 0; j < 3; j++) {
      m[j] = o.beta1 * m[j] + (1 - o.beta1) * g[j]
      v[j] = o.beta2 * v[j] + (1 - o.beta2) * g[j] ** 2
      p[j] -=
        (o.learningRate * (m[j] / (1 - o.beta1 ** (k + 1)))) /
        (Math.sqrt(v[j] / (1 - o.beta2 ** (k + 1))) + o.epsilon)
    }
  })
  let state = {
    params: { w: tf.tensor1d(p0) },
    adam: { step: 0, m: { w: tf.zeros([3]) }, v: { w: tf.zeros([3]) } },
  }
  for (const g of grads) {
    const gt = tf.tensor1d(g)
    state = adamUpdate(state, { w: gt }, o) as typeof state
    gt.dispose()
  }
  const got = Array.from(state.params.w.dataSync())
  got.forEach((x, j) => t.ok(Math.abs(x - p[j]) < 1e-6, `${x} vs ${p[j]}`))
  t.equal(state.adam.step, 3)
})

t.test(
  'training steps lower the loss, update the moving statistics and leak no tensors',
  async (t) => {
    const data = discBatch(2, 32)
    let state = initialState(tiny, toParams(tiny, initialWeights(tiny, 3)))
    const passes = inProcess(tiny)
    const adam = { learningRate: 3e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
    const losses: number[] = []
    const counts: number[] = []
    const before = state.params['enc0.bn1.movingMean'].dataSync().slice()
    for (let epoch = 0; epoch < 3; epoch++)
      for (let s = 0; s < 4; s++) {
        const r = await trainStep(passes, state, data, loss, { seed: 3, step: epoch * 4 + s }, adam)
        state = r.state
        losses.push(r.loss)
        counts.push(tf.memory().numTensors)
      }
    t.ok(
      losses.at(-1)! < 0.7 * losses[0],
      `loss ${losses[0].toFixed(3)} -> ${losses.at(-1)!.toFixed(3)}`,
    )
    t.same(new Set(counts.slice(1)).size, 1, `tensor count flat: ${counts.join(' ')}`)
    t.notSame(Array.from(state.params['enc0.bn1.movingMean'].dataSync()), Array.from(before))
    t.equal(state.adam.step, 12)
    disposeState(state)
    tf.dispose(Object.values(data))
  },
)

t.test(
  'moving statistics: every pass (PyTorch calling the net twice) or the original only',
  async (t) => {
    const data = discBatch(2, 32)
    const run = async (movingStats: 'every-pass' | 'original', masked: boolean) => {
      const state = initialState(tiny, toParams(tiny, initialWeights(tiny, 4)))
      const batch = masked ? data : { image: data.image, target: data.target }
      const r = await trainStep(
        inProcess(tiny),
        state,
        batch,
        loss,
        { seed: 4, step: 0 },
        undefined,
        movingStats,
      )
      const mv = r.state.params['enc0.bn1.movingVariance'].dataSync().slice()
      disposeState(r.state)
      return mv
    }
    const original = await run('original', true)
    const noMasked = await run('every-pass', false)
    const both = await run('every-pass', true)
    t.same(
      Array.from(original),
      Array.from(noMasked),
      'original only = a step without masked images',
    )
    t.notSame(Array.from(both), Array.from(original), 'the masked pass moves them too')
    tf.dispose(Object.values(data))
  },
)

t.test('the same seed and step give the same update (dropout masks are seeded)', async (t) => {
  const data = discBatch(2, 32)
  const once = async () => {
    const r = await trainStep(
      inProcess(tiny),
      initialState(tiny, toParams(tiny, initialWeights(tiny, 5))),
      data,
      loss,
      { seed: 5, step: 7 },
    )
    const w = r.state.params['enc1.conv1.kernel'].dataSync().slice()
    disposeState(r.state)
    return { w, loss: r.loss }
  }
  const a = await once()
  const b = await once()
  t.equal(a.loss, b.loss)
  t.ok(a.w.every((x, i) => x === b.w[i]))
  tf.dispose(Object.values(data))
})
