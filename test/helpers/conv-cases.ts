/**
 * Conv cases and helpers shared by the kernel tests (wasm's filter gradient, the native convs
 * of the onnxruntime engine): random tensors, a computation on one engine, relative error.
 */
import * as tf from '@tensorflow/tfjs-core'
import { loadEngine, type EngineName } from '../../src/train/engine.ts'
import { seeded } from '../../src/util/rng.ts'
import { elementCount } from '../../src/util/shape.ts'

export const use = async (name: EngineName) => {
  const r = await loadEngine(name)()
  if (r._tag === 'Left') throw new Error(r.left)
}

export const normal = (shape: number[], seed: number) => {
  const rng = seeded(seed, 'wasm-kernels')
  return Float32Array.from({ length: elementCount(shape) }, () => rng.normal())
}

/** `f` computed on one backend, as an array. */
export const on = async (backend: EngineName, f: () => tf.Tensor) => {
  await use(backend)
  const y = tf.tidy(f)
  const values = y.dataSync().slice() as Float32Array
  y.dispose()
  return values
}

/** The same computation on cpu and on wasm, as arrays. */
export const onBoth = async (f: () => tf.Tensor) => [await on('cpu', f), await on('wasm', f)]

/** Largest |a - b| relative to the largest |b|. */
export const maxRelative = (a: Float32Array, b: Float32Array) => {
  let d = 0
  let s = 1e-12
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]))
    s = Math.max(s, Math.abs(b[i]))
  }
  return d / s
}

export interface FilterCase {
  readonly name: string
  /** [batch, height, width, channels] */
  readonly x: [number, number, number, number]
  /** [kh, kw, in, out] */
  readonly w: [number, number, number, number]
  readonly stride: number | [number, number]
  readonly pad: 'same' | 'valid' | number
}

export const FILTER_CASES: readonly FilterCase[] = [
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

export const tensorsOf = (c: FilterCase) => ({
  x: tf.tensor4d(normal(c.x, 1), c.x),
  w: tf.tensor4d(normal(c.w, 2), c.w),
})

/** The filter gradient of sum(y sin y), y = conv2d(x, w), on the current backend. */
export const filterGradient = (c: FilterCase) => () => {
  const { x, w } = tensorsOf(c)
  return tf.grad((filter: tf.Tensor) => {
    const y = tf.conv2d(x, filter as tf.Tensor4D, c.stride, c.pad)
    return tf.sum(tf.mul(y, tf.sin(y)))
  })(w)
}

/** Rows (or columns) of padding before the first, as tfjs pads: 'same' puts the odd one after. */
const padBefore = (pad: FilterCase['pad'], size: number, kernel: number, stride: number) =>
  pad === 'valid'
    ? 0
    : typeof pad === 'number'
      ? pad
      : Math.floor(Math.max((Math.ceil(size / stride) - 1) * stride + kernel - size, 0) / 2)

/**
 * The filter gradient of sum(y sin y) by its definition, summed in doubles:
 * dW[i, j, ci, co] = sum over b, oy, ox of x[b, sy oy + i - top, sx ox + j - left, ci] dy[b, oy, ox, co],
 * with dy = sin y + y cos y from the cpu backend's forward conv. An independent reference that
 * takes milliseconds where the cpu backend's own filter gradient takes tens of seconds.
 */
export const directFilterGradient = async (c: FilterCase) => {
  await use('cpu')
  const [sy, sx] = typeof c.stride === 'number' ? [c.stride, c.stride] : c.stride
  const dyTensor = tf.tidy(() => {
    const { x, w } = tensorsOf(c)
    const y = tf.conv2d(x, w, [sy, sx], c.pad)
    return tf.add(tf.sin(y), tf.mul(y, tf.cos(y)))
  })
  const [, oh, ow] = dyTensor.shape
  const dy = dyTensor.dataSync()
  dyTensor.dispose()
  const x = normal(c.x, 1)
  const [batch, h, w, ci] = c.x
  const [kh, kw, , co] = c.w
  const top = padBefore(c.pad, h, kh, sy)
  const left = padBefore(c.pad, w, kw, sx)
  const sums = new Float64Array(kh * kw * ci * co)
  for (let b = 0; b < batch; b++)
    for (let oy = 0; oy < oh; oy++)
      for (let ox = 0; ox < ow; ox++) {
        const d = ((b * oh + oy) * ow + ox) * co
        for (let i = 0; i < kh; i++) {
          const r = sy * oy + i - top
          if (r < 0 || r >= h) continue
          for (let j = 0; j < kw; j++) {
            const q = sx * ox + j - left
            if (q < 0 || q >= w) continue
            for (let a = 0; a < ci; a++) {
              const xv = x[((b * h + r) * w + q) * ci + a]
              const o = ((i * kw + j) * ci + a) * co
              for (let k = 0; k < co; k++) sums[o + k] += xv * dy[d + k]
            }
          }
        }
      }
  return Float32Array.from(sums)
}
