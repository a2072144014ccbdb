import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import {
  attentionMask,
  defaultPatchSize,
  maskBatch,
  maskImage,
  maskingOptions,
  patchGrid,
  patchWeights,
  samplePatches,
} from '../../src/maco/masking.ts'
import { seeded } from '../../src/util/rng.ts'

const UNLABELLED = 4

/** A w x h scribble, all unlabelled except the given (x, y, class) pixels. */
const scribbleWith = (w: number, h: number, pixels: [number, number, number][]) => {
  const s = new Uint8Array(w * h).fill(UNLABELLED)
  for (const [x, y, c] of pixels) s[y * w + x] = c
  return s
}

/**
 * Inclusion probability of each item when `count` items are drawn one after another, each
 * with probability proportional to its weight among those left: every ordered draw enumerated.
 */
const exactInclusion = (weights: number[], count: number): number[] => {
  const p = new Array(weights.length).fill(0)
  const walk = (left: number[], chosen: number[], prob: number) => {
    if (chosen.length === count) {
      for (const i of chosen) p[i] += prob
      return
    }
    const total = left.reduce((a, i) => a + weights[i], 0)
    for (const i of left)
      walk(
        left.filter((j) => j !== i),
        [...chosen, i],
        (prob * weights[i]) / total,
      )
  }
  walk(
    weights.map((_, i) => i),
    [],
    1,
  )
  return p
}

const options = (patch: number, ratio = 0.5) =>
  E.getOrElseW((e: string) => {
    throw new Error(e)
  })(maskingOptions({ size: 256, patch, ratio }))

t.test('patch size scales with the slice size, 16 at 256 px, at least 1', async (t) => {
  t.equal(defaultPatchSize(256), 16)
  t.equal(defaultPatchSize(128), 8)
  t.equal(defaultPatchSize(384), 24)
  t.equal(defaultPatchSize(4), 1)
  t.match(maskingOptions({ size: 256 }), {
    _tag: 'Right',
    right: { patch: 16, ratio: 0.5, scribbleWeight: 3, unlabelled: 4 },
  })
})

t.test('bad options are reported in words', async (t) => {
  t.match(maskingOptions({ size: 256, ratio: 1.5 }), {
    _tag: 'Left',
    left: /ratio must be in \[0, 1\]/,
  })
  t.match(maskingOptions({ size: 256, patch: 0 }), { _tag: 'Left', left: /positive integer/ })
  t.match(maskingOptions({ size: 256, scribbleWeight: -1 }), {
    _tag: 'Left',
    left: /positive number/,
  })
})

t.test('a patch holding any labelled pixel, of any class, weighs w_s', async (t) => {
  // 6 x 4 in 2 x 2 patches: a 3 x 2 grid. Class 0 in patch 0, class 2 in patch 4.
  const scribble = scribbleWith(6, 4, [
    [1, 1, 0],
    [3, 3, 2],
  ])
  t.same(
    [...patchWeights(scribble, 6, 4, { patch: 2, scribbleWeight: 3, unlabelled: UNLABELLED })],
    [3, 1, 1, 1, 3, 1],
  )
})

t.test('exactly round(r * K) patches are masked', async (t) => {
  const rng = seeded(1)
  for (const [ratio, expected] of [
    [0.5, 128],
    [0.3, 77],
    [0, 0],
    [1, 256],
  ]) {
    const mask = attentionMask(
      new Uint8Array(256 * 256).fill(UNLABELLED),
      256,
      256,
      options(16, ratio),
      rng,
    )
    t.equal(mask.length, 256)
    t.equal(
      mask.reduce((a, b) => a + b, 0),
      expected,
      `ratio ${ratio}`,
    )
  }
})

t.test('the same seed gives the same mask, another seed another', async (t) => {
  const scribble = scribbleWith(64, 64, [[10, 10, 1]])
  const o = options(8)
  const a = attentionMask(scribble, 64, 64, o, seeded(5, 'mcm', 0, 1))
  t.same(attentionMask(scribble, 64, 64, o, seeded(5, 'mcm', 0, 1)), a)
  t.notSame(attentionMask(scribble, 64, 64, o, seeded(5, 'mcm', 1, 1)), a)
})

t.test('scribble patches are masked as often as successive weighted sampling says', async (t) => {
  // K = 6 patches, 2 with scribbles (w_s = 3), 3 drawn.
  const scribble = scribbleWith(6, 4, [
    [0, 0, 1],
    [5, 3, 0],
  ])
  const weights = [
    ...patchWeights(scribble, 6, 4, { patch: 2, scribbleWeight: 3, unlabelled: UNLABELLED }),
  ]
  t.same(weights, [3, 1, 1, 1, 1, 3])
  const exact = exactInclusion(weights, 3)
  t.ok(
    Math.abs(exact.reduce((a, b) => a + b, 0) - 3) < 1e-12,
    'inclusion probabilities sum to the draw count',
  )
  const trials = 20_000
  const counts = new Array(6).fill(0)
  const o = { ...options(2), ratio: 0.5 }
  for (let i = 0; i < trials; i++) {
    const mask = attentionMask(scribble, 6, 4, o, seeded(11, 'law', i))
    mask.forEach((m, k) => (counts[k] += m))
  }
  for (let k = 0; k < 6; k++) {
    const freq = counts[k] / trials
    const se = Math.sqrt((exact[k] * (1 - exact[k])) / trials)
    t.ok(Math.abs(freq - exact[k]) < 4 * se, `patch ${k}: ${freq} vs exact ${exact[k].toFixed(4)}`)
  }
  // Against the uniform law the scribble patches would be masked half the time.
  t.ok(exact[0] > 0.7 && counts[0] / trials > 0.7)
})

t.test('sampling follows the law for unequal weights too', async (t) => {
  const weights = [5, 0.5, 2, 1, 1]
  const exact = exactInclusion(weights, 2)
  const trials = 20_000
  const counts = new Array(weights.length).fill(0)
  const rng = seeded(12)
  for (let i = 0; i < trials; i++)
    samplePatches(weights, 2, rng).forEach((m, k) => (counts[k] += m))
  for (let k = 0; k < weights.length; k++) {
    const se = Math.sqrt((exact[k] * (1 - exact[k])) / trials)
    t.ok(Math.abs(counts[k] / trials - exact[k]) < 4 * se, `patch ${k}`)
  }
  t.throws(() => samplePatches([1, 0, 1], 1, rng), /must be positive/)
  t.throws(() => samplePatches([1, 1], 3, rng), /cannot draw 3 of 2/)
})

t.test('masked pixels are exactly 0 and the others untouched', async (t) => {
  const w = 20
  const h = 12
  const rng = seeded(3)
  const image = Float32Array.from({ length: w * h }, () => rng.normal())
  const { cols, rows } = patchGrid(w, h, 4)
  const mask = samplePatches(new Array(cols * rows).fill(1), 7, rng)
  const masked = maskImage(image, w, h, mask, 4)
  const expected = image.map((v, i) => {
    const [x, y] = [i % w, Math.floor(i / w)]
    return mask[Math.floor(y / 4) * cols + Math.floor(x / 4)] === 1 ? 0 : v
  })
  t.same(masked, expected)
  t.equal(masked.filter((v) => v === 0).length, 7 * 16, '7 whole 4 x 4 patches are zero')
  t.not(masked, image, 'a copy, not the input')
})

t.test('when p does not divide the size the edge patches are partial', async (t) => {
  // 5 x 3 with p = 2: columns {0,1},{2,3},{4}; rows {0,1},{2}. The scribble at (4, 2) lies in
  // the last, 1 x 1 patch.
  t.same(patchGrid(5, 3, 2), { cols: 3, rows: 2 })
  const scribble = scribbleWith(5, 3, [[4, 2, 1]])
  t.same(
    [...patchWeights(scribble, 5, 3, { patch: 2, scribbleWeight: 3, unlabelled: UNLABELLED })],
    [1, 1, 1, 1, 1, 3],
  )
  const image = Float32Array.from({ length: 15 }, (_, i) => i + 1)
  const only = (k: number) => Uint8Array.from({ length: 6 }, (_, i) => (i === k ? 1 : 0))
  t.same(
    [...maskImage(image, 5, 3, only(5), 2)],
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0],
  )
  t.same(
    [...maskImage(image, 5, 3, only(2), 2)],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 15],
  )
  t.throws(() => maskImage(image, 5, 3, new Uint8Array(4), 2), /expected 3 x 2/)
})

t.test('a batch is masked image by image, whatever the batch split', async (t) => {
  const [w, h] = [16, 16]
  const rng = seeded(9)
  const images = Float32Array.from({ length: 2 * w * h }, () => rng.uniform() + 1)
  const scribbles = new Uint8Array(2 * w * h).fill(UNLABELLED)
  scribbles[3] = 1
  scribbles[w * h + 200] = 2
  const o = options(4)
  const rngFor = (offset: number) => (b: number) => seeded(21, 'mcm', 0, offset + b)
  const both = maskBatch(images, scribbles, { batch: 2, height: h, width: w }, o, rngFor(0))
  const second = maskBatch(
    images.subarray(w * h),
    scribbles.subarray(w * h),
    { batch: 1, height: h, width: w },
    o,
    rngFor(1),
  )
  t.same(both.subarray(w * h), second)
  for (let b = 0; b < 2; b++) {
    const zeros = both.subarray(b * w * h, (b + 1) * w * h).filter((v) => v === 0).length
    t.equal(zeros, 8 * 16, `image ${b}: 8 of 16 patches of 16 pixels`)
  }
  t.throws(
    () => maskBatch(images, scribbles, { batch: 3, height: h, width: w }, o, rngFor(0)),
    /batch needs/,
  )
})
