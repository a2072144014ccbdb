import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { ENGINE_CHOICES, loadEngine } from '../../src/train/engine.ts'
import { hasGpuDevice } from '../../src/train/webgpu.ts'
import { installed } from '../../src/util/installed.ts'

t.test('wasm and cpu load and become the active backend, with gradients available', async (t) => {
  for (const name of ['wasm', 'cpu'] as const) {
    const r = await loadEngine(name)()
    t.ok(E.isRight(r), name)
    t.equal(tf.getBackend(), name)
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(x, x)))(tf.tensor([1, -2]))
    t.same(Array.from(g.dataSync()), [2, -4], `d/dx sum x^2 on ${name}`)
  }
})

t.test('auto takes the first engine that loads and says why the others were skipped', async (t) => {
  const r = await loadEngine('auto')()
  if (!E.isRight(r)) return t.fail(r.left)
  if (installed('@tensorflow/tfjs-node-gpu') || installed('@tensorflow/tfjs-node'))
    return t.pass('a native engine is installed here')
  if (hasGpuDevice()) return t.pass('this machine has a GPU device: webgpu may be taken')
  const native = installed('onnxruntime-node')
  t.equal(r.right.name, native ? 'onnxruntime' : 'wasm')
  t.same(r.right.skipped, [
    'tensorflow-gpu: @tensorflow/tfjs-node-gpu is not installed (npm i @tensorflow/tfjs-node-gpu)',
    'webgpu: no GPU device (/dev/nvidiactl, /dev/dri/renderD*)',
    'tensorflow: @tensorflow/tfjs-node is not installed (npm i @tensorflow/tfjs-node)',
    ...(native ? [] : ['onnxruntime: onnxruntime-node is not installed (npm i onnxruntime-node)']),
  ])
})

t.test(
  'an absent native engine is a one-line reason, not a throw',
  { skip: installed('@tensorflow/tfjs-node') && 'tfjs-node is installed here' },
  async (t) => {
    const r = await loadEngine('tensorflow')()
    t.same(
      r,
      E.left(
        "engine 'tensorflow' is not available: @tensorflow/tfjs-node is not installed (npm i @tensorflow/tfjs-node)",
      ),
    )
  },
)

t.test('the choices list auto and every engine', async (t) => {
  t.same(
    [...ENGINE_CHOICES],
    [
      'auto',
      'tensorflow-gpu',
      'webgpu',
      'onnxruntime-webgpu',
      'tensorflow',
      'onnxruntime',
      'wasm',
      'cpu',
    ],
  )
})
