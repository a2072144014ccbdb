/**
 * Kernels the tfjs wasm backend lacks, registered on it so that tfjs autograd (and the
 * hand-written backward of `tfjs-unet.ts`) can train on wasm.
 *
 * Conv2DBackpropFilter: the filter gradient of a stride-1 conv is itself a conv of the
 * input with the output gradient once batch and channel axes are swapped:
 * dW[i, j, c, o] = sum_{b, y, x} X[b, y + i - top, x + j - left, c] dY[b, y, x, o], i.e. a
 * conv of X^T [c, h, w, b] by dY^T [h', w', b, o] padded like the forward conv, giving
 * [c, kh, kw, o]. It runs the backend's own Transpose and Conv2D (XNNPACK) kernels.
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

const conv2dBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
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
  if (info.strideHeight !== 1 || info.strideWidth !== 1)
    throw new Error('wasm Conv2DBackpropFilter supports stride 1 only')
  const { top, bottom, left, right } = info.padInfo
  const xT = runWasm('Transpose', { x }, backend, { perm: [3, 1, 2, 0] })
  const dyT = runWasm('Transpose', { x: dy }, backend, { perm: [1, 2, 0, 3] })
  const swapped = runWasm('Conv2D', { x: xT, filter: dyT }, backend, {
    strides: [1, 1],
    pad: [
      [0, 0],
      [top, bottom],
      [left, right],
      [0, 0],
    ],
    dataFormat: 'NHWC',
    dilations: [1, 1],
  } as unknown as NamedAttrMap)
  const out = runWasm('Transpose', { x: swapped }, backend, { perm: [1, 2, 0, 3] })
  for (const t of [xT, dyT, swapped]) (backend as unknown as WasmBackend).disposeData(t.dataId)
  return out
}

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

/** Registers the missing and the fixed kernels on the wasm backend (idempotent). */
export const registerWasmKernels = (): void => {
  if (!getKernel('Conv2DBackpropFilter', 'wasm'))
    registerKernel({
      kernelName: 'Conv2DBackpropFilter',
      backendName: 'wasm',
      kernelFunc: conv2dBackpropFilter,
    })
  if (getKernel('MaxPoolGrad', 'wasm')?.kernelFunc !== maxPoolGrad) {
    unregisterKernel('MaxPoolGrad', 'wasm')
    registerKernel({ kernelName: 'MaxPoolGrad', backendName: 'wasm', kernelFunc: maxPoolGrad })
  }
}
