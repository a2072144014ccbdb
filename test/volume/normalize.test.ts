import t from 'tap'
import { zScore, zScoreInPlace } from '../../src/volume/normalize.ts'

const slice = (data: number[], width = data.length) => ({
  width,
  height: data.length / width,
  data: Float32Array.from(data),
  spacing: [1, 1] as const,
})

t.test('a hand-computed case: mean 2.5, population sd sqrt(1.25)', async (t) => {
  const sd = Math.sqrt(1.25)
  const out = zScore(slice([1, 2, 3, 4]))
  ;[-1.5, -0.5, 0.5, 1.5].forEach((d, i) => t.ok(Math.abs(out.data[i] - d / sd) < 1e-6, `${i}`))
})

t.test('any slice comes out with mean 0 and sd 1, the input untouched', async (t) => {
  let seed = 7
  const values = Array.from({ length: 64 * 48 }, () => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return 300 + (seed / 2147483648) * 1200
  })
  const input = slice(values, 64)
  const out = zScore(input)
  const mean = out.data.reduce((a, b) => a + b, 0) / out.data.length
  const sd = Math.sqrt(out.data.reduce((a, b) => a + (b - mean) ** 2, 0) / out.data.length)
  t.ok(Math.abs(mean) < 1e-6, `mean ${mean}`)
  t.ok(Math.abs(sd - 1) < 1e-5, `sd ${sd}`)
  t.same([...input.data], [...Float32Array.from(values)])
  t.same([out.width, out.height, out.spacing], [64, 48, [1, 1]])
})

t.test('a constant slice becomes zeros, never NaN, whatever its value', async (t) => {
  for (const v of [0, 1, 0.1, 123456.789, -3e7]) {
    const out = zScoreInPlace(new Float32Array(1000).fill(v))
    t.ok(
      out.every((x) => x === 0),
      `constant ${v}`,
    )
  }
})
