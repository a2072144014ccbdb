import '@tensorflow/tfjs-backend-cpu'
import * as tf from '@tensorflow/tfjs-core'
import t from 'tap'
import {
  cosineDistance,
  cplLoss,
  DEFAULT_LOSS,
  decodeLossConfig,
  lossWithGradients,
  macoLoss,
  partialCrossEntropy,
  softmaxBackward,
  type LossConfig,
} from '../../src/maco/losses.ts'
import { seeded } from '../../src/util/rng.ts'

const U = 4 // unlabelled
const [B, H, W, C] = [2, 2, 3, 4]
const P = B * H * W

t.before(async () => {
  await tf.setBackend('cpu')
})

// ---- Plain-JS references, float64, one pixel (C values) at a time ----

const softmax = (z: number[]) => {
  const m = Math.max(...z)
  const e = z.map((v) => Math.exp(v - m))
  const s = e.reduce((a, b) => a + b, 0)
  return e.map((v) => v / s)
}
const pixel = (a: ArrayLike<number>, p: number) => Array.from({ length: C }, (_, c) => a[p * C + c])
const probs = (z: ArrayLike<number>) => Array.from({ length: P }, (_, p) => softmax(pixel(z, p)))

const refPce = (z: ArrayLike<number>, s: number[]) => {
  let sum = 0
  let n = 0
  for (let p = 0; p < P; p++)
    if (s[p] !== U) {
      sum -= Math.log(softmax(pixel(z, p))[s[p]])
      n++
    }
  return n === 0 ? 0 : sum / n
}
const cos = (a: number[], b: number[]) => {
  const dot = a.reduce((acc, v, i) => acc + v * b[i], 0)
  const na = Math.hypot(...a)
  const nb = Math.hypot(...b)
  return dot / (na * nb)
}
const refCosineDistance = (ref: number[][], pred: number[][]) =>
  1 - ref.reduce((acc, r, p) => acc + cos(r, pred[p]), 0) / ref.length
const refEnhanced = (po: number[][], gc: number[]) =>
  po.map((q, p) => {
    const fg = q.slice(1).map((v) => v * gc[p])
    return [1 - fg.reduce((a, b) => a + b, 0), ...fg]
  })
const refCpl = (po: number[][], y: ArrayLike<number>) => {
  let sum = 0
  let present = 0
  for (let c = 0; c < C; c++) {
    let s = 0
    let n = 0
    for (let p = 0; p < P; p++)
      if (y[p * C + c] > 0) {
        s += (po[p][c] - y[p * C + c]) ** 2
        n++
      }
    if (n > 0) {
      sum += s / n
      present++
    }
  }
  return present === 0 ? 0 : sum / present
}

/** Central differences of f at x, in float64. */
const numericGrad = (f: (x: number[]) => number, x: number[], h = 1e-5) =>
  x.map((_, i) => {
    const up = [...x]
    const down = [...x]
    up[i] += h
    down[i] -= h
    return (f(up) - f(down)) / (2 * h)
  })

const close = (got: ArrayLike<number>, want: ArrayLike<number>, tol: number) => {
  let worst = 0
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]))
  return { ok: got.length === want.length && worst <= tol, worst }
}

// ---- Data made by code ----

const rng = seeded(2024, 'losses')
const randomLogits = () => Array.from({ length: P * C }, () => 2 * rng.normal())
const z0 = randomLogits()
const zm0 = randomLogits()
// Labelled: classes 0..3 in both images, the rest unlabelled.
const scribble = [0, U, 1, U, 3, U, U, 2, U, 0, U, 1]
const gcMask = [0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1]
// CPL: class 2 empty everywhere, the others on a few pixels.
const cplValues = Array.from({ length: P * C }, (_, i) => {
  const [p, c] = [Math.floor(i / C), i % C]
  return c === 2 ? 0 : (p + c) % 3 === 0 ? 0 : Math.exp(-0.1 * ((p * 7 + c) % 5))
})

const t4 = (v: number[]) => tf.tensor4d(v, [B, H, W, C])
const t3 = (v: number[], dtype: 'int32' | 'float32' = 'float32') => tf.tensor3d(v, [B, H, W], dtype)
const value = (x: tf.Tensor) => x.dataSync()[0]
const flat = (rows: number[][]) => rows.flat()
const rows = (v: number[]) => Array.from({ length: P }, (_, p) => v.slice(p * C, (p + 1) * C))

t.test('pCE on a hand-computed pixel', async (t) => {
  // Logits (0, ln 3): p = (1/4, 3/4). Labelled 1 -> -ln(3/4), gradient p - onehot = (1/4, -1/4).
  // The unlabelled pixel (9) is ignored.
  const { value: v, grad } = partialCrossEntropy([0, Math.log(3), 5, -5], [1, 9], 9, 2)
  t.ok(Math.abs(v + Math.log(0.75)) < 1e-6)
  t.ok(close(grad, [0.25, -0.25, 0, 0], 1e-6).ok)
})

t.test(
  'pCE: mean over the labelled pixels of the batch; gradient by central differences',
  async (t) => {
    const { value: v, grad } = partialCrossEntropy(z0, scribble, U, C)
    t.ok(Math.abs(v - refPce(z0, scribble)) < 1e-5, `${v} vs ${refPce(z0, scribble)}`)
    const { ok, worst } = close(
      grad,
      numericGrad((z) => refPce(z, scribble), z0),
      1e-6,
    )
    t.ok(ok, `max abs difference ${worst}`)
  },
)

t.test('unlabelled pixels contribute nothing to pCE, nor to its gradient', async (t) => {
  const moved = z0.map((v, i) => (scribble[Math.floor(i / C)] === U ? v + 10 * rng.normal() : v))
  t.equal(
    partialCrossEntropy(moved, scribble, U, C).value,
    partialCrossEntropy(z0, scribble, U, C).value,
  )
  const g = partialCrossEntropy(z0, scribble, U, C).grad
  t.ok(
    Array.from(g).every((v, i) => scribble[Math.floor(i / C)] !== U || v === 0),
    'zero gradient on unlabelled pixels',
  )
})

t.test('no scribble at all: pCE is 0 with zero gradient, not NaN', async (t) => {
  const { value: v, grad } = partialCrossEntropy(z0, new Array(P).fill(U), U, C)
  t.equal(v, 0)
  t.ok(grad.every((x) => x === 0))
})

t.test('cosine distance: value, and a gradient for the prediction side only', async (t) => {
  // Unnormalised positive vectors, so the norms matter.
  const a = Array.from({ length: P * C }, () => rng.uniform() + 0.05)
  const b = Array.from({ length: P * C }, () => rng.uniform() + 0.05)
  const { value: v, grad } = cosineDistance(a, b, C)
  t.ok(Math.abs(v - refCosineDistance(rows(a), rows(b))) < 1e-6)
  const { ok, worst } = close(
    grad,
    numericGrad((x) => refCosineDistance(rows(a), rows(x)), b),
    1e-6,
  )
  t.ok(ok, `max abs difference ${worst}`)
  // Hand case: a = (1, 0), b = (1, 1): cos = 1/sqrt 2; d cos/db = (1/2^1.5, -1/2^1.5).
  const hand = cosineDistance([1, 0], [1, 1], 2)
  t.ok(Math.abs(hand.value - (1 - Math.SQRT1_2)) < 1e-6)
  t.ok(close(hand.grad, [-(2 ** -1.5), 2 ** -1.5], 1e-6).ok)
  // A zero vector: the clamped denominator keeps value and gradient finite.
  const zero = cosineDistance([0, 0], [0, 0], 2)
  t.equal(zero.value, 1)
  t.ok(zero.grad.every(Number.isFinite))
})

t.test('softmax backward is the chain rule through softmax', async (t) => {
  const g = Array.from({ length: P * C }, () => rng.normal())
  const got = softmaxBackward(flat(probs(z0)), g, C)
  const linear = (z: number[]) => flat(probs(z)).reduce((acc, p, i) => acc + p * g[i], 0)
  t.ok(close(got, numericGrad(linear, z0), 1e-6).ok)
})

t.test('L_cpl on a hand-computed case, empty classes left out', async (t) => {
  // One image, 2 pixels, 3 classes. Class 0: Y = (1, 0.5); class 1: empty; class 2: Y = (0, 0.2).
  const p = [0.6, 0.3, 0.1, 0.2, 0.2, 0.6]
  const y = [1, 0, 0, 0.5, 0, 0.2]
  const class0 = ((0.6 - 1) ** 2 + (0.2 - 0.5) ** 2) / 2
  const class2 = (0.6 - 0.2) ** 2 / 1
  const { value: v, grad } = cplLoss(p, y, 3)
  t.ok(Math.abs(v - (class0 + class2) / 2) < 1e-6)
  // d/dP: 2 (P - Y) / (N_c C') on the support, 0 elsewhere.
  const want = [(2 * (0.6 - 1)) / 4, 0, 0, (2 * (0.2 - 0.5)) / 4, 0, (2 * (0.6 - 0.2)) / 2]
  t.ok(close(grad, want, 1e-6).ok, `${grad}`)
  const none = cplLoss(p, new Array(6).fill(0), 3)
  t.equal(none.value, 0, 'no pseudo label at all: 0')
  t.ok(none.grad.every((x) => x === 0))
})

t.test('L_cpl matches the reference, and its gradient central differences', async (t) => {
  const po = flat(probs(z0))
  const { value: v, grad } = cplLoss(po, cplValues, C)
  t.ok(Math.abs(v - refCpl(rows(po), cplValues)) < 1e-6)
  const { ok, worst } = close(
    grad,
    numericGrad((x) => refCpl(rows(x), cplValues), po),
    1e-6,
  )
  t.ok(ok, `max abs difference ${worst}`)
})

/**
 * The whole loss in plain JS. `detached` is P_o as the stop-gradient sides see it: held
 * fixed while differentiating, as the method prescribes.
 */
const refLoss = (config: LossConfig, z: number[], zm: number[], detached = probs(z)) => {
  const po = probs(z)
  const terms: Record<string, number> = {}
  if (config.pce) terms.pce = refPce(z, scribble)
  if (config.mcm) {
    if (config.pce) terms.pceMasked = config.beta * refPce(zm, scribble)
    terms.mcm = config.lambdaMcm * refCosineDistance(detached, probs(zm))
  }
  if (config.gc) terms.gc = config.lambdaGc * refCosineDistance(refEnhanced(detached, gcMask), po)
  if (config.cpl) terms.cpl = config.lambdaCpl * refCpl(po, cplValues)
  return { total: Object.values(terms).reduce((a, b) => a + b, 0), terms }
}

const inputs = (z: tf.Tensor4D, zm: tf.Tensor4D) => ({
  logits: z,
  maskedLogits: zm,
  scribbles: t3(scribble, 'int32'),
  unlabelled: U,
  cpl: t4(cplValues),
  gc: t3(gcMask),
})

t.test('each ablation has exactly its terms, each matching the reference', async (t) => {
  const ablations: [string, Partial<LossConfig>, string[]][] = [
    ['pCE only', { mcm: false, gc: false, cpl: false }, ['pce']],
    ['+ MCM', { gc: false, cpl: false }, ['pce', 'pceMasked', 'mcm']],
    ['+ MCM + GC', { cpl: false }, ['pce', 'pceMasked', 'mcm', 'gc']],
    ['+ CPL', { mcm: false, gc: false }, ['pce', 'cpl']],
    ['full MaCo', {}, ['pce', 'pceMasked', 'mcm', 'gc', 'cpl']],
    ['nothing', { pce: false, mcm: false, gc: false, cpl: false }, []],
  ]
  for (const [name, flags, names] of ablations) {
    const config = { ...DEFAULT_LOSS, ...flags }
    const { total, terms, gradients } = lossWithGradients(config, inputs(t4(z0), t4(zm0)))
    const want = refLoss(config, z0, zm0)
    t.same(Object.keys(terms).sort(), [...names].sort(), name)
    for (const k of names) {
      const got = value(terms[k as keyof typeof terms]!)
      t.ok(Math.abs(got - want.terms[k]) < 1e-5, `${name}: ${k} ${got} vs ${want.terms[k]}`)
    }
    t.ok(Math.abs(value(total) - want.total) < 1e-5, `${name}: total`)
    t.equal(gradients.maskedLogits !== undefined, config.mcm, `${name}: masked branch gradient`)
  }
})

t.test(
  'gradients of the full loss match central differences, detached sides held fixed',
  async (t) => {
    const config = { ...DEFAULT_LOSS, lambdaMcm: 1, lambdaGc: 1, lambdaCpl: 1 } // weights up: sharper test
    const { gradients } = lossWithGradients(config, inputs(t4(z0), t4(zm0)))
    const fixed = probs(z0)
    const wantOriginal = numericGrad((z) => refLoss(config, z, zm0, fixed).total, z0)
    const wantMasked = numericGrad((zm) => refLoss(config, z0, zm, fixed).total, zm0)
    const a = close(gradients.logits.dataSync(), wantOriginal, 1e-6)
    const b = close(gradients.maskedLogits!.dataSync(), wantMasked, 1e-6)
    t.ok(a.ok, `original logits: max abs difference ${a.worst}`)
    t.ok(b.ok, `masked logits: max abs difference ${b.worst}`)
    // Were the detached sides differentiated, the gradient would differ measurably.
    const attached = numericGrad((z) => refLoss(config, z, zm0).total, z0)
    t.notOk(
      close(gradients.logits.dataSync(), attached, 1e-3).ok,
      'detaching makes a difference here',
    )
  },
)

t.test('L_mcm sends no gradient into P_o', async (t) => {
  const config = { ...DEFAULT_LOSS, pce: false, gc: false, cpl: false }
  const { gradients } = lossWithGradients(config, inputs(t4(z0), t4(zm0)))
  t.ok(
    gradients.logits.dataSync().every((v) => v === 0),
    'nothing flows into the original branch',
  )
  t.ok(
    gradients.maskedLogits!.dataSync().some((v) => Math.abs(v) > 1e-4),
    'the masked branch learns',
  )
})

t.test('macoLoss is differentiable by tf.grads, with the same gradients', async (t) => {
  const config = { ...DEFAULT_LOSS, lambdaMcm: 1, lambdaGc: 1, lambdaCpl: 1 }
  const fixed = probs(z0)
  // dy = 3: the incoming gradient scales the result (no other op needed, none registered).
  const [g, gm] = tf.grads((z: tf.Tensor, zm: tf.Tensor) =>
    macoLoss(config, inputs(z as tf.Tensor4D, zm as tf.Tensor4D)),
  )([t4(z0), t4(zm0)], tf.scalar(3))
  const scaled = (f: (x: number[]) => number) => (x: number[]) => 3 * f(x)
  t.ok(
    close(
      g.dataSync(),
      numericGrad(
        scaled((z) => refLoss(config, z, zm0, fixed).total),
        z0,
      ),
      6e-5,
    ).ok,
  )
  t.ok(
    close(
      gm.dataSync(),
      numericGrad(
        scaled((zm) => refLoss(config, z0, zm, fixed).total),
        zm0,
      ),
      6e-5,
    ).ok,
  )
  t.ok(
    Math.abs(value(macoLoss(config, inputs(t4(z0), t4(zm0)))) - refLoss(config, z0, zm0).total) <
      1e-5,
  )
  let logged: Record<string, number> = {}
  value(macoLoss(config, inputs(t4(z0), t4(zm0)), (terms) => (logged = terms)))
  const reference = refLoss(config, z0, zm0).terms
  t.same(Object.keys(logged).sort(), Object.keys(reference).sort(), 'onTerms: every enabled term')
  for (const [name, v] of Object.entries(reference))
    t.ok(Math.abs(logged[name] - v) < 1e-5, `onTerms: ${name} is the weighted term`)
  const single = { ...config, mcm: false }
  const only = tf.grad((z: tf.Tensor) =>
    macoLoss(single, { ...inputs(z as tf.Tensor4D, t4(zm0)), maskedLogits: undefined }),
  )
  t.ok(
    close(
      only(t4(z0)).dataSync(),
      numericGrad((z) => refLoss(single, z, zm0, fixed).total, z0),
      2e-5,
    ).ok,
  )
})

t.test(
  'no NaN with empty scribbles, empty classes, an empty GC region or saturated logits',
  async (t) => {
    const empty = {
      logits: t4(z0),
      maskedLogits: t4(zm0),
      scribbles: t3(new Array(P).fill(U), 'int32'),
      unlabelled: U,
      cpl: tf.zeros([B, H, W, C]) as tf.Tensor4D,
      gc: t3(new Array(P).fill(0)),
    }
    const { total, terms, gradients } = lossWithGradients(DEFAULT_LOSS, empty)
    t.equal(value(terms.pce!), 0)
    t.equal(value(terms.cpl!), 0)
    t.ok(Number.isFinite(value(total)))
    t.ok(
      [gradients.logits, gradients.maskedLogits!].every((g) => g.dataSync().every(Number.isFinite)),
    )
    const extreme = t4(z0.map((v) => 200 * v))
    const saturated = lossWithGradients(DEFAULT_LOSS, inputs(extreme, extreme))
    t.ok(Number.isFinite(value(saturated.total)))
    t.ok(saturated.gradients.logits.dataSync().every(Number.isFinite))
  },
)

t.test('a term that is on needs its input', async (t) => {
  const { maskedLogits: _unused, ...withoutMasked } = inputs(t4(z0), t4(zm0))
  t.throws(() => lossWithGradients(DEFAULT_LOSS, withoutMasked), /mcm loss term needs maskedLogits/)
  t.throws(() => macoLoss(DEFAULT_LOSS, withoutMasked), /mcm loss term needs maskedLogits/)
  t.doesNotThrow(() => lossWithGradients({ ...DEFAULT_LOSS, mcm: false }, withoutMasked))
})

t.test('the losses leave no tensors behind but their results', async (t) => {
  const input = inputs(t4(z0), t4(zm0))
  const before = tf.memory().numTensors
  const result = lossWithGradients(DEFAULT_LOSS, input)
  t.equal(tf.memory().numTensors - before, 1 + Object.keys(result.terms).length + 2)
  tf.dispose(result as unknown as tf.TensorContainer)
  t.equal(tf.memory().numTensors, before)
  tf.dispose(macoLoss(DEFAULT_LOSS, input))
  t.equal(tf.memory().numTensors, before, 'no gradients saved when nothing records')
  const grads = tf.grads((z: tf.Tensor, zm: tf.Tensor) =>
    macoLoss(DEFAULT_LOSS, { ...input, logits: z as tf.Tensor4D, maskedLogits: zm as tf.Tensor4D }),
  )([input.logits, input.maskedLogits])
  t.equal(tf.memory().numTensors - before, 2, 'only the two gradients')
  tf.dispose(grads)
})

t.test('loss config from JSON: a subset over the defaults, mistakes in words', async (t) => {
  t.same(decodeLossConfig({}), { _tag: 'Right', right: DEFAULT_LOSS })
  t.same(decodeLossConfig({ cpl: false, beta: 1 }), {
    _tag: 'Right',
    right: { ...DEFAULT_LOSS, cpl: false, beta: 1 },
  })
  t.match(decodeLossConfig({ lamdaMcm: 0.2 }), {
    _tag: 'Left',
    left: /unknown loss option "lamdaMcm"/,
  })
  t.match(decodeLossConfig({ beta: '0.5' }), {
    _tag: 'Left',
    left: /beta must be a number, got "0.5"/,
  })
  t.match(decodeLossConfig({ mcm: 1 }), { _tag: 'Left', left: /mcm must be a boolean/ })
  t.match(decodeLossConfig({ lambdaGc: -1 }), { _tag: 'Left', left: /non-negative/ })
  t.match(decodeLossConfig([1]), { _tag: 'Left', left: /must be an object/ })
})
