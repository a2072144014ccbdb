import t from 'tap'
import { resampleSlice } from '../../src/volume/resample.ts'
import type { Slice } from '../../src/volume/slice.ts'

/** mulberry32: seeded, so every run draws the same label maps. */
const rng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296
}

const sliceFrom = (
  width: number,
  height: number,
  spacing: readonly [number, number],
  value: (x: number, y: number) => number,
): Slice => ({
  width,
  height,
  spacing,
  data: Float32Array.from({ length: width * height }, (_, i) =>
    value(i % width, Math.floor(i / width)),
  ),
})

t.test('downsampling by two averages pixel pairs (hand-computed)', async (t) => {
  // centres at 0, 0.5, 1, 1.5 mm; the FOV [-0.25, 1.75] re-gridded at 1 mm: centres 0.25, 1.25
  const out = resampleSlice(
    { spacing: [1, 1] },
    'bilinear',
  )(sliceFrom(4, 1, [0.5, 1], (x) => 10 * x))
  t.same([out.width, out.height, out.spacing], [2, 1, [1, 1]])
  t.same([...out.data], [5, 25])
})

t.test('bilinear reproduces a linear ramp exactly at interior points', async (t) => {
  const ramp = (x: number, y: number) => 3 + 0.7 * x - 1.3 * y
  for (const [from, to] of [
    [
      [1.1, 0.9],
      [1.37, 0.6],
    ],
    [
      [1.5625, 1.5625],
      [1.37, 1.37],
    ],
    [
      [0.7, 2.1],
      [1.37, 1.37],
    ],
  ] as const) {
    const input = sliceFrom(37, 29, from, ramp)
    const out = resampleSlice({ spacing: to }, 'bilinear')(input)
    t.equal(out.width, Math.round((37 * from[0]) / to[0]))
    t.equal(out.height, Math.round((29 * from[1]) / to[1]))
    // The output grid in mm from the FOV centre, mapped back to native continuous indices.
    const native = (u: number, m: number, n: number, t: number, s: number) =>
      (n - 1) / 2 + ((u - (m - 1) / 2) * t) / s
    let interior = 0
    let worst = 0
    for (let v = 0; v < out.height; v++)
      for (let u = 0; u < out.width; u++) {
        const x = native(u, out.width, 37, to[0], from[0])
        const y = native(v, out.height, 29, to[1], from[1])
        if (x < 0 || x > 36 || y < 0 || y > 28) continue
        interior++
        worst = Math.max(worst, Math.abs(out.data[v * out.width + u] - ramp(x, y)))
      }
    t.ok(interior > 0.8 * out.width * out.height, `${interior} interior points`)
    t.ok(worst < 1e-4, `${from} -> ${to}: max error ${worst}`)
  }
})

t.test('resampling to the same spacing is the identity, both modes', async (t) => {
  const random = rng(1)
  const input = sliceFrom(23, 17, [1.37, 1.7], () => random() * 100)
  for (const mode of ['bilinear', 'nearest'] as const) {
    const out = resampleSlice({ spacing: [1.37, 1.7] }, mode)(input)
    t.same([out.width, out.height], [23, 17])
    t.same([...out.data], [...input.data], mode)
  }
})

t.test('nearest copies the nearest native pixel and never invents a label', async (t) => {
  const random = rng(2)
  const labels = [0, 2, 5, 7]
  for (let trial = 0; trial < 20; trial++) {
    const width = 5 + Math.floor(random() * 40)
    const height = 5 + Math.floor(random() * 40)
    const from = [0.5 + random() * 2, 0.5 + random() * 2] as const
    const to = [0.5 + random() * 2, 0.5 + random() * 2] as const
    const input = sliceFrom(width, height, from, () => labels[Math.floor(random() * 4)])
    const out = resampleSlice({ spacing: to }, 'nearest')(input)
    const present = new Set(input.data)
    t.ok(
      out.data.every((v) => present.has(v)),
      `trial ${trial}: only labels of the input`,
    )
    // Brute force: the output pixel centre's native position, the closest native centre.
    const closest = (p: number, n: number) => {
      let best = 0
      for (let i = 1; i < n; i++) if (Math.abs(i - p) < Math.abs(best - p)) best = i
      return best
    }
    let wrong = 0
    for (let v = 0; v < out.height; v++)
      for (let u = 0; u < out.width; u++) {
        const x = (width - 1) / 2 + ((u - (out.width - 1) / 2) * to[0]) / from[0]
        const y = (height - 1) / 2 + ((v - (out.height - 1) / 2) * to[1]) / from[1]
        // A centre half way between two native centres may go either way.
        if (Math.abs(x - Math.round(x)) > 0.499 || Math.abs(y - Math.round(y)) > 0.499) continue
        if (
          out.data[v * out.width + u] !== input.data[closest(y, height) * width + closest(x, width)]
        )
          wrong++
      }
    t.equal(wrong, 0, `trial ${trial}: every pixel from its nearest native pixel`)
  }
})

t.test('a non-positive or non-finite spacing is refused', async (t) => {
  const input = sliceFrom(4, 4, [1, 1], () => 0)
  t.throws(() => resampleSlice({ spacing: [0, 1] }, 'bilinear')(input), /positive and finite/)
  t.throws(
    () => resampleSlice({ spacing: [1, 1] }, 'bilinear')({ ...input, spacing: [NaN, 1] }),
    /positive/,
  )
})
