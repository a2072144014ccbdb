import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import t, { type Test } from 'tap'
import { dropoutValues, initialWeights, toParams, type Params } from '../../src/model/tfjs-unet.ts'
import { unetSpec, type UNetSpec } from '../../src/model/unet.ts'
import { upsampleMatrix } from '../../src/train/ort-graphs.ts'
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
import { validate } from '../../src/train/trainer.ts'
import { installed } from '../../src/util/installed.ts'
import { seeded } from '../../src/util/rng.ts'
import { use } from '../helpers/conv-cases.ts'
import { prepared, tiny } from '../helpers/tiny-training.ts'

if (!installed('onnxruntime-node')) {
  t.comment('skipped: onnxruntime-node is not installed (npm i onnxruntime-node)')
  process.exit(0)
}
// The reference: tfjs's forwardTrain and its hand-written backward, on the cpu backend.
await use('cpu')

const random = (shape: number[], seed: string, scale = 1) => {
  const rng = seeded(7, seed)
  return tf.tensor(
    Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal() * scale),
    shape,
  )
}

/** Everything one pass gives, as arrays: logits, batch statistics, gradients of dLogits. */
const onePass = async (
  passes: Passes,
  params: Params,
  image: tf.Tensor4D,
  dLogits: tf.Tensor4D,
) => {
  const [p] = await passes.forward(params, [image], [[3, 'dropout', 0, 'original']])
  const logits = p.logits.dataSync().slice()
  const stats = Object.fromEntries(
    Object.entries(p.stats).map(([k, s]) => [
      k,
      [s.mean.dataSync().slice(), s.variance.dataSync().slice()],
    ]),
  )
  p.logits.dispose()
  const grads = await p.backward(dLogits)
  const arrays = Object.fromEntries(
    Object.entries(grads).map(([k, g]) => [k, g.dataSync().slice()]),
  )
  tf.dispose(Object.values(grads))
  return { logits, stats, grads: arrays }
}

/** max |a - b| over max |b|: float32 rounding of two summation orders stays near 1e-6. */
const relative = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let diff = 0
  let size = 0
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]))
    size = Math.max(size, Math.abs(b[i]))
  }
  return size === 0 ? diff : diff / size
}

const compare = async (
  t: Test,
  spec: UNetSpec,
  [n, h, w]: number[],
  passes: (spec: UNetSpec) => Promise<Passes> = async (s) => {
    const graphs = ortPasses(s)
    if (E.isLeft(graphs)) throw new Error(graphs.left)
    return graphs.right
  },
) => {
  const params = toParams(spec, initialWeights(spec, 5))
  const image = random([n, h, w, spec.options.inChannels], 'image') as tf.Tensor4D
  const dLogits = random([n, h, w, spec.options.classes], 'dlogits', 0.1) as tf.Tensor4D
  const graphs = await passes(spec)
  const ours = await onePass(graphs, params, image, dLogits)
  const reference = await onePass(inProcess(spec), params, image, dLogits)
  t.ok(relative(ours.logits, reference.logits) < 1e-4, 'logits')
  t.same(
    Object.keys(ours.stats).sort(),
    Object.keys(reference.stats).sort(),
    'a statistic per batch norm',
  )
  for (const [k, [mean, variance]] of Object.entries(reference.stats)) {
    t.ok(relative(ours.stats[k][0], mean) < 1e-4, `${k} batch mean`)
    t.ok(relative(ours.stats[k][1], variance) < 1e-4, `${k} batch variance`)
  }
  t.same(
    Object.keys(ours.grads).sort(),
    Object.keys(reference.grads).sort(),
    'a gradient per weight',
  )
  const worst = Object.entries(reference.grads)
    .map(([k, g]) => [k, relative(ours.grads[k], g)] as const)
    .sort((a, b) => b[1] - a[1])
  t.ok(
    worst[0][1] < 1e-3,
    `gradients agree (worst ${worst[0][0]}: ${worst[0][1].toExponential(2)})`,
  )
  tf.dispose([...Object.values(params), image, dLogits])
  await graphs.close()
}

t.test('one pass matches tfjs: logits, batch statistics and every gradient', async (t) => {
  await compare(t, unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] }), [2, 32, 32])
})

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
      await compare(t, unetSpec({ base: 2, levels: 3, dropout: [0.05, 0.1, 0.2] }), [1, 16, 40])
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

t.test('dropout masks are the NHWC draws of every other engine, laid out NCHW', async (t) => {
  const nhwc = dropoutValues([2, 3, 4, 5], 0.3, seeded(4, 'mask'))
  const nchw = maskNchw([2, 5, 3, 4], 0.3, seeded(4, 'mask'))
  const at = (b: number, y: number, x: number, c: number) => ((b * 3 + y) * 4 + x) * 5 + c
  const ok = Array.from(nchw).every((v, i) => {
    const [b, c, y, x] = [Math.floor(i / 60), Math.floor(i / 12) % 5, Math.floor(i / 4) % 3, i % 4]
    return v === nhwc[at(b, y, x, c)]
  })
  t.ok(ok, 'element (b, c, y, x) is NHWC element (b, y, x, c)')
  t.ok(nchw.some((v) => v === 0) && nchw.some((v) => v > 1), 'both dropped and kept')
})

t.test('validation on onnxruntime scores as validation on tfjs', async (t) => {
  const config = tiny
  const { val } = await prepared(config)
  const spec = networkSpec(config)
  const params = toParams(spec, initialWeights(spec, 11))
  const graphs = ortPasses(spec)
  if (E.isLeft(graphs) || !graphs.right.inference) throw new Error('no onnxruntime inference')
  const onTfjs = await validate(spec, params, val, config.classes, config.batch)
  const onOrt = await validate(
    spec,
    params,
    val,
    config.classes,
    config.batch,
    graphs.right.inference,
  )
  t.equal(onOrt.volumes, onTfjs.volumes)
  for (const [name, dice] of Object.entries(onTfjs.classes))
    t.ok(
      Math.abs(onOrt.classes[name] - dice) < 1e-3,
      `${name}: ${onOrt.classes[name]} against ${dice}`,
    )
  tf.dispose(Object.values(params))
})
