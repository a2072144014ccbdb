import * as tf from '@tensorflow/tfjs-core'
import t from 'tap'
import { loadEngine } from '../../src/train/engine.ts'
import { conv2dBackpropFilter } from '../../src/train/wasm-kernels.ts'
import { seeded } from '../../src/util/rng.ts'

const use = async (name: 'cpu' | 'wasm') => {
  const r = await loadEngine(name)()
  if (r._tag === 'Left') throw new Error(r.left)
}

const normal = (shape: number[], seed: number) => {
  const rng = seeded(seed, 'wasm-kernels')
  return Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal())
}

/** `f` computed on one backend, as an array. */
const on = async (backend: 'cpu' | 'wasm', f: () => tf.Tensor) => {
  await use(backend)
  const y = tf.tidy(f)
  const values = y.dataSync().slice() as Float32Array
  y.dispose()
  return values
}

/** The same computation on cpu and on wasm, as arrays. */
const onBoth = async (f: () => tf.Tensor) => [await on('cpu', f), await on('wasm', f)]

const maxRelative = (a: Float32Array, b: Float32Array) => {
  let d = 0
  let s = 1e-12
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]))
    s = Math.max(s, Math.abs(b[i]))
  }
  return d / s
}

interface FilterCase {
  readonly name: string
  /** [batch, height, width, channels] */
  readonly x: [number, number, number, number]
  /** [kh, kw, in, out] */
  readonly w: [number, number, number, number]
  readonly stride: number | [number, number]
  readonly pad: 'same' | 'valid' | number
}

const FILTER_CASES: readonly FilterCase[] = [
  { name: '3x3 same, odd size', x: [3, 17, 17, 5], w: [3, 3, 5, 6], stride: 1, pad: 'same' },
  { name: '3x3 same, batch 1', x: [1, 16, 16, 8], w: [3, 3, 8, 8], stride: 1, pad: 'same' },
  { name: '3x3 same, batch 4', x: [4, 16, 16, 8], w: [3, 3, 8, 16], stride: 1, pad: 'same' },
  { name: 'first layer, 1 channel', x: [4, 20, 20, 1], w: [3, 3, 1, 8], stride: 1, pad: 'same' },
  // 4 x 16 x 16 = 1024 positions: the grid gets its spare column.
  { name: '1x1, 1024 positions', x: [4, 16, 16, 6], w: [1, 1, 6, 3], stride: 1, pad: 'same' },
  { name: '1x1, batch 1, odd size', x: [1, 15, 15, 4], w: [1, 1, 4, 2], stride: 1, pad: 'same' },
  { name: '3x3 valid', x: [3, 12, 12, 5], w: [3, 3, 5, 6], stride: 1, pad: 'valid' },
  { name: '3x3 pad 1', x: [3, 9, 9, 5], w: [3, 3, 5, 6], stride: 1, pad: 1 },
  // An even kernel pads 'same' unevenly; a non-square image and kernel keep rows from columns.
  { name: '2x3 same, 11 x 14', x: [2, 11, 14, 3], w: [2, 3, 3, 4], stride: 1, pad: 'same' },
  // 3 x 43 x 47 positions (padded) by 1 + 384 channels pass 8 MiB: products over two chunks.
  { name: '3x3, two chunks', x: [3, 41, 45, 1], w: [3, 3, 1, 384], stride: 1, pad: 'same' },
  { name: '1x1, two chunks', x: [3, 41, 45, 2], w: [1, 1, 2, 384], stride: 1, pad: 'same' },
  // 3 x 43 x 47 positions by 1 + 700 channels pass 16 MiB: three chunks, the last shorter.
  { name: '3x3, three chunks', x: [3, 41, 45, 1], w: [3, 3, 1, 700], stride: 1, pad: 'same' },
  { name: '3x3 same, 3 -> 1, 13 x 11', x: [3, 13, 11, 3], w: [3, 3, 3, 1], stride: 1, pad: 'same' },
  {
    name: '3x3 same, 16 -> 16, batch 1, 9 x 7',
    x: [1, 9, 7, 16],
    w: [3, 3, 16, 16],
    stride: 1,
    pad: 'same',
  },
  {
    name: '3x3 same, 16 -> 4, batch 3, 7 x 9',
    x: [3, 7, 9, 16],
    w: [3, 3, 16, 4],
    stride: 1,
    pad: 'same',
  },
  { name: '1x1, 1 -> 1, batch 3, 5 x 7', x: [3, 5, 7, 1], w: [1, 1, 1, 1], stride: 1, pad: 'same' },
  { name: 'stride 2 same, odd size', x: [2, 17, 17, 3], w: [3, 3, 3, 4], stride: 2, pad: 'same' },
  // 16 rows, 3 taps, stride 2: 7 output rows, and the dilated conv gives 4 taps to cut to 3.
  { name: 'stride 2 valid, 16 x 15', x: [2, 16, 15, 3], w: [3, 3, 3, 4], stride: 2, pad: 'valid' },
  { name: 'strides 2 and 1, 1x1', x: [3, 10, 9, 4], w: [1, 1, 4, 5], stride: [2, 1], pad: 'same' },
]

const tensorsOf = (c: FilterCase) => ({
  x: tf.tensor4d(normal(c.x, 1), c.x),
  w: tf.tensor4d(normal(c.w, 2), c.w),
})

/** The filter gradient of sum(y sin y), y = conv2d(x, w), on the current backend. */
const filterGradient = (c: FilterCase) => () => {
  const { x, w } = tensorsOf(c)
  return tf.grad((filter: tf.Tensor) => {
    const y = tf.conv2d(x, filter as tf.Tensor4D, c.stride, c.pad)
    return tf.sum(tf.mul(y, tf.sin(y)))
  })(w)
}

/** The cpu backend's filter gradient of each case, computed once (the large cases take seconds). */
const cpuGradients = new Map<FilterCase, Float32Array>()
const cpuGradient = async (c: FilterCase) => {
  const known = cpuGradients.get(c)
  if (known) return known
  const computed = await on('cpu', filterGradient(c))
  cpuGradients.set(c, computed)
  return computed
}

for (const c of FILTER_CASES)
  t.test(`wasm filter gradient (${c.name}) matches the cpu backend's`, async (t) => {
    const cpu = await cpuGradient(c)
    const wasm = await on('wasm', filterGradient(c))
    t.equal(wasm.length, c.w[0] * c.w[1] * c.w[2] * c.w[3])
    t.ok(maxRelative(wasm, cpu) < 1e-4, `relative error ${maxRelative(wasm, cpu).toExponential(2)}`)
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
  'both formulations match the cpu backend at stride 1 (the bench compares them)',
  async (t) => {
    for (const c of FILTER_CASES.filter((f) => f.stride === 1)) {
      const cpu = await cpuGradient(c)
      await use('wasm')
      for (const only of ['product', 'swapped-conv'] as const) {
        const out = callKernel(c, conv2dBackpropFilter(only))
        const wasm = out.dataSync().slice() as Float32Array
        out.dispose()
        const error = maxRelative(wasm, cpu)
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
