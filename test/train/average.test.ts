import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { averageDecay, startAverage, updateAverage } from '../../src/train/average.ts'
import { loadEngine } from '../../src/train/engine.ts'
import type { Params } from '../../src/model/tfjs-unet.ts'

const engine = await loadEngine('cpu')()
if (E.isLeft(engine)) throw new Error(engine.left)

/** Runs the average over iterates given as plain numbers per weight. */
const averageOf = async (decay: number, iterates: readonly Record<string, number[]>[]) => {
  const params = (x: Record<string, number[]>): Params =>
    Object.fromEntries(Object.entries(x).map(([n, v]) => [n, tf.tensor1d(v)]))
  const before = tf.memory().numTensors
  const first = params(iterates[0])
  let average = startAverage(first)
  tf.dispose(Object.values(first))
  for (let n = 1; n <= iterates.length; n++) {
    const p = params(iterates[n - 1])
    average = updateAverage(average, p, averageDecay(decay, n))
    tf.dispose(Object.values(p))
  }
  const out = Object.fromEntries(
    await Promise.all(
      Object.entries(average).map(async ([n, x]) => [n, Array.from(await x.data())] as const),
    ),
  )
  tf.dispose(Object.values(average))
  t.equal(tf.memory().numTensors, before, 'every old average is freed')
  return out
}

const close = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((x, i) => Math.abs(x - b[i]) < 1e-6)

t.test('the decay warms up as a running mean, then stays at the decay', async (t) => {
  t.equal(averageDecay(0.999, 1), 0, 'the first update is the weights themselves')
  t.equal(averageDecay(0.999, 2), 0.5)
  t.equal(averageDecay(0.999, 4), 0.75)
  t.equal(averageDecay(0.999, 1000), 0.999)
  t.equal(averageDecay(0.999, 1_000_000), 0.999)
  t.equal(averageDecay(0.5, 3), 0.5)
})

t.test('while the decay warms up the average is the arithmetic mean of the iterates', async (t) => {
  const iterates = [
    { w: [1, -2], b: [10] },
    { w: [3, 0], b: [20] },
    { w: [-1, 4], b: [30] },
    { w: [5, 6], b: [-40] },
  ]
  const got = await averageOf(0.999, iterates)
  t.ok(close(got.w, [2, 2]), `w ${got.w}`)
  t.ok(close(got.b, [5]), `b ${got.b}`)
})

t.test('past the warm-up each iterate weighs decay^age, by hand', async (t) => {
  // decay 0.5: updates 1..4 use d = 0, 0.5, 0.5, 0.5, so the average is
  // x4/2 + x3/4 + x2/8 + x1/8.
  const x = [8, 16, 32, 64]
  const got = await averageOf(
    0.5,
    x.map((v) => ({ w: [v] })),
  )
  t.ok(close(got.w, [64 / 2 + 32 / 4 + 16 / 8 + 8 / 8]), `w ${got.w}`)
})
