import t from 'tap'
import * as tf from '@tensorflow/tfjs-core'
import '@tensorflow/tfjs-backend-cpu'
import * as ort from 'onnxruntime-node'
import { exportOnnx } from '../../src/model/onnx-export.ts'
import { predictLogits, toParams } from '../../src/model/tfjs-unet.ts'
import { unetSpec, type UNetSpec } from '../../src/model/unet.ts'
import { seeded } from '../../src/util/rng.ts'
import { randomWeights } from '../helpers/unet-weights.ts'

await tf.setBackend('cpu')

/** ONNX logits (NCHW) and tfjs inference logits (NHWC) of the same weights and images. */
const bothLogits = async (spec: UNetSpec, n: number, h: number, w: number, seed: number) => {
  const weights = randomWeights(spec, seed)
  const rng = seeded(seed, 'image')
  const image = Float32Array.from({ length: n * h * w }, () => rng.normal())
  const session = await ort.InferenceSession.create(exportOnnx(spec, weights))
  const out = await session.run({ image: new ort.Tensor('float32', image, [n, 1, h, w]) })
  await session.release()
  const params = toParams(spec, weights)
  const input = tf.tensor4d(image, [n, h, w, 1]) // one channel: NCHW and NHWC hold the same order
  const logits = predictLogits(spec, params, input)
  const nhwc = (await logits.data()) as Float32Array
  tf.dispose([input, logits, ...Object.values(params)])
  return { onnx: out.logits.data as Float32Array, nhwc }
}

for (const [label, spec, n, size] of [
  ['tiny UNet, 3 levels', unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] }), 2, 32],
  ['5 levels as the default, narrower', unetSpec({ base: 4 }), 1, 64],
  ['the default UNet (full width, small slice)', unetSpec(), 1, 32],
] as const) {
  t.test(`${label}: ONNX and tfjs inference agree (max abs <= 1e-4, same argmax)`, async (t) => {
    const { onnx, nhwc } = await bothLogits(spec, n, size, size, 31)
    const c = spec.options.classes
    const plane = size * size
    let worst = 0
    let disagree = 0
    for (let b = 0; b < n; b++)
      for (let p = 0; p < plane; p++) {
        let [bestOnnx, bestTf] = [0, 0]
        for (let k = 0; k < c; k++) {
          const a = onnx[(b * c + k) * plane + p]
          const f = nhwc[(b * plane + p) * c + k]
          worst = Math.max(worst, Math.abs(a - f))
          if (a > onnx[(b * c + bestOnnx) * plane + p]) bestOnnx = k
          if (f > nhwc[(b * plane + p) * c + bestTf]) bestTf = k
        }
        if (bestOnnx !== bestTf) disagree++
      }
    t.ok(worst <= 1e-4, `max abs ${worst.toExponential(2)}`)
    t.equal(disagree, 0, 'argmax masks agree')
  })
}
