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
 *   positions where the operands outgrow the cache, each shifted X^T a view of the heap
 *   (no copy per tap). They run near the wasm matrix product's peak (45 GFLOP/s on one
 *   core here); the rest is XNNPACK packing dY (~2 ns an entry) and laying out the operands.
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

/** The parts of tfjs's wasm backend that kernels written here use. */
export interface WasmBackend {
  readonly disposeData: (dataId: object) => unknown
  readonly makeOutput: (shape: number[], dtype: 'float32', memoryOffset?: number) => TensorInfo
  readonly typedArrayFromHeap: (t: TensorInfo) => Float32Array
  readonly dataIdMap: { readonly get: (dataId: object) => { memoryOffset: number } }
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

/**
 * Runs `f` with a `keep` that collects temporaries and a `view` that makes a tensor of
 * `shape` over the memory of `of` from float `at` on (an operand without a copy); all are
 * disposed when `f` returns or throws, views without freeing the memory they show.
 */
const withTemporaries = <T>(
  backend: unknown,
  f: (
    keep: (t: TensorInfo) => TensorInfo,
    view: (of: TensorInfo, at: number, shape: number[]) => TensorInfo,
  ) => T,
): T => {
  const wasm = backend as WasmBackend
  const kept: TensorInfo[] = []
  const views: TensorInfo[] = []
  try {
    return f(
      (t) => {
        kept.push(t)
        return t
      },
      (of, at, shape) => {
        const v = wasm.makeOutput(shape, 'float32', wasm.typedArrayFromHeap(of).byteOffset + 4 * at)
        views.push(v)
        return v
      },
    )
  } finally {
    // disposeData frees the offset a tensor holds; free(0) does nothing.
    for (const v of views) {
      wasm.dataIdMap.get(v.dataId).memoryOffset = 0
      wasm.disposeData(v.dataId)
    }
    for (const t of kept) wasm.disposeData(t.dataId)
  }
}

/** Where the images of an NHWC tensor lie on a grid of positions: rows and columns per image. */
interface Grid {
  readonly rows: number
  readonly cols: number
  /** The position of pixel (0, 0) in its image's rows and columns. */
  readonly top: number
  readonly left: number
}

/**
 * Positions [from, from + length) of `x` [b, h, w, c] laid on `grid`, c floats a position,
 * into the heap `all` from float `to` on, by row copies (the wasm PadV2 kernel takes about 3
 * times as long as a Transpose of the same tensor). Positions off the images are not written.
 */
const lay = (
  all: Float32Array,
  x: TensorInfo,
  xAt: number,
  grid: Grid,
  [from, length]: readonly [number, number],
  to: number,
): void => {
  const [b, h, w, c] = x.shape
  for (let i = 0; i < b; i++)
    for (let y = 0; y < h; y++) {
      const first = (i * grid.rows + y + grid.top) * grid.cols + grid.left
      const begin = Math.max(first, from)
      const end = Math.min(first + w, from + length)
      const row = xAt + (i * h + y) * w * c
      if (begin < end)
        all.copyWithin(to + (begin - from) * c, row + (begin - first) * c, row + (end - first) * c)
    }
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

const byProduct: FilterGrad = (x, dy, info, backend) => {
  const wasm = backend as WasmBackend
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
  const reach = offsets[offsets.length - 1]
  const k = Math.ceil(n / Math.ceil((n * (c + o) * 4) / CHUNK_BYTES))
  const chunks = Math.ceil(n / k)
  // A chunk's rows of X^T hold its k positions and the `reach` after them, and its dY the k
  // positions and `reach` zeros: every tap is then a view of the rows at its shift with the
  // same row stride, no copy; what a view reads past a row's end comes from the next row and
  // meets those zeros of dY. The zeros after the last row keep the last view in our memory.
  let span = k + reach
  if (span % 1024 === 0) span += 1
  const out = wasm.makeOutput([kh, kw, c, o], 'float32')
  withTemporaries(backend, (keep) => {
    const xGrid = keep(wasm.makeOutput([n, c], 'float32'))
    const heap = (t: TensorInfo) => wasm.typedArrayFromHeap(t)
    const at = (t: TensorInfo) => heap(t).byteOffset / 4
    const all = () => new Float32Array(heap(out).buffer)
    heap(xGrid).fill(0)
    lay(all(), x, at(x), { rows, cols, top, left }, [0, n], at(xGrid))
    const xT = keep(runWasm('Transpose', { x: xGrid }, backend, { perm: [1, 0] }))
    const xRows = keep(wasm.makeOutput([chunks * c * span + reach], 'float32'))
    const dyRows = keep(wasm.makeOutput([chunks * span * o], 'float32'))
    // Views after the allocations: growing the heap detaches earlier ones.
    const heapNow = all()
    heap(out).fill(0)
    heap(dyRows).fill(0)
    heapNow.fill(0, at(xRows) + chunks * c * span, at(xRows) + chunks * c * span + reach)
    const dyGrid = { rows, cols, top: 0, left: 0 }
    for (let part = 0; part < chunks; part++) {
      const start = part * k
      const end = Math.min(start + span, n)
      for (let r = 0; r < c; r++) {
        const row = at(xRows) + (part * c + r) * span
        heapNow.copyWithin(row, at(xT) + r * n + start, at(xT) + r * n + end)
        heapNow.fill(0, row + end - start, row + span)
      }
      lay(
        heapNow,
        dy,
        at(dy),
        dyGrid,
        [start, Math.min(k, n - start)],
        at(dyRows) + part * span * o,
      )
    }
    for (let part = 0; part < chunks; part++)
      withTemporaries(backend, (keepHere, viewHere) => {
        // dY goes right: XNNPACK packs the right operand once per new tensor id (about 2 ns
        // an entry, a third of the time at 8 channels) and the taps share it.
        const dyPart = viewHere(dyRows, part * span * o, [span, o])
        for (const [t, shift] of offsets.entries()) {
          const xPart = viewHere(xRows, part * c * span + shift, [c, span])
          const product = keepHere(
            runWasm('BatchMatMul', { a: xPart, b: dyPart }, backend, {
              transposeA: false,
              transposeB: false,
            }),
          )
          const sum = heap(out).subarray(t * c * o, (t + 1) * c * o)
          const add = heap(product)
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
