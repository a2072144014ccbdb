/**
 * Faster webgpu kernels for the two reductions a UNet training step is made of, registered
 * over tfjs-backend-webgpu's own (which stay in use for every other shape).
 *
 * tfjs's webgpu kernels give each output element one GPU thread. That is fine for a conv,
 * not for a reduction with few outputs and many terms:
 * - Conv2DBackpropFilter: one thread per filter tap, summing over batch x height x width
 *   (262k terms at 256 px, batch 4): a 3 x 3 x 16 x 16 gradient is 2,304 threads on a GPU
 *   that runs hundreds of thousands. Here, for stride 1: each tap (i, j) is a matrix
 *   product X(i, j)^T dY, X(i, j) the padded input shifted by the tap, [n, c], and dY
 *   [n, o], n = batch x height x width; tfjs runs such a long, thin product split along n.
 * - AvgPool over a whole image (the channel means of batch norm, `tfjs-unet.ts`): one
 *   thread per channel summing every pixel. Here: ones [1, n] times X [n, c].
 *
 * @example
 * registerWebGpuKernels() // after tfjs-backend-webgpu is imported
 */
import {
  getKernel,
  registerKernel,
  unregisterKernel,
  type KernelConfig,
  type KernelFunc,
  type NamedAttrMap,
  type NamedTensorInfoMap,
  type TensorInfo,
} from '@tensorflow/tfjs-core'

interface Backend {
  readonly disposeData: (dataId: object) => unknown
}

type Run = (name: string, inputs: NamedTensorInfoMap | TensorInfo[], attrs?: object) => TensorInfo

/**
 * Runs `f` with `run`, which calls a webgpu kernel and keeps its output as a temporary;
 * every temporary but the returned one is freed when `f` returns or throws.
 */
const withKernels = (
  backend: unknown,
  kernels: Readonly<Record<string, KernelFunc>>,
  f: (run: Run) => TensorInfo,
): TensorInfo => {
  const kept: TensorInfo[] = []
  let out: TensorInfo | undefined
  try {
    out = f((name, inputs, attrs = {}) => {
      const kernel = kernels[name] ?? getKernel(name, 'webgpu')?.kernelFunc
      if (!kernel) throw new Error(`the webgpu backend has no ${name} kernel`)
      const t = kernel({
        inputs: inputs as NamedTensorInfoMap,
        backend: backend as never,
        attrs: attrs as NamedAttrMap,
      }) as TensorInfo
      kept.push(t)
      return t
    })
    return out
  } finally {
    for (const t of kept) if (t !== out) (backend as Backend).disposeData(t.dataId)
  }
}

interface FilterGradAttrs {
  readonly strides: number | readonly number[]
  readonly pad: unknown
  readonly dataFormat: string
  readonly dimRoundingMode?: unknown
  readonly filterShape: readonly [number, number, number, number]
}

const input = (inputs: NamedTensorInfoMap, name: string): TensorInfo => {
  const t = inputs[name]
  if (!t) throw new Error(`missing input '${name}'`)
  return t
}

const pair = (v: number | readonly number[]) => (typeof v === 'number' ? [v, v] : v)

/** dW [kh, kw, c, o] of a stride-1 'same' NHWC conv, one split matrix product per tap. */
const filterGradByTaps = (x: TensorInfo, dy: TensorInfo, a: FilterGradAttrs, run: Run) => {
  const [kh, kw, c, o] = a.filterShape
  const [b, h, w] = x.shape
  const [top, left] = [(kh - 1) >> 1, (kw - 1) >> 1]
  const xp = run(
    'PadV2',
    { x },
    {
      paddings: [
        [0, 0],
        [top, kh - 1 - top],
        [left, kw - 1 - left],
        [0, 0],
      ],
      constantValue: 0,
    },
  )
  const n = b * h * w
  const dy2 = run('Reshape', { x: dy }, { shape: [1, n, o] })
  const taps: TensorInfo[] = []
  for (let i = 0; i < kh; i++)
    for (let j = 0; j < kw; j++) {
      const shifted = run('Slice', { x: xp }, { begin: [0, i, j, 0], size: [b, h, w, c] })
      const x2 = run('Reshape', { x: shifted }, { shape: [1, n, c] })
      taps.push(run('BatchMatMul', { a: x2, b: dy2 }, { transposeA: true, transposeB: false }))
    }
  const all = taps.length === 1 ? taps[0] : run('Concat', taps, { axis: 0 })
  return run('Reshape', { x: all }, { shape: [kh, kw, c, o] })
}

interface PoolAttrs {
  readonly filterSize: number | readonly number[]
  readonly strides: number | readonly number[]
  readonly pad: unknown
  readonly dimRoundingMode?: unknown
}

/** The mean over every pixel of `x` [b, h, w, c] per image and channel: [b, 1, 1, c]. */
const globalMean = (x: TensorInfo, run: Run) => {
  const [b, h, w, c] = x.shape
  const x3 = run('Reshape', { x }, { shape: [b, h * w, c] })
  const ones = run('Fill', [], { shape: [b, 1, h * w], value: 1 / (h * w), dtype: 'float32' })
  const mean = run('BatchMatMul', { a: ones, b: x3 }, { transposeA: false, transposeB: false })
  return run('Reshape', { x: mean }, { shape: [b, 1, 1, c] })
}

const isStride1Same = (a: FilterGradAttrs): boolean => {
  const [kh, kw] = a.filterShape
  return (
    pair(a.strides).every((s) => s === 1) &&
    a.pad === 'same' &&
    a.dataFormat === 'NHWC' &&
    kh % 2 === 1 &&
    kw % 2 === 1
  )
}

const isGlobal = (x: TensorInfo, a: PoolAttrs): boolean => {
  const [fh, fw] = pair(a.filterSize)
  return a.pad === 'valid' && fh === x.shape[1] && fw === x.shape[2]
}

/** Registers `name` on webgpu as `faster` where `applies`, else as the kernel it replaces. */
const override = <A>(
  name: string,
  applies: (inputs: NamedTensorInfoMap, attrs: A) => boolean,
  faster: (inputs: NamedTensorInfoMap, attrs: A, run: Run) => TensorInfo,
): void => {
  const own = getKernel(name, 'webgpu') as KernelConfig | undefined
  if (!own || (own as { macoOverride?: true }).macoOverride) return
  const kernels = Object.fromEntries(
    ['PadV2', 'Reshape', 'Slice', 'BatchMatMul', 'Concat', 'Fill'].map((k) => [
      k,
      getKernel(k, 'webgpu')?.kernelFunc as KernelFunc,
    ]),
  )
  const kernelFunc: KernelFunc = (args) => {
    const attrs = args.attrs as unknown as A
    return applies(args.inputs, attrs)
      ? withKernels(args.backend, kernels, (run) => faster(args.inputs, attrs, run))
      : own.kernelFunc(args)
  }
  unregisterKernel(name, 'webgpu')
  registerKernel({
    kernelName: name,
    backendName: 'webgpu',
    kernelFunc,
    macoOverride: true,
  } as KernelConfig)
}

/** Puts the two kernels in place of tfjs's for the shapes they handle; idempotent. */
export const registerWebGpuKernels = (): void => {
  override<FilterGradAttrs>(
    'Conv2DBackpropFilter',
    (_, a) => isStride1Same(a),
    (inputs, a, run) => filterGradByTaps(input(inputs, 'x'), input(inputs, 'dy'), a, run),
  )
  override<PoolAttrs>(
    'AvgPool',
    (inputs, a) => isGlobal(input(inputs, 'x'), a),
    (inputs, _, run) => globalMean(input(inputs, 'x'), run),
  )
}
