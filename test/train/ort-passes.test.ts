import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { dropoutValues, initialWeights, toParams } from '../../src/model/tfjs-unet.ts'
import { unetSpec, type UNetSpec } from '../../src/model/unet.ts'
import { upsampleMatrix } from '../../src/train/ort-graphs.ts'
import { loadNative, openSession } from '../../src/train/ort-native.ts'
import { maskNchw, ortPasses } from '../../src/train/ort-passes.ts'
import { trainingPasses } from '../../src/train/parallel.ts'
import {
  computeGradients,
  disposeState,
  initialState,
  inProcess,
  trainStep,
  type Passes,
  type StepBatch,
} from '../../src/train/step.ts'
import { networkSpec } from '../../src/train/recipe.ts'
import { installed } from '../../src/util/installed.ts'
import { seeded, type Rng } from '../../src/util/rng.ts'
import { use } from '../helpers/conv-cases.ts'
import {
  compare,
  keepsForwardsApart,
  random,
  relative,
  tiedPool,
  validatesAsTfjs,
} from '../helpers/pass-compare.ts'
import { tiny } from '../helpers/tiny-training.ts'

if (!installed('onnxruntime-node')) {
  t.comment('skipped: onnxruntime-node is not installed (npm i onnxruntime-node)')
  process.exit(0)
}
// The reference: tfjs's forwardTrain and its hand-written backward, on the cpu backend.
await use('cpu')

const onGraphs = async (s: UNetSpec): Promise<Passes> => {
  const graphs = ortPasses(s)
  if (E.isLeft(graphs)) throw new Error(graphs.left)
  return graphs.right
}

t.test('one pass matches tfjs: logits, batch statistics and every gradient', async (t) => {
  await compare(
    t,
    unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] }),
    [2, 32, 32],
    onGraphs,
  )
})

t.test(
  "a max pool's gradient goes to the first maximum of each window, ties included",
  async (t) => {
    const pool = tiedPool()
    const native = loadNative()
    if (E.isLeft(native)) throw new Error(native.left)
    const session = openSession(native.right, pool.model, 1)
    const { dx } = session.run(
      { x: native.right.tensor(pool.x, pool.dims), g: native.right.tensor(pool.g, [1, 2, 2, 2]) },
      { dx: null },
      {},
    )
    t.same([...dx.data], [...pool.dx])
    session.dispose()
  },
)

t.test('a step of one pass (no MCM) on two onnxruntime threads matches tfjs too', async (t) => {
  await compare(t, unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] }), [2, 32, 32], (s) =>
    trainingPasses(s, 'onnxruntime', 2, false),
  )
})

t.test(
  'and on a non-square batch of one image (against wasm: the cpu backend cannot)',
  async (t) => {
    // tfjs's cpu Conv2DBackpropFilter reads out of range when height and width differ; the
    // wasm backend's filter gradient is this project's, checked against cpu on square cases.
    await use('wasm')
    try {
      await compare(
        t,
        unetSpec({ base: 2, levels: 3, dropout: [0.05, 0.1, 0.2] }),
        [1, 16, 40],
        onGraphs,
      )
    } finally {
      await use('cpu')
    }
  },
)

t.test('upsampling rows interpolate between source samples, corners aligned', async (t) => {
  // 3 samples to 6: positions 0, 0.4, 0.8, 1.2, 1.6, 2.
  t.same(
    [...upsampleMatrix(3)].map((x) => Math.round(x * 10) / 10),
    [1, 0, 0, 0.6, 0.4, 0, 0.2, 0.8, 0, 0, 0.8, 0.2, 0, 0.4, 0.6, 0, 0, 1],
  )
})

t.test('steps on the graphs leave no tensors behind, and repeat exactly', async (t) => {
  const spec = unetSpec({ base: 2, levels: 3, dropout: [0.05, 0.1, 0.2] })
  const graphs = ortPasses(spec)
  if (E.isLeft(graphs)) throw new Error(graphs.left)
  const batch = {
    image: random([2, 16, 16, 1], 'image') as tf.Tensor4D,
    masked: random([2, 16, 16, 1], 'masked') as tf.Tensor4D,
  }
  const loss = (a: tf.Tensor4D, b: tf.Tensor4D | undefined) =>
    tf.tidy(() => tf.mean(tf.square(tf.sub(tf.softmax(a), tf.softmax(b!))))) as tf.Scalar
  const run = async () => {
    let state = initialState(spec, toParams(spec, initialWeights(spec, 1)))
    const counts: number[] = []
    const losses: number[] = []
    for (let step = 0; step < 4; step++) {
      const r = await trainStep(graphs.right, state, batch, loss, { seed: 1, step })
      state = r.state
      losses.push(r.loss)
      counts.push(tf.memory().numTensors)
    }
    const weights = state.params['enc0.conv1.kernel'].dataSync().slice()
    disposeState(state)
    return { counts, losses, weights }
  }
  const first = await run()
  const again = await run()
  t.same(new Set(first.counts).size, 1, `tensors flat: ${first.counts.join(' ')}`)
  t.same(again.losses, first.losses, 'the same losses')
  t.same(again.weights, first.weights, 'the same weights')
  t.not(first.losses[0], first.losses[3], 'it trains')
  tf.dispose(Object.values(batch))
  await graphs.right.close()
})

t.test('passes in flight together and one after another keep their values apart', async (t) => {
  // Two passes a step hold their saved values and masks at once, and the next step's passes
  // reuse them: every step's gradients must still be tfjs's.
  const spec = unetSpec({ base: 2, levels: 3, dropout: [0.05, 0.1, 0.2] })
  const graphs = ortPasses(spec)
  if (E.isLeft(graphs)) throw new Error(graphs.left)
  const loss = (a: tf.Tensor4D, b: tf.Tensor4D | undefined) =>
    tf.tidy(() => tf.mean(tf.square(tf.sub(tf.softmax(a), tf.softmax(b!))))) as tf.Scalar
  // The same weights for every call (a call updates, and frees, the moving statistics).
  const gradients = async (passes: Passes, batch: StepBatch, step: number) => {
    const g = await computeGradients(
      passes,
      toParams(spec, initialWeights(spec, 3)),
      batch,
      loss,
      { seed: 2, step },
      'original',
    )
    const grads = Object.fromEntries(
      Object.entries(g.grads).map(([k, v]) => [k, v.dataSync().slice()] as const),
    )
    tf.dispose([...Object.values(g.grads), ...Object.values(g.params)])
    return { grads, loss: g.loss }
  }
  for (let step = 0; step < 3; step++) {
    const batch = {
      image: random([2, 16, 16, 1], `image${step}`) as tf.Tensor4D,
      masked: random([2, 16, 16, 1], `masked${step}`) as tf.Tensor4D,
    }
    const ours = await gradients(graphs.right, batch, step)
    const theirs = await gradients(inProcess(spec), batch, step)
    const worst = Math.max(
      ...Object.keys(theirs.grads).map((k) => relative(ours.grads[k], theirs.grads[k])),
    )
    t.ok(worst < 1e-3, `step ${step}: gradients agree (worst ${worst.toExponential(2)})`)
    t.ok(Math.abs(ours.loss - theirs.loss) <= 1e-5 * Math.abs(theirs.loss), `step ${step}: loss`)
    tf.dispose(Object.values(batch))
  }
  await graphs.right.close()
})

t.test('a forward while the last one awaits its backward keeps its own weights', async (t) => {
  const spec = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] })
  const passes = await onGraphs(spec)
  await keepsForwardsApart(t, spec, passes)
  await passes.close()
})

/** The inverted dropout values of the definition: one `uniform()` a unit, in draw order. */
const dropoutByDefinition = (count: number, rate: number, rng: Rng) =>
  Float32Array.from({ length: count }, () => (rng.uniform() < rate ? 0 : 1 / (1 - rate)))

t.test('dropout masks are the NHWC draws of every other engine, laid out NCHW', async (t) => {
  // [2, 3, 150, 160]: a plane of 24,000 pixels is more than one chunk of draws (21,845 at
  // three channels), so the chunks' seams and the short last chunk are inside.
  for (const [n, c, h, w, rate] of [
    [2, 5, 3, 4, 0.3],
    [2, 3, 150, 160, 0.5],
  ]) {
    const reference = dropoutByDefinition(n * h * w * c, rate, seeded(4, 'mask'))
    t.same(dropoutValues([n, h, w, c], rate, seeded(4, 'mask')), reference, 'dropoutValues')
    const rng = seeded(4, 'mask')
    const nchw = maskNchw([n, c, h, w], rate, rng)
    const at = (b: number, y: number, x: number, ch: number) => ((b * h + y) * w + x) * c + ch
    const plane = h * w
    const ok = Array.from(nchw).every((v, i) => {
      const [b, ch, y, x] = [
        Math.floor(i / (c * plane)),
        Math.floor(i / plane) % c,
        Math.floor(i / w) % h,
        i % w,
      ]
      return v === reference[at(b, y, x, ch)]
    })
    t.ok(ok, `${n}x${c}x${h}x${w}: element (b, c, y, x) is NHWC draw (b, y, x, c)`)
    t.ok(nchw.some((v) => v === 0) && nchw.some((v) => v > 1), 'both dropped and kept')
    const after = seeded(4, 'mask')
    dropoutByDefinition(n * h * w * c, rate, after)
    t.same(rng.state(), after.state(), 'one draw a unit: the next mask starts where it should')
  }
})

t.test('validation on onnxruntime scores as validation on tfjs', async (t) => {
  const graphs = ortPasses(networkSpec(tiny))
  if (E.isLeft(graphs) || !graphs.right.inference) throw new Error('no onnxruntime inference')
  await validatesAsTfjs(t, graphs.right.inference)
})
