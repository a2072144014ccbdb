import t from 'tap'
import { rngFromState, seeded, seedState } from '../../src/util/rng.ts'

const draws = (rng: { uniform: () => number }, n: number) =>
  Array.from({ length: n }, () => rng.uniform())

t.test('the same seed and labels give the same stream', async (t) => {
  t.same(draws(seeded(42, 'mcm', 3), 10), draws(seeded(42, 'mcm', 3), 10))
})

t.test('other seeds or labels give other streams', async (t) => {
  const base = draws(seeded(42, 'mcm', 3), 4)
  t.notSame(draws(seeded(43, 'mcm', 3), 4), base)
  t.notSame(draws(seeded(42, 'mcm', 4), 4), base)
  t.notSame(draws(seeded(42, 'cpl', 3), 4), base)
  // Labels are length-prefixed, so regrouping the same characters is another stream.
  t.notSame(draws(seeded(42, 'ab', 'c'), 4), draws(seeded(42, 'a', 'bc'), 4))
})

t.test('the state is plain data and resuming from it continues the stream', async (t) => {
  const rng = seeded(7, 'train')
  draws(rng, 5)
  const saved = JSON.parse(JSON.stringify(rng.state()))
  t.same(draws(rngFromState(saved), 20), draws(rng, 20))
  t.same(seeded(7, 'train').state(), seedState(7, 'train'))
})

t.test(
  'fillUint32 draws what as many uniform() calls draw, and continues the stream',
  async (t) => {
    const bulk = seeded(9, 'dropout')
    const single = seeded(9, 'dropout')
    const first = bulk.fillUint32(new Uint32Array(1000))
    t.same(
      Array.from(first, (u) => u / 2 ** 32),
      draws(single, 1000),
    )
    t.same(bulk.state(), single.state(), 'the same state after')
    t.equal(bulk.uniform(), single.uniform(), 'and the same next draw')
    t.same(bulk.fillUint32(new Uint32Array(0)), new Uint32Array(0), 'an empty fill draws nothing')
    t.same(bulk.state(), single.state())
  },
)

t.test(
  'the stream is pinned: a checkpoint of an earlier version resumes on the same draws',
  async (t) => {
    // Drawn by the generator as it was at a4c0602 (a closure over four words).
    const pinned = [1364513295, 3268793296, 3525683162, 395551334]
    const rng = seeded(42, 'dropout', 7, 'original')
    t.same(
      Array.from(pinned, () => rng.uniform() * 2 ** 32),
      pinned,
    )
    t.same(Array.from(seeded(42, 'dropout', 7, 'original').fillUint32(new Uint32Array(4))), pinned)
  },
)

t.test('uniform is in [0, 1) with the mean and variance of U(0, 1)', async (t) => {
  const n = 100_000
  const xs = draws(seeded(1), n)
  t.ok(xs.every((x) => x >= 0 && x < 1))
  const mean = xs.reduce((a, b) => a + b, 0) / n
  const variance = xs.reduce((a, x) => a + (x - mean) ** 2, 0) / n
  // Standard errors: sqrt(1/12/n) = 0.0009 for the mean, about 0.0003 for the variance.
  t.ok(Math.abs(mean - 0.5) < 0.004, `mean ${mean}`)
  t.ok(Math.abs(variance - 1 / 12) < 0.0015, `variance ${variance}`)
})

t.test('int(n) covers 0..n-1 evenly (chi-square)', async (t) => {
  const n = 7
  const draws = 70_000
  const counts = new Array(n).fill(0)
  const rng = seeded(2)
  for (let i = 0; i < draws; i++) counts[rng.int(n)]++
  const expected = draws / n
  const chi2 = counts.reduce((a, c) => a + (c - expected) ** 2 / expected, 0)
  // 6 degrees of freedom: P(chi2 > 22.46) = 0.001.
  t.ok(chi2 < 22.46, `chi2 ${chi2}, counts ${counts}`)
  t.throws(() => rng.int(0), /integer/)
  t.throws(() => rng.int(2.5), /integer/)
})

t.test('normal has mean 0, variance 1 and normal tails', async (t) => {
  const n = 100_000
  const rng = seeded(3)
  const xs = Array.from({ length: n }, () => rng.normal())
  const mean = xs.reduce((a, b) => a + b, 0) / n
  const variance = xs.reduce((a, x) => a + (x - mean) ** 2, 0) / n
  const beyond2 = xs.filter((x) => Math.abs(x) > 2).length / n
  t.ok(Math.abs(mean) < 0.015, `mean ${mean}`)
  t.ok(Math.abs(variance - 1) < 0.02, `variance ${variance}`)
  // P(|Z| > 2) = 0.0455, standard error 0.00066.
  t.ok(Math.abs(beyond2 - 0.0455) < 0.003, `tail ${beyond2}`)
})

t.test('shuffle permutes in place, each arrangement about equally often', async (t) => {
  const rng = seeded(4)
  const xs = [1, 2, 3, 4, 5]
  t.equal(rng.shuffle(xs), xs)
  t.same([...xs].sort(), [1, 2, 3, 4, 5])
  const counts = new Map<string, number>()
  const trials = 24_000
  for (let i = 0; i < trials; i++) {
    const key = rng.shuffle(['a', 'b', 'c', 'd']).join('')
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  t.equal(counts.size, 24)
  const chi2 = [...counts.values()].reduce((a, c) => a + (c - 1000) ** 2 / 1000, 0)
  // 23 degrees of freedom: P(chi2 > 49.73) = 0.001.
  t.ok(chi2 < 49.73, `chi2 ${chi2}`)
})
