/**
 * A plain-JS inference forward pass of a UNet op program, written as naively as possible
 * (nested loops, float64, batch norm with its moving statistics, never folded) so that it
 * can serve as an independent reference for the ONNX export and the tfjs builder.
 *
 * Tensors are NCHW. Conv: zero padding (k - 1) / 2, tfjs kernel layout [kh, kw, in, out].
 * Upsample: bilinear x2 with aligned corners, source = destination * (n - 1) / (2n - 1).
 *
 * @example
 * const { logits, probabilities } = referenceForward(spec, weights, image, [1, 1, 32, 32])
 */
import type { UNetSpec, UNetWeights } from '../../src/model/unet.ts'

interface Tensor {
  readonly data: Float64Array
  readonly n: number
  readonly c: number
  readonly h: number
  readonly w: number
}

const zeros = (n: number, c: number, h: number, w: number): Tensor => ({
  data: new Float64Array(n * c * h * w),
  n,
  c,
  h,
  w,
})

const at = (t: Tensor, b: number, c: number, y: number, x: number) =>
  ((b * t.c + c) * t.h + y) * t.w + x

const conv = (
  t: Tensor,
  kernel: Float32Array,
  bias: Float32Array,
  k: number,
  out: number,
): Tensor => {
  const r = zeros(t.n, out, t.h, t.w)
  const pad = (k - 1) / 2
  for (let b = 0; b < t.n; b++)
    for (let o = 0; o < out; o++)
      for (let y = 0; y < t.h; y++)
        for (let x = 0; x < t.w; x++) {
          let sum = bias[o]
          for (let dy = 0; dy < k; dy++)
            for (let dx = 0; dx < k; dx++) {
              const sy = y + dy - pad
              const sx = x + dx - pad
              if (sy < 0 || sy >= t.h || sx < 0 || sx >= t.w) continue
              for (let i = 0; i < t.c; i++)
                sum += t.data[at(t, b, i, sy, sx)] * kernel[((dy * k + dx) * t.c + i) * out + o]
            }
          r.data[at(r, b, o, y, x)] = sum
        }
  return r
}

const map = (t: Tensor, f: (v: number, channel: number) => number): Tensor => {
  const r = zeros(t.n, t.c, t.h, t.w)
  for (let i = 0; i < t.data.length; i++)
    r.data[i] = f(t.data[i], Math.floor(i / (t.h * t.w)) % t.c)
  return r
}

const maxPool = (t: Tensor): Tensor => {
  const r = zeros(t.n, t.c, t.h / 2, t.w / 2)
  for (let b = 0; b < t.n; b++)
    for (let c = 0; c < t.c; c++)
      for (let y = 0; y < r.h; y++)
        for (let x = 0; x < r.w; x++)
          r.data[at(r, b, c, y, x)] = Math.max(
            t.data[at(t, b, c, 2 * y, 2 * x)],
            t.data[at(t, b, c, 2 * y, 2 * x + 1)],
            t.data[at(t, b, c, 2 * y + 1, 2 * x)],
            t.data[at(t, b, c, 2 * y + 1, 2 * x + 1)],
          )
  return r
}

const upsample = (t: Tensor): Tensor => {
  const r = zeros(t.n, t.c, 2 * t.h, 2 * t.w)
  const source = (d: number, n: number) => (n === 1 ? 0 : (d * (n - 1)) / (2 * n - 1))
  for (let b = 0; b < t.n; b++)
    for (let c = 0; c < t.c; c++)
      for (let y = 0; y < r.h; y++)
        for (let x = 0; x < r.w; x++) {
          const sy = source(y, t.h)
          const sx = source(x, t.w)
          const y0 = Math.floor(sy)
          const x0 = Math.floor(sx)
          const y1 = Math.min(y0 + 1, t.h - 1)
          const x1 = Math.min(x0 + 1, t.w - 1)
          const fy = sy - y0
          const fx = sx - x0
          const v = (yy: number, xx: number) => t.data[at(t, b, c, yy, xx)]
          r.data[at(r, b, c, y, x)] =
            (1 - fy) * ((1 - fx) * v(y0, x0) + fx * v(y0, x1)) +
            fy * ((1 - fx) * v(y1, x0) + fx * v(y1, x1))
        }
  return r
}

const concat = (a: Tensor, b: Tensor): Tensor => {
  const r = zeros(a.n, a.c + b.c, a.h, a.w)
  for (let n = 0; n < a.n; n++)
    for (let c = 0; c < r.c; c++)
      for (let y = 0; y < a.h; y++)
        for (let x = 0; x < a.w; x++)
          r.data[at(r, n, c, y, x)] =
            c < a.c ? a.data[at(a, n, c, y, x)] : b.data[at(b, n, c - a.c, y, x)]
  return r
}

const softmax = (t: Tensor): Tensor => {
  const r = zeros(t.n, t.c, t.h, t.w)
  for (let b = 0; b < t.n; b++)
    for (let y = 0; y < t.h; y++)
      for (let x = 0; x < t.w; x++) {
        let max = -Infinity
        for (let c = 0; c < t.c; c++) max = Math.max(max, t.data[at(t, b, c, y, x)])
        let sum = 0
        for (let c = 0; c < t.c; c++) sum += Math.exp(t.data[at(t, b, c, y, x)] - max)
        for (let c = 0; c < t.c; c++)
          r.data[at(r, b, c, y, x)] = Math.exp(t.data[at(t, b, c, y, x)] - max) / sum
      }
  return r
}

export const referenceForward = (
  spec: UNetSpec,
  weights: UNetWeights,
  image: Float32Array,
  [n, c, h, w]: readonly [number, number, number, number],
): { logits: Float32Array; probabilities: Float32Array } => {
  const { leakySlope, bnEpsilon } = spec.options
  const slots = new Map<string, Tensor>()
  let t: Tensor = { data: Float64Array.from(image), n, c, h, w }
  for (const op of spec.ops) {
    switch (op.op) {
      case 'conv':
        t = conv(
          t,
          weights[`${op.name}.kernel`],
          weights[`${op.name}.bias`],
          op.kernel,
          op.outChannels,
        )
        break
      case 'batchNorm': {
        const g = weights[`${op.name}.gamma`]
        const b = weights[`${op.name}.beta`]
        const m = weights[`${op.name}.movingMean`]
        const v = weights[`${op.name}.movingVariance`]
        t = map(t, (x, ch) => ((x - m[ch]) / Math.sqrt(v[ch] + bnEpsilon)) * g[ch] + b[ch])
        break
      }
      case 'leakyRelu':
        t = map(t, (x) => (x < 0 ? leakySlope * x : x))
        break
      case 'dropout':
        break
      case 'maxPool':
        t = maxPool(t)
        break
      case 'upsample':
        t = upsample(t)
        break
      case 'save':
        slots.set(op.slot, t)
        break
      case 'concat':
        t = concat(slots.get(op.slot)!, t)
        break
    }
  }
  return { logits: Float32Array.from(t.data), probabilities: Float32Array.from(softmax(t).data) }
}
