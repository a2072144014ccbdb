import t from 'tap'
import type { Session } from '../../src/serve/runtime.ts'
import { withTta } from '../../src/serve/tta.ts'
import { thresholdSession } from '../helpers/serve-fixtures.ts'

/** Values with no symmetry: a view mapped back to the wrong pixels cannot agree with it. */
const ramp = (n: number, h: number, w: number): Float32Array =>
  Float32Array.from({ length: n * h * w }, (_, i) => Math.sin(i * 1.7) + ((i * 7) % 11) - 5)

/** A session blind to its input: class 1 is the column position x / (w - 1), class 0 the rest. */
const columnSession = (): Session => ({
  runtimeName: 'onnxruntime-web',
  threads: 1,
  run: async (_input, [n, , h, w]) => {
    const probabilities = new Float32Array(n * 2 * h * w)
    for (let s = 0; s < n; s++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          probabilities[(s * 2 + 1) * h * w + y * w + x] = x / (w - 1)
          probabilities[s * 2 * h * w + y * w + x] = 1 - x / (w - 1)
        }
    return { probabilities, dims: [n, 2, h, w] }
  },
  release: async () => undefined,
})

t.test(
  'a pixel-wise model is unchanged by every TTA: each view goes back where it came from',
  async (t) => {
    for (const [tta, h, w, views] of [
      ['flip', 6, 10, 4],
      ['dihedral', 8, 8, 8],
      ['dihedral', 6, 10, 4], // not square: the 4 flips only
    ] as const) {
      const input = ramp(3, h, w)
      const plain = await thresholdSession().run(input, [3, 1, h, w])
      const inner = thresholdSession()
      const augmented = await withTta(tta)(inner).run(input, [3, 1, h, w])
      t.same(augmented.dims, [3, 2, h, w], `${tta} ${h}x${w}: dims as without TTA`)
      t.same(
        Array.from(augmented.probabilities),
        Array.from(plain.probabilities),
        `${tta} ${h}x${w}`,
      )
      t.same(inner.runs, [[3 * views, 1, h, w]], `${tta} ${h}x${w}: one run of ${views} views`)
    }
  },
)

t.test(
  'flip averages x / (w - 1) with its mirror (w - 1 - x) / (w - 1): 1/2 everywhere',
  async (t) => {
    const out = await withTta('flip')(columnSession()).run(ramp(2, 4, 5), [2, 1, 4, 5])
    t.ok(out.probabilities.every((p) => Math.abs(p - 0.5) < 1e-7))
  },
)

t.test(
  'dihedral on a square: transposed views bring the rows in, still 1/2 everywhere',
  async (t) => {
    // The mean of all 8 is 1/2 however the transposes are mapped back, so check by hand what
    // the identity and the plain transpose put on a few pixels.
    const session = columnSession()
    const one = await withTta('dihedral')(session).run(ramp(1, 5, 5), [1, 1, 5, 5])
    t.ok(one.probabilities.every((p) => Math.abs(p - 0.5) < 1e-7))
    // The identity shows pixel (y, x) at (y, x), the transpose at (x, y): it gets x / 4 and
    // y / 4, summed here (the mean is over 8 views).
    const transposeOnly: Session = {
      ...session,
      run: async (input, dims) => {
        const all = await session.run(input, dims)
        // Keep views 0 (identity) and 4 (transpose); zero the rest so they add nothing.
        const plane = 2 * dims[2] * dims[3]
        const kept = all.probabilities.map((p, i) => {
          const view = Math.floor(i / plane)
          return view === 0 || view === 4 ? p : 0
        })
        return { probabilities: kept, dims: all.dims }
      },
    }
    const two = await withTta('dihedral')(transposeOnly).run(ramp(1, 5, 5), [1, 1, 5, 5])
    const at = (c: number, y: number, x: number) => two.probabilities[c * 25 + y * 5 + x] * 8
    t.equal(at(1, 1, 2), 2 / 4 + 1 / 4)
    t.equal(at(1, 3, 0), 0 + 3 / 4)
    t.equal(at(1, 0, 1), 1 / 4 + 0)
    t.equal(at(0, 4, 1), 3 / 4 + 0)
  },
)

t.test('none is the session itself', async (t) => {
  const session = thresholdSession()
  t.equal(withTta('none')(session), session)
})
