import * as tf from '@tensorflow/tfjs-core'
import t from 'tap'
import { conv2dBackpropFilter } from '../../src/train/wasm-kernels.ts'
import {
  directFilterGradient,
  FILTER_CASES,
  filterGradient,
  maxRelative,
  normal,
  on,
  onBoth,
  tensorsOf,
  use,
  type FilterCase,
} from '../helpers/conv-cases.ts'

/** Each case's filter gradient by its definition, computed once. */
const directGradients = new Map<FilterCase, Float32Array>()
const directGradient = async (c: FilterCase) => {
  const known = directGradients.get(c)
  if (known) return known
  const computed = await directFilterGradient(c)
  directGradients.set(c, computed)
  return computed
}

/** The cpu backend's own gradient takes tens of seconds on the chunked cases: the small ones. */
const small = FILTER_CASES.filter((c) => !c.name.includes('chunks'))

t.test("the direct sum is the cpu backend's filter gradient (the reference checked)", async (t) => {
  t.equal(small.length, FILTER_CASES.length - 3, 'all but the three chunked cases')
  for (const c of small) {
    const error = maxRelative(await directGradient(c), await on('cpu', filterGradient(c)))
    t.ok(error < 1e-5, `${c.name}: relative error ${error.toExponential(2)}`)
  }
})

for (const c of FILTER_CASES)
  t.test(`wasm filter gradient (${c.name}) matches the direct sum`, async (t) => {
    const direct = await directGradient(c)
    const wasm = await on('wasm', filterGradient(c))
    t.equal(wasm.length, c.w[0] * c.w[1] * c.w[2] * c.w[3])
    t.ok(
      maxRelative(wasm, direct) < 1e-4,
      `relative error ${maxRelative(wasm, direct).toExponential(2)}`,
    )
  })

/** The wasm filter gradient kernel called directly, with dy = d sum(y sin y) / dy = sin y + y cos y. */
const callKernel = (c: FilterCase, kernel: tf.KernelFunc, dataFormat = 'NHWC') =>
  tf.tidy(() => {
    const { x, w } = tensorsOf(c)
    const y = tf.conv2d(x, w, c.stride, c.pad)
    const dy = tf.add(tf.sin(y), tf.mul(y, tf.cos(y)))
    const out = kernel({
      inputs: { x, dy },
      attrs: { strides: c.stride, pad: c.pad, dataFormat, filterShape: c.w },
      backend: tf.backend(),
    }) as tf.TensorInfo
    return tf.engine().makeTensorFromTensorInfo(out)
  })

t.test(
  'both formulations match the direct sum at stride 1 (the bench compares them)',
  async (t) => {
    for (const c of FILTER_CASES.filter((f) => f.stride === 1)) {
      const direct = await directGradient(c)
      await use('wasm')
      for (const only of ['product', 'swapped-conv'] as const) {
        const out = callKernel(c, conv2dBackpropFilter(only))
        const wasm = out.dataSync().slice() as Float32Array
        out.dispose()
        const error = maxRelative(wasm, direct)
        t.ok(error < 1e-4, `${only}, ${c.name}: relative error ${error.toExponential(2)}`)
      }
    }
  },
)

t.test('the filter gradient leaves no wasm buffers behind', async (t) => {
  await use('wasm')
  const backend = tf.backend() as unknown as { numDataIds: () => number }
  for (const c of FILTER_CASES) {
    const before = backend.numDataIds()
    tf.dispose(tf.tidy(filterGradient(c)))
    t.equal(backend.numDataIds(), before, c.name)
  }
})

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

t.test(
  "wasm max-pool gradient matches the cpu backend's on odd sizes, overlapping windows and ties",
  async (t) => {
    const cases = [
      { shape: [3, 9, 7, 5], filter: 2, stride: 2, pad: 'valid' },
      { shape: [2, 9, 11, 3], filter: 3, stride: 2, pad: 'same' },
      { shape: [1, 6, 5, 7], filter: 3, stride: 1, pad: 'valid' },
    ] as const
    for (const c of cases) {
      // Integers from -2 to 2: most windows hold ties, which go to the first maximum.
      const x = normal([...c.shape], 4).map((v) => Math.max(-2, Math.min(2, Math.round(v))))
      const [cpu, wasm] = await onBoth(() =>
        tf.grad((v: tf.Tensor) => {
          const y = tf.maxPool(v as tf.Tensor4D, c.filter, c.stride, c.pad)
          return tf.sum(tf.mul(y, tf.reshape(tf.range(1, y.size + 1), y.shape)))
        })(tf.tensor4d(x, [...c.shape])),
      )
      t.same(Array.from(wasm), Array.from(cpu), `${c.shape} ${c.filter}x${c.filter} /${c.stride}`)
    }
  },
)

t.test('the filter gradient kernel refuses what it does not implement', async (t) => {
  await use('wasm')
  const c: FilterCase = { name: '', x: [1, 8, 8, 2], w: [3, 3, 2, 2], stride: 2, pad: 'same' }
  t.throws(() => callKernel(c, conv2dBackpropFilter(), 'NCHW'), /NHWC only/)
  t.throws(() => callKernel(c, conv2dBackpropFilter('product')), /needs stride 1/)
})
