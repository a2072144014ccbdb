import t from 'tap'
import * as E from 'fp-ts/lib/Either.js'
import { exportOnnx } from '../../src/model/onnx-export.ts'
import { importOnnxWeights, onnxMetadata } from '../../src/model/onnx-import.ts'
import { unetSpec } from '../../src/model/unet.ts'
import { randomWeights } from '../helpers/unet-weights.ts'

const tiny = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] })

const right = <A>(e: E.Either<string, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left)
  return e.right
}

t.test('export -> import -> export gives identical bytes', async (t) => {
  for (const spec of [tiny, unetSpec()]) {
    const first = exportOnnx(spec, randomWeights(spec, 11))
    const again = exportOnnx(spec, right(importOnnxWeights(first, spec)))
    t.equal(Buffer.compare(first, again), 0, `${first.length} bytes, levels ${spec.options.levels}`)
  }
})

t.test('imported weights: conv kernels back in HWIO, batch norm folded into them', async (t) => {
  const original = randomWeights(tiny, 12)
  const imported = right(importOnnxWeights(exportOnnx(tiny, original), tiny))
  // convs without a batch norm after them (decoder 1x1 reductions, output) come back unchanged
  t.same(imported['out.kernel'], original['out.kernel'])
  t.same(imported['out.bias'], original['out.bias'])
  t.same(imported['dec0.reduce.kernel'], original['dec0.reduce.kernel'])
  // enc1.conv2 is [3, 3, 8, 8] HWIO; element (y 2, x 1, in 5, out 3), folded by hand
  const [g, v, m, b] = ['gamma', 'movingVariance', 'movingMean', 'beta'].map(
    (k) => original[`enc1.bn2.${k}`][3],
  )
  const scale = g / Math.sqrt(v + tiny.options.bnEpsilon)
  const index = ((2 * 3 + 1) * 8 + 5) * 8 + 3
  t.equal(
    imported['enc1.conv2.kernel'][index],
    Math.fround(original['enc1.conv2.kernel'][index] * scale),
  )
  t.equal(
    imported['enc1.conv2.bias'][3],
    Math.fround((original['enc1.conv2.bias'][3] - m) * scale + b),
  )
  // the identity batch norm convention
  t.same(imported['enc1.bn2.gamma'], new Float32Array(8).fill(1))
  t.same(imported['enc1.bn2.beta'], new Float32Array(8))
  t.same(imported['enc1.bn2.movingMean'], new Float32Array(8))
  t.same(imported['enc1.bn2.movingVariance'], new Float32Array(8).fill(1 - 1e-5))
  t.same(Object.keys(imported).sort(), Object.keys(original).sort())
})

t.test('a file that does not fit the UNet is refused with a reason', async (t) => {
  const bytes = exportOnnx(tiny, randomWeights(tiny, 13))
  t.same(
    importOnnxWeights(bytes, unetSpec({ base: 4, levels: 3, dropout: [0, 0, 0], classes: 2 })),
    E.left("initializer 'out.weight' has dims [4, 4, 3, 3], the UNet expects [2, 4, 3, 3]"),
  )
  t.same(
    importOnnxWeights(bytes, unetSpec()),
    E.left("initializer 'enc0.conv1.weight' has dims [4, 1, 3, 3], the UNet expects [16, 1, 3, 3]"),
  )
  const notOnnx = importOnnxWeights(new TextEncoder().encode('{"not": "onnx"}'), tiny)
  t.ok(E.isLeft(notOnnx) && /^not an ONNX model/.test(notOnnx.left), JSON.stringify(notOnnx))
  const truncated = importOnnxWeights(bytes.subarray(0, bytes.length - 100), tiny)
  t.ok(E.isLeft(truncated), JSON.stringify(truncated))
  t.ok(E.isLeft(onnxMetadata(Uint8Array.of(0xff, 0xff, 0xff))))
})
