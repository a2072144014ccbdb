import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { initialWeights, toParams } from '../../src/model/tfjs-unet.ts'
import { parameterShapes, unetSpec } from '../../src/model/unet.ts'
import { loadEngine } from '../../src/train/engine.ts'
import { nativeConvSessions } from '../../src/train/ort-kernels.ts'
import { workerPasses } from '../../src/train/parallel.ts'
import {
  disposeState,
  initialState,
  inProcess,
  trainStep,
  type Passes,
} from '../../src/train/step.ts'
import { installed } from '../../src/util/installed.ts'
import { seeded } from '../../src/util/rng.ts'
import {
  FILTER_CASES,
  filterGradient,
  maxRelative,
  normal,
  on,
  use,
} from '../helpers/conv-cases.ts'

if (!installed('onnxruntime-node')) {
  t.pass('skipped: onnxruntime-node is not installed here, so there is no onnxruntime engine')
  process.exit(0)
}

t.test('onnxruntime is the wasm backend with native convs; wasm gets XNNPACK back', async (t) => {
  await use('wasm')
  const xnnpack = tf.getKernel('Conv2D', 'wasm')?.kernelFunc
  const r = await loadEngine('onnxruntime')()
  if (E.isLeft(r)) return t.fail(r.left)
  t.equal(r.right.name, 'onnxruntime')
  t.equal(r.right.backend, 'wasm')
  t.not(tf.getKernel('Conv2D', 'wasm')?.kernelFunc, xnnpack, 'Conv2D replaced')
  await use('wasm')
  t.equal(tf.getKernel('Conv2D', 'wasm')?.kernelFunc, xnnpack, 'Conv2D restored')
})

interface ConvCase {
  readonly name: string
  readonly x: [number, number, number, number]
  readonly w: [number, number, number, number]
  readonly stride: number
  readonly pad: 'same' | 'valid' | number
  readonly dilation?: number
  readonly bias?: boolean
  readonly activation?: 'relu' | 'leakyrelu'
  /** Whether the native kernel runs it (else the wasm kernel it replaced). */
  readonly native: boolean
}

const CONV_CASES: readonly ConvCase[] = [
  { name: '3x3 same', x: [2, 12, 10, 6], w: [3, 3, 6, 5], stride: 1, pad: 'same', native: true },
  { name: 'first layer', x: [3, 16, 16, 1], w: [3, 3, 1, 8], stride: 1, pad: 'same', native: true },
  { name: '1x1', x: [2, 9, 7, 8], w: [1, 1, 8, 3], stride: 1, pad: 'same', native: true },
  { name: 'valid', x: [2, 11, 9, 4], w: [3, 3, 4, 4], stride: 1, pad: 'valid', native: true },
  { name: 'pad 2', x: [1, 8, 8, 3], w: [3, 3, 3, 2], stride: 1, pad: 2, native: true },
  // 'same' at stride 2 on an odd size pads unevenly (0 before, 1 after).
  {
    name: 'stride 2, odd',
    x: [2, 17, 15, 3],
    w: [3, 3, 3, 4],
    stride: 2,
    pad: 'same',
    native: true,
  },
  {
    name: 'dilation 2',
    x: [2, 13, 13, 3],
    w: [3, 3, 3, 4],
    stride: 1,
    pad: 'same',
    dilation: 2,
    native: true,
  },
  {
    name: 'with bias',
    x: [2, 10, 10, 4],
    w: [3, 3, 4, 6],
    stride: 1,
    pad: 'same',
    bias: true,
    native: true,
  },
  {
    name: 'fused relu',
    x: [2, 10, 10, 4],
    w: [3, 3, 4, 6],
    stride: 1,
    pad: 'same',
    bias: true,
    activation: 'relu',
    native: false,
  },
]

const conv = (c: ConvCase) => () =>
  tf.fused.conv2d({
    x: tf.tensor4d(normal(c.x, 11), c.x),
    filter: tf.tensor4d(normal(c.w, 12), c.w),
    strides: c.stride,
    pad: c.pad,
    dilations: c.dilation ?? 1,
    bias: c.bias ? tf.tensor1d(normal([c.w[3]], 13)) : undefined,
    activation: c.activation,
  })

for (const c of CONV_CASES)
  t.test(`native conv (${c.name}) matches the cpu backend's`, async (t) => {
    const cpu = await on('cpu', conv(c))
    await use('onnxruntime')
    const sessions = nativeConvSessions()
    const native = await on('onnxruntime', conv(c))
    t.equal(native.length, cpu.length)
    t.ok(
      maxRelative(native, cpu) < 1e-5,
      `relative error ${maxRelative(native, cpu).toExponential(2)}`,
    )
    t.equal(
      nativeConvSessions() > sessions,
      c.native,
      c.native ? 'a native session' : 'the wasm kernel',
    )
  })

for (const c of FILTER_CASES)
  t.test(`native filter gradient (${c.name}) matches the cpu backend's`, async (t) => {
    const cpu = await on('cpu', filterGradient(c))
    const native = await on('onnxruntime', filterGradient(c))
    t.ok(
      maxRelative(native, cpu) < 1e-4,
      `relative error ${maxRelative(native, cpu).toExponential(2)}`,
    )
  })

t.test('the native kernels leave no wasm buffers behind', async (t) => {
  await use('onnxruntime')
  const backend = tf.backend() as unknown as { numDataIds: () => number }
  for (const c of [...FILTER_CASES.slice(0, 3)]) {
    const before = backend.numDataIds()
    tf.dispose(tf.tidy(filterGradient(c)))
    t.equal(backend.numDataIds(), before, c.name)
  }
})

const tiny = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] })

const run = async (passes: Passes, steps: number) => {
  const rng = seeded(3, 'ort-kernels')
  const image = tf.tensor4d(
    Float32Array.from({ length: 2 * 32 * 32 }, () => rng.normal()),
    [2, 32, 32, 1],
  )
  const data = { image, masked: tf.relu(image) as tf.Tensor4D }
  const loss = (a: tf.Tensor4D, b: tf.Tensor4D | undefined) =>
    tf.tidy(() =>
      tf.add(tf.mean(tf.square(tf.softmax(a))), tf.mean(tf.abs(tf.sub(a, b!)))),
    ) as tf.Scalar
  let state = initialState(tiny, toParams(tiny, initialWeights(tiny, 3)))
  const losses: number[] = []
  for (let s = 0; s < steps; s++) {
    const r = await trainStep(passes, state, data, loss, { seed: 3, step: s })
    state = r.state
    losses.push(r.loss)
  }
  const weights = Object.fromEntries(
    Object.entries(state.params).map(([k, v]) => [k, v.dataSync().slice() as Float32Array]),
  )
  disposeState(state)
  tf.dispose(Object.values(data))
  return { losses, weights }
}

t.test('worker threads on onnxruntime give exactly its single-threaded steps', async (t) => {
  await use('onnxruntime')
  const reference = await run(inProcess(tiny), 2)
  const passes = await workerPasses(tiny, 'onnxruntime', 2)
  try {
    const parallel = await run(passes, 2)
    t.same(parallel.losses, reference.losses)
    for (const p of parameterShapes(tiny))
      t.ok(
        parallel.weights[p.name].every((v, i) => v === reference.weights[p.name][i]),
        p.name,
      )
  } finally {
    await passes.close()
  }
})
