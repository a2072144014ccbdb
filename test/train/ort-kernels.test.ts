import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { loadEngine } from '../../src/train/engine.ts'
import { nativeConvSessions } from '../../src/train/ort-kernels.ts'
import { installed } from '../../src/util/installed.ts'
import {
  directFilterGradient,
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

/** A stride-1 'same' conv that the native kernel runs, unless `more` says otherwise. */
const convCase = (
  name: string,
  x: ConvCase['x'],
  w: ConvCase['w'],
  more: Partial<ConvCase> = {},
): ConvCase => ({ name, x, w, stride: 1, pad: 'same', native: true, ...more })

const CONV_CASES: readonly ConvCase[] = [
  convCase('3x3 same', [2, 12, 10, 6], [3, 3, 6, 5]),
  convCase('first layer', [3, 16, 16, 1], [3, 3, 1, 8]),
  convCase('1x1', [2, 9, 7, 8], [1, 1, 8, 3]),
  convCase('valid', [2, 11, 9, 4], [3, 3, 4, 4], { pad: 'valid' }),
  convCase('pad 2', [1, 8, 8, 3], [3, 3, 3, 2], { pad: 2 }),
  // 'same' at stride 2 on an odd size pads unevenly (0 before, 1 after).
  convCase('stride 2, odd', [2, 17, 15, 3], [3, 3, 3, 4], { stride: 2 }),
  convCase('dilation 2', [2, 13, 13, 3], [3, 3, 3, 4], { dilation: 2 }),
  convCase('with bias', [2, 10, 10, 4], [3, 3, 4, 6], { bias: true }),
  convCase('fused relu', [2, 10, 10, 4], [3, 3, 4, 6], {
    bias: true,
    activation: 'relu',
    native: false,
  }),
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
  t.test(`native filter gradient (${c.name}) matches the direct sum`, async (t) => {
    const direct = await directFilterGradient(c)
    const native = await on('onnxruntime', filterGradient(c))
    t.ok(
      maxRelative(native, direct) < 1e-4,
      `relative error ${maxRelative(native, direct).toExponential(2)}`,
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
