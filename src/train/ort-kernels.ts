/**
 * The convolutions of the `onnxruntime` engine: tfjs wasm runs everything else, while its
 * Conv2D, FusedConv2D and Conv2DBackpropFilter kernels run on onnxruntime-node's native CPU
 * kernels (MLAS, AVX2 / AVX-512). wasm SIMD is 128 bits wide and XNNPACK already runs near
 * its peak; MLAS on the same core is 2-4 times faster on the UNet's convs (measured on these
 * machines, one thread: a 16 -> 16 conv at 4 x 256 x 256 in 16 ms, 64 -> 64 at 4 x 64 x 64
 * in 8 ms, 150 GFLOP/s).
 *
 * A tfjs kernel must return its output, so the binding's own `run` is called: it is
 * synchronous (onnxruntime-node's public `run` only defers it with setImmediate). Each kernel
 * is a small ONNX graph over NHWC tensors with symbolic batch, height and width, one session
 * per geometry (kernel size, channels, pads, strides, dilations, bias), one thread each (a
 * training uses more cores through worker threads, as on wasm):
 * - conv: Transpose to NCHW, Conv (with the bias), Transpose back; onnxruntime turns the
 *   transposes into its own blocked-layout reorders.
 * - filter gradient at stride 1: one Gemm per tap over the rows of the padded grid
 *   (`filterGradModel`), stacked into tfjs's filter layout.
 * Inputs are read in place from the wasm heap; outputs are copied into it. Anything else (an
 * activation fused into the conv, NCHW, a strided filter gradient, a rounding mode) goes to
 * the wasm kernel it replaced.
 *
 * @example
 * registerOrtConvs()    // Right(undefined), or Left('onnxruntime-node is not installed ...')
 * await tf.setBackend('wasm')
 * tf.conv2d(x, w, 1, 'same') // now on MLAS
 * restoreWasmConvs()    // XNNPACK again
 */
import {
  backend_util,
  getKernel,
  registerKernel,
  unregisterKernel,
  type KernelConfig,
  type KernelFunc,
  type TensorInfo,
} from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { int, ints, tensorInfo } from '../model/onnx-proto.ts'
import {
  graph,
  int64s,
  loadNative,
  node,
  openSession,
  type NativeOrt,
  type NativeSession,
} from './ort-native.ts'
import type { WasmBackend } from './wasm-kernels.ts'
import { elementCount } from '../util/shape.ts'

/** An NHWC image batch with symbolic dims. */
const images = (name: string, channels: number) => tensorInfo(name, ['n', 'h', 'w', channels])

interface ConvGeometry {
  readonly kh: number
  readonly kw: number
  readonly ci: number
  readonly co: number
  /** top, left, bottom, right */
  readonly pads: readonly [number, number, number, number]
  readonly strides: readonly [number, number]
  readonly dilations: readonly [number, number]
  readonly bias: boolean
}

const convModel = (g: ConvGeometry): Uint8Array =>
  graph(
    [
      node('Transpose', ['x'], 'x_nchw', [ints('perm', [0, 3, 1, 2])]),
      node('Transpose', ['filter'], 'filter_oihw', [ints('perm', [3, 2, 0, 1])]),
      node('Conv', ['x_nchw', 'filter_oihw', ...(g.bias ? ['bias'] : [])], 'y_nchw', [
        ints('kernel_shape', [g.kh, g.kw]),
        ints('pads', [g.pads[0], g.pads[1], g.pads[2], g.pads[3]]),
        ints('strides', g.strides),
        ints('dilations', g.dilations),
      ]),
      node('Transpose', ['y_nchw'], 'y', [ints('perm', [0, 2, 3, 1])]),
    ],
    [],
    [
      images('x', g.ci),
      tensorInfo('filter', [g.kh, g.kw, g.ci, g.co]),
      ...(g.bias ? [tensorInfo('bias', [g.co])] : []),
    ],
    [images('y', g.co)],
  )

/**
 * dW = im2col(X)^T dY at stride 1, without im2col. On the rows of the padded grid, flattened
 * to [n * Hp * Wp, ci], the tap (i, j) of an output position p is row p + i * Wp + j; so with
 * dY zero-padded to the same grid (kh - 1 rows below, kw - 1 columns right), each tap's
 * [ci, co] block is one product of a contiguous row range of X with dY's first L' rows,
 * L' = n * Hp * Wp - ((kh - 1) * Wp + kw - 1). A row past an image's own plane only meets
 * dY's zero padding. X is transposed once to [ci, rows] so that every range is a plain
 * column slice: 3 times faster than the 9 strided slices, Concat and one Gemm of an im2col
 * matrix at 128 px (memory-bound copies), the same below 16 px.
 */
const filterGradModel = (g: Omit<ConvGeometry, 'strides' | 'dilations' | 'bias'>): Uint8Array => {
  const [top, left, bottom, right] = g.pads
  const taps = Array.from({ length: g.kh * g.kw }, (_, t) => [Math.floor(t / g.kw), t % g.kw])
  const tap = ([i, j]: number[]) => `${i}_${j}`
  return graph(
    [
      node('Pad', ['x', 'pads'], 'x_padded'),
      node('Shape', ['x_padded'], 'padded_shape'),
      node('Slice', ['padded_shape', 'two', 'three'], 'row_length'),
      node('Reshape', ['x_padded', 'rows_by_ci'], 'x_rows'),
      node('Transpose', ['x_rows'], 'x_columns', [ints('perm', [1, 0])]),
      node('Shape', ['x_rows'], 'rows_shape'),
      node('Slice', ['rows_shape', 'zero', 'one'], 'rows'),
      node('Mul', ['row_length', 'reach_rows'], 'reach_down'),
      node('Add', ['reach_down', 'reach_columns'], 'reach'),
      node('Sub', ['rows', 'reach'], 'products'),
      node('Pad', ['dy', 'dy_pads'], 'dy_padded'),
      node('Reshape', ['dy_padded', 'rows_by_co'], 'dy_rows'),
      node('Slice', ['dy_rows', 'zero', 'products', 'zero'], 'dy_used'),
      ...taps.flatMap((t) => [
        node('Mul', ['row_length', `tap_row_${t[0]}`], `down_${tap(t)}`),
        node('Add', [`down_${tap(t)}`, `tap_column_${t[1]}`], `start_${tap(t)}`),
        node('Add', [`start_${tap(t)}`, 'products'], `end_${tap(t)}`),
        node('Slice', ['x_columns', `start_${tap(t)}`, `end_${tap(t)}`, 'one'], `x_${tap(t)}`),
        node('Gemm', [`x_${tap(t)}`, 'dy_used'], `dw_${tap(t)}`),
      ]),
      node(
        'Concat',
        taps.map((t) => `dw_${tap(t)}`),
        'dw_matrix',
        [int('axis', 0)],
      ),
      node('Reshape', ['dw_matrix', 'filter_shape'], 'y'),
    ],
    [
      int64s('pads', [0, top, left, 0, 0, bottom, right, 0]),
      int64s('dy_pads', [0, 0, 0, 0, 0, g.kh - 1, g.kw - 1, 0]),
      int64s('zero', [0]),
      int64s('one', [1]),
      int64s('two', [2]),
      int64s('three', [3]),
      int64s('reach_rows', [g.kh - 1]),
      int64s('reach_columns', [g.kw - 1]),
      ...Array.from({ length: g.kh }, (_, i) => int64s(`tap_row_${i}`, [i])),
      ...Array.from({ length: g.kw }, (_, j) => int64s(`tap_column_${j}`, [j])),
      int64s('rows_by_ci', [-1, g.ci]),
      int64s('rows_by_co', [-1, g.co]),
      int64s('filter_shape', [g.kh, g.kw, g.ci, g.co]),
    ],
    [images('x', g.ci), images('dy', g.co)],
    [tensorInfo('y', [g.kh, g.kw, g.ci, g.co])],
  )
}

const sessions = new Map<string, NativeSession>()

const sessionFor = (ort: NativeOrt, key: string, build: () => Uint8Array): NativeSession => {
  const known = sessions.get(key)
  if (known) return known
  // One thread each: a training uses more cores through worker threads, as on wasm.
  const session = openSession(ort, build(), 1)
  sessions.set(key, session)
  return session
}

/** Runs a kernel session on wasm tensors (read in place) into a new wasm tensor. */
const runInto = (
  ort: NativeOrt,
  session: NativeSession,
  backend: WasmBackend,
  feeds: Record<string, TensorInfo>,
  shape: number[],
): TensorInfo => {
  const inputs = Object.fromEntries(
    Object.entries(feeds).map(([name, t]) => [
      name,
      ort.tensor(backend.typedArrayFromHeap(t), t.shape),
    ]),
  )
  const result = session.run(inputs, { y: null }, {}).y
  if (result.data.length !== elementCount(shape))
    throw new Error(
      `onnxruntime gave [${result.dims.join(', ')}] where tfjs expects [${shape.join(', ')}]`,
    )
  // After the run: allocating may grow the heap, which detaches the views read above.
  const out = backend.makeOutput(shape, 'float32')
  backend.typedArrayFromHeap(out).set(result.data)
  return out
}

interface ConvAttrs {
  readonly strides: number | [number, number]
  readonly pad: 'same' | 'valid' | number | backend_util.ExplicitPadding
  readonly dataFormat: 'NHWC' | 'NCHW'
  readonly dilations: number | [number, number]
  readonly dimRoundingMode?: 'floor' | 'round' | 'ceil'
  readonly activation?: string
}

const convKernel =
  (ort: NativeOrt, fallback: KernelFunc): KernelFunc =>
  (args) => {
    const { x, filter, bias, preluActivationWeights } = args.inputs as Record<
      string,
      TensorInfo | undefined
    >
    const a = args.attrs as unknown as ConvAttrs
    const [kh, kw, ci, co] = (filter as TensorInfo).shape
    if (
      a.dataFormat === 'NCHW' ||
      a.dimRoundingMode !== undefined ||
      (a.activation ?? 'linear') !== 'linear' ||
      preluActivationWeights !== undefined ||
      (bias !== undefined && (bias.shape.length !== 1 || bias.shape[0] !== co))
    )
      return fallback(args)
    const info = backend_util.computeConv2DInfo(
      (x as TensorInfo).shape as [number, number, number, number],
      [kh, kw, ci, co],
      a.strides,
      a.dilations,
      a.pad,
    )
    const { top, left, bottom, right } = info.padInfo
    const g: ConvGeometry = {
      kh,
      kw,
      ci,
      co,
      pads: [top, left, bottom, right],
      strides: [info.strideHeight, info.strideWidth],
      dilations: [info.dilationHeight, info.dilationWidth],
      bias: bias !== undefined,
    }
    const session = sessionFor(ort, `conv ${JSON.stringify(g)}`, () => convModel(g))
    return runInto(
      ort,
      session,
      args.backend as WasmBackend,
      { x: x as TensorInfo, filter: filter as TensorInfo, ...(bias && { bias }) },
      [info.batchSize, info.outHeight, info.outWidth, co],
    )
  }

const filterGradKernel =
  (ort: NativeOrt, fallback: KernelFunc): KernelFunc =>
  (args) => {
    const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo }
    const a = args.attrs as unknown as ConvAttrs & { filterShape: [number, number, number, number] }
    if (a.dataFormat === 'NCHW' || a.dimRoundingMode !== undefined) return fallback(args)
    const info = backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      a.filterShape,
      a.strides,
      1,
      a.pad,
    )
    if (info.strideHeight !== 1 || info.strideWidth !== 1) return fallback(args)
    const [kh, kw, ci, co] = a.filterShape
    const { top, left, bottom, right } = info.padInfo
    const g = { kh, kw, ci, co, pads: [top, left, bottom, right] as const }
    const session = sessionFor(ort, `filter-grad ${JSON.stringify(g)}`, () => filterGradModel(g))
    return runInto(ort, session, args.backend as WasmBackend, { x, dy }, [kh, kw, ci, co])
  }

const REPLACED = ['Conv2D', 'FusedConv2D', 'Conv2DBackpropFilter'] as const
/** The wasm backend's own kernels, kept while ours are registered. */
const wasmKernels = new Map<string, KernelConfig>()

const replace = (config: KernelConfig): void => {
  unregisterKernel(config.kernelName, 'wasm')
  registerKernel(config)
}

/**
 * Puts the native convs in place of the wasm backend's (idempotent); Left when
 * onnxruntime-node cannot be loaded, with nothing changed. Call after the wasm backend's
 * module is imported (its kernels registered).
 */
export const registerOrtConvs = (): E.Either<string, void> => {
  const loaded = loadNative()
  if (E.isLeft(loaded)) return loaded
  if (wasmKernels.size > 0) return E.right(undefined)
  const ort = loaded.right
  for (const name of REPLACED) {
    const own = getKernel(name, 'wasm')
    if (!own) return E.left(`the wasm backend has no ${name} kernel to replace`)
    wasmKernels.set(name, own)
  }
  const own = (name: string) => (wasmKernels.get(name) as KernelConfig).kernelFunc
  const ours: Record<(typeof REPLACED)[number], KernelFunc> = {
    Conv2D: convKernel(ort, own('Conv2D')),
    FusedConv2D: convKernel(ort, own('FusedConv2D')),
    Conv2DBackpropFilter: filterGradKernel(ort, own('Conv2DBackpropFilter')),
  }
  for (const name of REPLACED)
    // The wasm kernel's setup still runs when the backend starts: the fallback needs it.
    replace({ ...(wasmKernels.get(name) as KernelConfig), kernelFunc: ours[name] })
  return E.right(undefined)
}

/** Puts the wasm backend's own kernels back (nothing to do when ours are not registered). */
export const restoreWasmConvs = (): void => {
  for (const config of wasmKernels.values()) replace(config)
  wasmKernels.clear()
}

/** How many conv geometries have a native session so far (what the tests watch). */
export const nativeConvSessions = (): number => sessions.size
