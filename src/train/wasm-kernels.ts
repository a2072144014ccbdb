/**
 * Kernels the tfjs wasm backend lacks, registered on it so that tfjs autograd (and the
 * hand-written backward of `tfjs-unet.ts`) can train on wasm.
 *
 * Conv2DBackpropFilter, dW[i, j, c, o] = sum_{b, y, x} Xp[b, s y + i, s x + j, c] dY[b, y, x, o]
 * (Xp: X padded like the forward conv, s: the stride), in two formulations:
 * - stride 1 (every conv of the UNet): matrix products. Lay dY on Xp's grid (dY[b, y, x] at
 *   Xp[b, y, x], zeros elsewhere) and flatten both over (b, y, x) into n positions: tap
 *   (i, j) is then the constant shift i * Wp + j along n, and dW[i, j] = X^T [c, n], shifted,
 *   times dY [n, o]; what a shift carries past a row's or an image's end meets zeros of dY.
 *   The products are XNNPACK's (the wasm BatchMatMul without transposes), over chunks of
 *   positions where the operands outgrow the cache.
 * - other strides: a conv of X^T [c, h, w, b] by dY^T [h', w', b, o], dilated by the stride,
 *   giving [c, kh, kw, o]. Right for any shape but slower: XNNPACK runs it as a conv whose
 *   "kernel" is the whole image with only `batch` input channels. Over one backward pass of
 *   the UNet it takes 1.4 times the products' time at 128 px, base 8, and 1.6 times at
 *   256 px, base 16 (bench/filter-grad.ts).
 *
 * MaxPoolGrad: the one wasm ships routes the gradient to the wrong element for part of
 * the windows (measured against the cpu backend: 145 of 8192 entries differ on random
 * 2 x 32 x 32 x 4 input, with no ties). Replaced by a direct loop on the wasm heap that,
 * like the cpu backend, gives each window's gradient to its first maximum.
 *
 * @example
 * registerWasmKernels()
 * await tf.setBackend('wasm')
 * tf.grad((w) => tf.sum(tf.conv2d(x, w, 1, 'same')))(w) // works on wasm now
 */
import {
  backend_util,
  getKernel,
  registerKernel,
  unregisterKernel,
  type KernelFunc,
  type NamedAttrMap,
  type NamedTensorInfoMap,
  type TensorInfo,
} from '@tensorflow/tfjs-core'

interface WasmBackend {
  readonly disposeData: (dataId: object) => unknown
  readonly makeOutput: (shape: number[], dtype: 'float32') => TensorInfo
  readonly typedArrayFromHeap: (t: TensorInfo) => Float32Array
}

const runWasm = (
  name: string,
  inputs: NamedTensorInfoMap,
  backend: unknown,
  attrs: NamedAttrMap,
): TensorInfo => {
  const kernel = getKernel(name, 'wasm')
  if (!kernel) throw new Error(`the wasm backend has no ${name} kernel`)
  return kernel.kernelFunc({ inputs, backend: backend as never, attrs }) as TensorInfo
}

/** Runs `f` with a `keep` that collects temporaries, disposed when `f` returns or throws. */
const withTemporaries = <T>(backend: unknown, f: (keep: (t: TensorInfo) => TensorInfo) => T): T => {
  const kept: TensorInfo[] = []
  try {
    return f((t) => {
      kept.push(t)
      return t
    })
  } finally {
    for (const t of kept) (backend as WasmBackend).disposeData(t.dataId)
  }
}

/**
 * `x` [b, h, w, c] with zero rows and columns around its images, by row copies on the heap
 * (the wasm PadV2 kernel takes about 3 times as long as a Transpose of the same tensor).
 */
const padded = (
  x: TensorInfo,
  [top, bottom, left, right]: readonly [number, number, number, number],
  backend: unknown,
  keep: (t: TensorInfo) => TensorInfo,
): TensorInfo => {
  if (top === 0 && bottom === 0 && left === 0 && right === 0) return x
  const wasm = backend as WasmBackend
  const [b, h, w, c] = x.shape
  const rows = h + top + bottom
  const row = (w + left + right) * c
  const out = keep(wasm.makeOutput([b, rows, w + left + right, c], 'float32'))
  const to = wasm.typedArrayFromHeap(out).fill(0)
  const from = wasm.typedArrayFromHeap(x)
  for (let i = 0; i < b; i++)
    for (let y = 0; y < h; y++)
      to.set(
        from.subarray((i * h + y) * w * c, (i * h + y + 1) * w * c),
        (i * rows + y + top) * row + left * c,
      )
  return out
}

type FilterGrad = (
  x: TensorInfo,
  dy: TensorInfo,
  info: backend_util.Conv2DInfo,
  backend: unknown,
) => TensorInfo

/**
 * Bytes of the two operands of one product at most: [c, n] . [n, o] over more positions than
 * that stops running from cache, so n is cut into chunks and their products summed (16
 * channels at 256 px, 266k positions: 42 ms in chunks of 66k against 62 ms in one product).
 */
const CHUNK_BYTES = 8 * 2 ** 20

/** Columns [begin, begin + k) of the row-major [m, n] `from` into `into` [m, k], 0 past n. */
const copyColumns = (
  into: TensorInfo,
  from: TensorInfo,
  m: number,
  begin: number,
  backend: unknown,
): void => {
  const wasm = backend as WasmBackend
  const to = wasm.typedArrayFromHeap(into)
  const all = wasm.typedArrayFromHeap(from)
  const n = all.length / m
  const k = to.length / m
  const inside = Math.max(0, Math.min(k, n - begin))
  for (let r = 0; r < m; r++) {
    to.set(all.subarray(r * n + begin, r * n + begin + inside), r * k)
    to.fill(0, r * k + inside, (r + 1) * k)
  }
}

const byProduct: FilterGrad = (x, dy, info, backend) => {
  const wasm = backend as WasmBackend
  const heap = (t: TensorInfo) => wasm.typedArrayFromHeap(t)
  const { batchSize, inChannels: c, outChannels: o, filterHeight: kh, filterWidth: kw } = info
  const { top, bottom, left, right } = info.padInfo
  const rows = info.inHeight + top + bottom
  // X^T [c, n] with n a multiple of 1024 puts a column of it in one L1 set (a 4 KiB row
  // stride) and the wasm Transpose slows down 15 times (1x1 convs at 64 px): a zero column
  // more on the grid avoids that.
  const spare = (batchSize * rows * (info.inWidth + left + right)) % 1024 === 0 ? 1 : 0
  const cols = info.inWidth + left + right + spare
  const n = batchSize * rows * cols
  const offsets = Array.from({ length: kh * kw }, (_, t) => Math.floor(t / kw) * cols + (t % kw))
  const chunks = Math.ceil((n * (c + o) * 4) / CHUNK_BYTES)
  const k = Math.ceil(n / chunks)
  const out = wasm.makeOutput([kh, kw, c, o], 'float32')
  heap(out).fill(0)
  withTemporaries(backend, (keep) => {
    const xGrid = padded(x, [top, bottom, left, right + spare], backend, keep)
    const xFlat = keep(runWasm('Reshape', { x: xGrid }, backend, { shape: [n, c] }))
    const xT = keep(runWasm('Transpose', { x: xFlat }, backend, { perm: [1, 0] }))
    const dyGrid = padded(dy, [0, rows - info.outHeight, 0, cols - info.outWidth], backend, keep)
    const dyFlat = keep(runWasm('Reshape', { x: dyGrid }, backend, { shape: [n, o] }))
    const direct = chunks === 1 && offsets.length === 1
    const shifted = direct ? xT : keep(wasm.makeOutput([c, k], 'float32'))
    for (let start = 0; start < n; start += k)
      withTemporaries(backend, (keepHere) => {
        // One product per tap: stacking the taps into one [taps * c, k] operand measured no
        // faster and holds X taps times over. XNNPACK packs the right operand of each new
        // product (~2.5 ns an entry, about half the time of the 8-channel products), so dY
        // goes right and is packed once for all taps: the operator is cached on its id,
        // hence a new tensor for each chunk.
        const dyPart = chunks === 1 ? dyFlat : keepHere(wasm.makeOutput([k, o], 'float32'))
        if (dyPart !== dyFlat) copyColumns(dyPart, dyFlat, 1, start * o, backend)
        for (const [t, shift] of offsets.entries()) {
          if (!direct) copyColumns(shifted, xT, c, start + shift, backend)
          const part = keepHere(
            runWasm('BatchMatMul', { a: shifted, b: dyPart }, backend, {
              transposeA: false,
              transposeB: false,
            }),
          )
          const sum = heap(out).subarray(t * c * o, (t + 1) * c * o)
          const add = heap(part)
          for (let i = 0; i < add.length; i++) sum[i] += add[i]
        }
      })
  })
  return out
}

const bySwappedConv: FilterGrad = (x, dy, info, backend) => {
  const { filterHeight: kh, filterWidth: kw } = info
  const { top, bottom, left, right } = info.padInfo
  return withTemporaries(backend, (keep) => {
    const xT = keep(runWasm('Transpose', { x }, backend, { perm: [3, 1, 2, 0] }))
    const dyT = keep(runWasm('Transpose', { x: dy }, backend, { perm: [1, 2, 0, 3] }))
    // [c, kh', kw', o]: kh' = rows - (h' - 1) s can pass kh where (rows - kh) is no multiple of s.
    const swapped = keep(
      runWasm('Conv2D', { x: xT, filter: dyT }, backend, {
        strides: [1, 1],
        pad: [
          [0, 0],
          [top, bottom],
          [left, right],
          [0, 0],
        ],
        dataFormat: 'NHWC',
        dilations: [info.strideHeight, info.strideWidth],
      } as never),
    )
    const [c, , , o] = swapped.shape
    const taps =
      swapped.shape[1] === kh && swapped.shape[2] === kw
        ? swapped
        : keep(
            runWasm('Slice', { x: swapped }, backend, {
              begin: [0, 0, 0, 0],
              size: [c, kh, kw, o],
            }),
          )
    return runWasm('Transpose', { x: taps }, backend, { perm: [1, 2, 0, 3] })
  })
}

export type FilterGradFormulation = 'product' | 'swapped-conv'

/**
 * The wasm Conv2DBackpropFilter: the product for stride 1, the swapped conv otherwise.
 * `only` forces one formulation (bench/filter-grad.ts compares them on the same shapes).
 */
export const conv2dBackpropFilter =
  (only?: FilterGradFormulation): KernelFunc =>
  ({ inputs, backend, attrs }) => {
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo }
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as {
      strides: number | [number, number]
      pad: 'same' | 'valid' | number | backend_util.ExplicitPadding
      dataFormat: 'NHWC' | 'NCHW'
      dimRoundingMode?: 'floor' | 'round' | 'ceil'
      filterShape: [number, number, number, number]
    }
    if (dataFormat === 'NCHW') throw new Error('wasm Conv2DBackpropFilter supports NHWC only')
    const info = backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
      dimRoundingMode,
    )
    const strideOne = info.strideHeight === 1 && info.strideWidth === 1
    const formulation = only ?? (strideOne ? 'product' : 'swapped-conv')
    if (formulation === 'product' && !strideOne)
      throw new Error('the product formulation of the filter gradient needs stride 1')
    return (formulation === 'product' ? byProduct : bySwappedConv)(x, dy, info, backend)
  }

const filterGrad = conv2dBackpropFilter()

const maxPoolGrad: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, input } = inputs as { dy: TensorInfo; input: TensorInfo }
  const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as {
    filterSize: number | [number, number]
    strides: number | [number, number]
    pad: 'same' | 'valid' | number | backend_util.ExplicitPadding
    dimRoundingMode?: 'floor' | 'round' | 'ceil'
  }
  const info = backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    filterSize,
    strides,
    1,
    pad,
    dimRoundingMode,
  )
  const wasm = backend as unknown as WasmBackend
  const out = wasm.makeOutput([...input.shape], 'float32')
  // Views after the allocation: growing the heap detaches earlier ones.
  const dx = wasm.typedArrayFromHeap(out)
  const x = wasm.typedArrayFromHeap(input)
  const g = wasm.typedArrayFromHeap(dy)
  dx.fill(0)
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth } = info
  const {
    strideHeight,
    strideWidth,
    effectiveFilterHeight,
    effectiveFilterWidth,
    dilationHeight,
    dilationWidth,
  } = info
  const { top, left } = info.padInfo
  if (
    effectiveFilterHeight === 2 &&
    effectiveFilterWidth === 2 &&
    strideHeight === 2 &&
    strideWidth === 2 &&
    top === 0 &&
    left === 0
  ) {
    // The UNet's pools: disjoint 2 x 2 windows inside the image, the four elements of a
    // channel compared in registers (twice as fast as the general loop below).
    const row = inWidth * c
    for (let b = 0; b < batchSize; b++)
      for (let oy = 0; oy < outHeight; oy++)
        for (let ox = 0; ox < outWidth; ox++) {
          const first = ((b * inHeight + 2 * oy) * inWidth + 2 * ox) * c
          const to = ((b * outHeight + oy) * outWidth + ox) * c
          for (let ch = 0; ch < c; ch++) {
            // Window order: (0, 0), (0, 1), (1, 0), (1, 1); the first maximum wins.
            let at = first + ch
            if (x[first + c + ch] > x[at]) at = first + c + ch
            if (x[first + row + ch] > x[at]) at = first + row + ch
            if (x[first + row + c + ch] > x[at]) at = first + row + c + ch
            dx[at] += g[to + ch]
          }
        }
    return out
  }
  for (let b = 0; b < batchSize; b++)
    for (let oy = 0; oy < outHeight; oy++)
      for (let ox = 0; ox < outWidth; ox++)
        for (let ch = 0; ch < c; ch++) {
          let best = -Infinity
          let at = -1
          for (let fy = 0; fy < effectiveFilterHeight; fy += dilationHeight) {
            const iy = oy * strideHeight - top + fy
            if (iy < 0 || iy >= inHeight) continue
            for (let fx = 0; fx < effectiveFilterWidth; fx += dilationWidth) {
              const ix = ox * strideWidth - left + fx
              if (ix < 0 || ix >= inWidth) continue
              const i = ((b * inHeight + iy) * inWidth + ix) * c + ch
              if (x[i] > best) {
                best = x[i]
                at = i
              }
            }
          }
          if (at >= 0) dx[at] += g[((b * outHeight + oy) * outWidth + ox) * c + ch]
        }
  return out
}

/** Puts `kernelFunc` in place of the wasm backend's `name` kernel, if not there already. */
const replaceKernel = (kernelName: string, kernelFunc: KernelFunc): void => {
  const current = getKernel(kernelName, 'wasm')
  if (current?.kernelFunc === kernelFunc) return
  if (current) unregisterKernel(kernelName, 'wasm')
  registerKernel({ kernelName, backendName: 'wasm', kernelFunc })
}

/** Registers the missing and the fixed kernels on the wasm backend (idempotent). */
export const registerWasmKernels = (): void => {
  replaceKernel('Conv2DBackpropFilter', filterGrad)
  replaceKernel('MaxPoolGrad', maxPoolGrad)
}
