import * as tf from '@tensorflow/tfjs-core'
import t from 'tap'
import { loadEngine } from '../../src/train/engine.ts'
import { seeded } from '../../src/util/rng.ts'

const use = async (name: 'cpu' | 'wasm') => {
  const r = await loadEngine(name)()
  if (r._tag === 'Left') throw new Error(r.left)
}

const normal = (shape: number[], seed: number) => {
  const rng = seeded(seed, 'wasm-kernels')
  return Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal())
}

/** The same computation on cpu and on wasm, as arrays. */
const onBoth = async (f: () => tf.Tensor) => {
  const out: Float32Array[] = []
  for (const b of ['cpu', 'wasm'] as const) {
    await use(b)
    const y = tf.tidy(f)
    out.push(y.dataSync().slice() as Float32Array)
    y.dispose()
  }
  return out
}

const maxRelative = (a: Float32Array, b: Float32Array) => {
  let d = 0
  let s = 1e-12
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]))
    s = Math.max(s, Math.abs(b[i]))
  }
  return d / s
}

for (const [k, pad, size] of [
  [3, 'same', 17],
  [1, 'same', 16],
  [3, 'valid', 12],
  [3, 1, 9],
] as const)
  t.test(
    `wasm filter gradient (${k}x${k}, pad ${pad}, ${size} px) matches the cpu backend's`,
    async (t) => {
      const xShape = [3, size, size, 5]
      const wShape = [k, k, 5, 6]
      const x = normal(xShape, 1)
      const w = normal(wShape, 2)
      const [cpu, wasm] = await onBoth(() =>
        tf.grad((filter: tf.Tensor) => {
          const y = tf.conv2d(tf.tensor4d(x, xShape as never), filter as tf.Tensor4D, 1, pad)
          return tf.sum(tf.mul(y, tf.sin(y)))
        })(tf.tensor4d(w, wShape as never)),
      )
      t.equal(wasm.length, k * k * 5 * 6)
      t.ok(
        maxRelative(wasm, cpu) < 1e-4,
        `relative error ${maxRelative(wasm, cpu).toExponential(2)}`,
      )
    },
  )

t.test(
  "wasm max-pool gradient matches the cpu backend's (the shipped kernel did not)",
  async (t) => {
    const shape = [2, 32, 32, 4]
    const x = normal(shape, 3)
    const [cpu, wasm] = await onBoth(() =>
      tf.grad((v: tf.Tensor) => {
        const y = tf.maxPool(v as tf.Tensor4D, 2, 2, 'valid')
        return tf.sum(tf.mul(y, tf.cos(y)))
      })(tf.tensor4d(x, shape as never)),
    )
    t.same(
      wasm.map((v) => (v === 0 ? 0 : 1)),
      cpu.map((v) => (v === 0 ? 0 : 1)),
      'the gradient goes to the same elements',
    )
    t.ok(maxRelative(wasm, cpu) < 1e-5)
    // Each 2x2 window sends its gradient to exactly one element.
    t.equal(wasm.filter((v) => v !== 0).length, 2 * 16 * 16 * 4)
  },
)

t.test('the filter gradient kernel refuses what it does not implement', async (t) => {
  await use('wasm')
  t.throws(
    () =>
      tf.grad((w: tf.Tensor) =>
        tf.sum(tf.conv2d(tf.ones([1, 8, 8, 2]) as tf.Tensor4D, w as tf.Tensor4D, 2, 'same')),
      )(tf.ones([3, 3, 2, 2])),
    /stride 1 only/,
  )
})
