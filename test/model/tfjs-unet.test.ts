import * as tf from '@tensorflow/tfjs-core'
import t from 'tap'
import {
  dropoutMask,
  forwardTrain,
  fromParams,
  initialWeights,
  predictLogits,
  toParams,
  updateMovingStats,
  type Params,
} from '../../src/model/tfjs-unet.ts'
import {
  parameterCount,
  parameterShapes,
  unetSpec,
  type UNetSpec,
  type UNetWeights,
} from '../../src/model/unet.ts'
import { loadEngine, type EngineName } from '../../src/train/engine.ts'
import { installed } from '../../src/util/installed.ts'
import { seeded, type Rng } from '../../src/util/rng.ts'
import { maxRelative } from '../helpers/conv-cases.ts'
import { elementCount } from '../../src/util/shape.ts'

const use = async (name: EngineName) => {
  const r = await loadEngine(name)()
  if (r._tag === 'Left') throw new Error(r.left)
}
await use('cpu')

/** The engines whose training pass is checked against cpu autograd (onnxruntime where installed). */
const ENGINES: readonly EngineName[] = [
  'cpu',
  'wasm',
  ...(installed('onnxruntime-node') ? (['onnxruntime'] as const) : []),
]

const tiny = unetSpec({ base: 4, levels: 3, dropout: [0.1, 0.2, 0.3] })
const randomImages = (n: number, size: number, seed: number) => {
  const rng = seeded(seed, 'images')
  return tf.tensor4d(
    Float32Array.from({ length: n * size * size }, () => rng.normal()),
    [n, size, size, 1],
  )
}

/**
 * The same network from plain tfjs ops (concat, moments, leakyRelu, conv + bias), to be
 * differentiated by tfjs autograd: the independent reference for the hand-written backward.
 */
const referenceLogits = (spec: UNetSpec, p: Params, x: tf.Tensor4D, rng: Rng): tf.Tensor4D => {
  const slots = new Map<string, tf.Tensor4D>()
  let h = x
  for (const o of spec.ops) {
    if (o.op === 'conv')
      h = tf.add(tf.conv2d(h, p[`${o.name}.kernel`] as tf.Tensor4D, 1, 'same'), p[`${o.name}.bias`])
    else if (o.op === 'batchNorm') {
      const { mean, variance } = tf.moments(h, [0, 1, 2])
      h = tf.add(
        tf.mul(
          tf.div(tf.sub(h, mean), tf.sqrt(tf.add(variance, spec.options.bnEpsilon))),
          p[`${o.name}.gamma`],
        ),
        p[`${o.name}.beta`],
      )
    } else if (o.op === 'leakyRelu') h = tf.leakyRelu(h, spec.options.leakySlope)
    else if (o.op === 'dropout') h = tf.mul(h, dropoutMask(h.shape, o.rate, rng))
    else if (o.op === 'maxPool') h = tf.maxPool(h, 2, 2, 'valid')
    else if (o.op === 'upsample')
      h = tf.image.resizeBilinear(h, [h.shape[1] * 2, h.shape[2] * 2], true)
    else if (o.op === 'save') slots.set(o.slot, h)
    else h = tf.concat([slots.get(o.slot)!, h], 3)
  }
  return h
}

const trainable = (spec: UNetSpec) =>
  parameterShapes(spec)
    .filter((s) => s.trainable)
    .map((s) => s.name)

/** Reference gradients of sum(logits * r) on the cpu backend, as arrays. */
const referenceGradients = (
  spec: UNetSpec,
  w: UNetWeights,
  x: tf.Tensor4D,
  r: tf.Tensor4D,
  seed: number,
) =>
  tf.tidy(() => {
    const p = toParams(spec, w)
    const names = trainable(spec)
    const grads = tf.grads((...ts: tf.Tensor[]) => {
      const q = { ...p, ...Object.fromEntries(names.map((n, i) => [n, ts[i]])) }
      return tf.sum(tf.mul(referenceLogits(spec, q, x, seeded(seed, 'dropout')), r))
    })(names.map((n) => p[n]))
    return Object.fromEntries(names.map((n, i) => [n, grads[i].dataSync().slice() as Float32Array]))
  })

t.test('the tfjs model of the default spec has the reference parameter count', async (t) => {
  const spec = unetSpec()
  const params = toParams(spec, initialWeights(spec, 1))
  const count = parameterShapes(spec)
    .filter((s) => s.trainable)
    .reduce((n, s) => n + params[s.name].size, 0)
  t.equal(count, 1_813_764)
  t.equal(count, parameterCount(spec))
  tf.dispose(Object.values(params))
})

t.test(
  'forward shapes: logits have the classes as channels, in training and inference',
  async (t) => {
    const params = toParams(tiny, initialWeights(tiny, 1))
    const x = randomImages(2, 32, 1)
    const pass = forwardTrain(tiny, params, x, seeded(1, 'dropout'))
    t.same(pass.logits.shape, [2, 32, 32, 4])
    t.same(
      Object.keys(pass.stats).sort(),
      parameterShapes(tiny)
        .filter((p) => p.name.endsWith('.gamma'))
        .map((p) => p.name.replace('.gamma', ''))
        .sort(),
    )
    pass.dispose()
    const y = predictLogits(tiny, params, x)
    t.same(y.shape, [2, 32, 32, 4])
    tf.dispose([pass.logits, y, x, ...Object.values(params)])
  },
)

t.test('inference is deterministic and uses the moving statistics', async (t) => {
  const params = toParams(tiny, initialWeights(tiny, 2))
  const x = randomImages(2, 32, 2)
  const a = predictLogits(tiny, params, x).dataSync() as Float32Array
  const b = predictLogits(tiny, params, x).dataSync() as Float32Array
  t.same(a, b)
  // Inference of one image does not depend on the other images of the batch.
  const one = predictLogits(
    tiny,
    params,
    tf.slice(x, [0, 0, 0, 0], [1, -1, -1, -1]),
  ).dataSync() as Float32Array
  t.ok(maxRelative(one, a.slice(0, one.length)) < 1e-5)
  // With moving mean 0 and variance 1 the reference network without dropout in eval mode
  // is conv + bias, gamma x / sqrt(1 + eps) + beta, LeakyReLU.
  const evalSpec: UNetSpec = { ...tiny, ops: tiny.ops.filter((o) => o.op !== 'dropout') }
  const fixedStats = tf.tidy(() => {
    const noBatchStats = { ...evalSpec, ops: evalSpec.ops.map((o) => o) }
    const slots = new Map<string, tf.Tensor4D>()
    let h = x
    for (const o of noBatchStats.ops) {
      if (o.op === 'conv')
        h = tf.add(
          tf.conv2d(h, params[`${o.name}.kernel`] as tf.Tensor4D, 1, 'same'),
          params[`${o.name}.bias`],
        )
      else if (o.op === 'batchNorm') h = tf.div(h, Math.sqrt(1 + tiny.options.bnEpsilon))
      else if (o.op === 'leakyRelu') h = tf.leakyRelu(h, tiny.options.leakySlope)
      else if (o.op === 'maxPool') h = tf.maxPool(h, 2, 2, 'valid')
      else if (o.op === 'upsample')
        h = tf.image.resizeBilinear(h, [h.shape[1] * 2, h.shape[2] * 2], true)
      else if (o.op === 'save') slots.set(o.slot, h)
      else if (o.op === 'concat') h = tf.concat([slots.get(o.slot)!, h], 3)
    }
    return h.dataSync().slice() as Float32Array
  })
  t.ok(maxRelative(a, fixedStats) < 1e-5, 'matches conv/bias/BN(moving)/LeakyReLU by plain ops')
  tf.dispose([x, ...Object.values(params)])
})

t.test('training mode normalises with the batch statistics and reports them', async (t) => {
  const params = toParams(tiny, initialWeights(tiny, 3))
  const x = randomImages(3, 32, 3)
  const pass = forwardTrain(tiny, params, x, seeded(3, 'dropout'))
  const reference = tf.tidy(
    () => referenceLogits(tiny, params, x, seeded(3, 'dropout')).dataSync().slice() as Float32Array,
  )
  t.ok(
    maxRelative(pass.logits.dataSync() as Float32Array, reference) < 1e-4,
    'logits match the plain-ops network',
  )
  // enc0.bn1 sees conv(x) + bias: its batch mean and unbiased variance, by hand.
  const z = tf.tidy(
    () =>
      tf
        .add(
          tf.conv2d(x, params['enc0.conv1.kernel'] as tf.Tensor4D, 1, 'same'),
          params['enc0.conv1.bias'],
        )
        .dataSync() as Float32Array,
  )
  const c = 4
  const n = z.length / c
  const mean = Array.from(
    { length: c },
    (_, k) => z.filter((_, i) => i % c === k).reduce((a, b) => a + b, 0) / n,
  )
  const variance = mean.map(
    (m, k) => z.filter((_, i) => i % c === k).reduce((a, b) => a + (b - m) ** 2, 0) / (n - 1),
  )
  const stats = pass.stats['enc0.bn1']
  t.ok(maxRelative(stats.mean.dataSync() as Float32Array, Float32Array.from(mean)) < 1e-4)
  t.ok(maxRelative(stats.variance.dataSync() as Float32Array, Float32Array.from(variance)) < 1e-4)
  const updated = updateMovingStats(params, pass.stats, 0.1)
  const moved = updated['enc0.bn1.movingVariance'].dataSync() as Float32Array
  t.ok(
    maxRelative(moved, Float32Array.from(variance.map((v) => 0.9 + 0.1 * v))) < 1e-5,
    'PyTorch momentum 0.1',
  )
  pass.dispose()
  tf.dispose([pass.logits, x, ...Object.values(updated)])
})

for (const backend of ENGINES)
  t.test(
    `the hand-written backward on ${backend} matches cpu autograd of the plain-ops network`,
    async (t) => {
      const w = initialWeights(tiny, 4)
      // Non-trivial batch norm parameters and biases, so every term of the backward matters.
      const rng = seeded(4, 'perturb')
      const perturbed = Object.fromEntries(
        Object.entries(w).map(([k, v]) => [
          k,
          k.includes('moving') ? v : v.map((a) => a + 0.3 * rng.normal()),
        ]),
      )
      const x = randomImages(2, 32, 4)
      const r = tf.reshape(randomImages(2 * 4, 32, 5), [2, 32, 32, 4]) as tf.Tensor4D
      const expected = referenceGradients(tiny, perturbed, x, r, 6)
      const [xs, rs] = [x.dataSync().slice() as Float32Array, r.dataSync().slice() as Float32Array]
      tf.dispose([x, r])
      await use(backend)
      const params = toParams(tiny, perturbed)
      const xb = tf.tensor4d(xs, [2, 32, 32, 1])
      const rb = tf.tensor4d(rs, [2, 32, 32, 4])
      const pass = forwardTrain(tiny, params, xb, seeded(6, 'dropout'))
      const grads = pass.backward(rb)
      for (const name of trainable(tiny)) {
        const got = grads[name].dataSync() as Float32Array
        if (
          name.endsWith('.bias') &&
          tiny.ops.some(
            (o, i) =>
              o.op === 'conv' && `${o.name}.bias` === name && tiny.ops[i + 1]?.op === 'batchNorm',
          )
        )
          t.ok(
            maxRelative(got, expected[name]) < 1e-3 ||
              Math.max(...expected[name].map(Math.abs)) < 1e-4,
            `${name} ~ 0`,
          )
        else
          t.ok(
            maxRelative(got, expected[name]) < 1e-4,
            `${name}: ${maxRelative(got, expected[name]).toExponential(2)}`,
          )
      }
      tf.dispose([pass.logits, xb, rb, ...Object.values(grads), ...Object.values(params)])
      await use('cpu')
    },
  )

/**
 * Programs beyond the UNet: each kind of unit, odd channel counts and sizes. `cancelled`: conv
 * biases that reach the loss only through a batch norm, which cancels them (gradient 0).
 */
const PROGRAMS: readonly {
  name: string
  spec: UNetSpec
  shape: [number, number, number]
  cancelled: readonly string[]
}[] = [
  {
    name: 'batch norm on a concat, pooling a concat',
    shape: [2, 16, 16],
    cancelled: ['b.bias'],
    spec: {
      options: { ...tiny.options, classes: 2 },
      ops: [
        { op: 'conv', name: 'a', inChannels: 1, outChannels: 3, kernel: 3 },
        { op: 'save', slot: 's' },
        { op: 'leakyRelu' },
        { op: 'conv', name: 'b', inChannels: 3, outChannels: 3, kernel: 1 },
        { op: 'concat', slot: 's' },
        { op: 'batchNorm', name: 'n', channels: 6 },
        { op: 'dropout', rate: 0.2 },
        { op: 'save', slot: 't' },
        { op: 'concat', slot: 't' },
        { op: 'maxPool' },
        { op: 'upsample' },
        { op: 'conv', name: 'out', inChannels: 12, outChannels: 2, kernel: 3 },
      ],
    },
  },
  {
    name: 'batch norm with and without LeakyReLU and dropout, 3 x 5 x 7',
    shape: [3, 5, 7],
    cancelled: ['a.bias', 'c.bias'],
    spec: {
      options: { ...tiny.options, classes: 2 },
      ops: [
        { op: 'conv', name: 'a', inChannels: 1, outChannels: 6, kernel: 3 },
        { op: 'batchNorm', name: 'an', channels: 6 },
        { op: 'leakyRelu' },
        { op: 'dropout', rate: 0.3 },
        { op: 'conv', name: 'b', inChannels: 6, outChannels: 6, kernel: 1 },
        { op: 'leakyRelu' },
        { op: 'dropout', rate: 0.5 },
        { op: 'conv', name: 'c', inChannels: 6, outChannels: 5, kernel: 3 },
        { op: 'batchNorm', name: 'cn', channels: 5 },
        { op: 'conv', name: 'out', inChannels: 5, outChannels: 2, kernel: 3 },
      ],
    },
  },
]

for (const backend of ENGINES)
  for (const { name, spec, shape, cancelled } of PROGRAMS)
    t.test(`any program of the ops is interpreted on ${backend}: ${name}`, async (t) => {
      const [b, h, w] = shape
      const weights = initialWeights(spec, 8)
      // Non-trivial batch norm parameters, so that every term of their backward matters.
      const rng = seeded(8, 'perturb')
      for (const [k, v] of Object.entries(weights))
        if (k.endsWith('.gamma') || k.endsWith('.beta'))
          v.forEach((a, i) => (v[i] = a + rng.normal()))
      const xs = Float32Array.from({ length: b * h * w }, () => rng.normal())
      const rs = Float32Array.from({ length: b * h * w * 2 }, () => rng.normal())
      const expected = tf.tidy(() =>
        referenceGradients(
          spec,
          weights,
          tf.tensor4d(xs, [b, h, w, 1]),
          tf.tensor4d(rs, [b, h, w, 2]),
          10,
        ),
      )
      await use(backend)
      const x = tf.tensor4d(xs, [b, h, w, 1])
      const r = tf.tensor4d(rs, [b, h, w, 2])
      const params = toParams(spec, weights)
      const before = tf.memory().numTensors
      const pass = forwardTrain(spec, params, x, seeded(10, 'dropout'))
      const grads = pass.backward(r)
      for (const name of trainable(spec)) {
        const got = grads[name].dataSync() as Float32Array
        if (cancelled.includes(name))
          t.ok(
            [...got, ...expected[name]].every((v) => Math.abs(v) < 1e-5),
            `${name} = 0`,
          )
        else
          t.ok(
            maxRelative(got, expected[name]) < 1e-4,
            `${name}: ${maxRelative(got, expected[name]).toExponential(1)}`,
          )
      }
      tf.dispose([pass.logits, ...Object.values(grads)])
      t.equal(tf.memory().numTensors, before, 'the pass freed all it kept')
      tf.dispose([x, r, ...Object.values(params)])
      await use('cpu')
    })

t.test('weights round-trip through tensors, named and shaped as parameterShapes', async (t) => {
  const w = initialWeights(tiny, 7)
  const params = toParams(tiny, w)
  const back = await fromParams(tiny, params)
  t.same(
    Object.keys(back),
    parameterShapes(tiny).map((p) => p.name),
  )
  for (const p of parameterShapes(tiny)) {
    t.equal(back[p.name].length, elementCount(p.shape))
    t.ok(
      back[p.name].every((v, i) => v === w[p.name][i]),
      p.name,
    )
  }
  t.throws(
    () => toParams(tiny, { ...w, 'out.bias': new Float32Array(3) }),
    /out\.bias.*3 values, expected 4/,
  )
  const { ['enc0.bn1.gamma']: _gone, ...missing } = w
  t.throws(() => toParams(tiny, missing), /lack 'enc0\.bn1\.gamma'/)
  tf.dispose(Object.values(params))
})

t.test('initial weights: seeded He normal kernels, unit gamma and moving variance', async (t) => {
  const spec = unetSpec()
  const a = initialWeights(spec, 9)
  const bytes = (w: Float32Array) => Buffer.from(w.buffer, w.byteOffset, w.byteLength)
  t.ok(
    bytes(initialWeights(spec, 9)['enc2.conv1.kernel']).equals(bytes(a['enc2.conv1.kernel'])),
    'same seed',
  )
  t.notOk(
    bytes(initialWeights(spec, 10)['enc2.conv1.kernel']).equals(bytes(a['enc2.conv1.kernel'])),
    'other seed',
  )
  const k = a['enc2.conv1.kernel'] // 3 x 3 x 32 x 64: std sqrt(2 / 288)
  const std = Math.sqrt(k.reduce((s, v) => s + v * v, 0) / k.length)
  t.ok(Math.abs(std - Math.sqrt(2 / 288)) < 0.02 * Math.sqrt(2 / 288), `std ${std}`)
  t.ok(
    a['enc2.bn1.gamma'].every((v) => v === 1) && a['enc2.bn1.movingVariance'].every((v) => v === 1),
  )
  t.ok(a['enc2.bn1.beta'].every((v) => v === 0) && a['enc2.conv1.bias'].every((v) => v === 0))
})

t.test('dropout masks keep 1 - rate of the elements, scaled by 1 / (1 - rate)', async (t) => {
  const m = dropoutMask([100, 100], 0.3, seeded(1, 'd')).dataSync() as Float32Array
  const kept = m.filter((v) => v > 0)
  t.ok(Math.abs(kept.length / m.length - 0.7) < 0.02)
  t.ok(kept.every((v) => Math.abs(v - 1 / 0.7) < 1e-6))
})
