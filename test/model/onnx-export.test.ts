import t from 'tap'
import * as ortNode from 'onnxruntime-node'
import * as ortWeb from 'onnxruntime-web'
import { exportOnnx } from '../../src/model/onnx-export.ts'
import { onnxMetadata } from '../../src/model/onnx-import.ts'
import { decodeModel } from '../../src/model/onnx-proto.ts'
import { parameterCount, unetSpec, type UNetSpec, type UNetWeights } from '../../src/model/unet.ts'
import { seeded } from '../../src/util/rng.ts'
import { referenceForward } from '../helpers/reference-forward.ts'
import { randomWeights } from '../helpers/unet-weights.ts'
import { elementCount } from '../../src/util/shape.ts'

type Dims = [number, number, number, number]

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  if (a.length !== b.length) return Infinity
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

const randomImage = (dims: Dims, seed: number) => {
  const rng = seeded(seed, 'image')
  return Float32Array.from({ length: elementCount(dims) }, () => rng.normal())
}

/** Runs the model in one runtime; both packages share onnxruntime-common's API. */
const infer = async (ort: typeof ortNode, model: Uint8Array, image: Float32Array, dims: Dims) => {
  const session = await ort.InferenceSession.create(model)
  const out = await session.run({ image: new ort.Tensor('float32', image, dims) })
  await session.release()
  return {
    logits: out.logits.data as Float32Array,
    probabilities: out.probabilities.data as Float32Array,
    dims: out.probabilities.dims,
  }
}

const runtimes = [
  ['onnxruntime-node', ortNode],
  ['onnxruntime-web', ortWeb as unknown as typeof ortNode],
] as const

const tiny = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] })

t.test(
  'the graph is opset 17 / IR 8 with batch norm folded, no dropout, dynamic N, H, W',
  async (t) => {
    const model = decodeModel(exportOnnx(tiny, randomWeights(tiny, 1)))
    t.equal(model.irVersion, 8)
    t.same(model.opsetImport, [{ domain: '', version: 17 }])
    const ops = model.graph.node.map((n) => n.opType)
    t.same([...new Set(ops)].sort(), [
      'Concat',
      'Conv',
      'LeakyRelu',
      'MaxPool',
      'Resize',
      'Softmax',
    ])
    t.equal(ops.filter((o) => o === 'Conv').length, tiny.ops.filter((o) => o.op === 'conv').length)
    const dims = (v: (typeof model.graph.input)[number]) =>
      v.type.tensorType.shape.dim.map((d) => d.dimParam ?? d.dimValue)
    t.same(model.graph.input.map(dims), [['N', 1, 'H', 'W']])
    t.same(
      model.graph.output.map((o) => o.name),
      ['logits', 'probabilities'],
    )
    t.same(model.graph.output.map(dims), [
      ['N', 4, 'H', 'W'],
      ['N', 4, 'H', 'W'],
    ])
    const resize = model.graph.node.find((n) => n.opType === 'Resize')!
    const text = (name: string) =>
      new TextDecoder().decode(resize.attribute!.find((a) => a.name === name)!.s)
    t.equal(text('mode'), 'linear')
    t.equal(text('coordinate_transformation_mode'), 'align_corners')
    const leaky = model.graph.node.find((n) => n.opType === 'LeakyRelu')!
    t.equal(leaky.attribute![0].f, Math.fround(0.01))
  },
)

t.test('batch norm folds into the conv before it, by hand', async (t) => {
  // one 1x1 conv, 1 -> 2 channels, then batch norm: y = ((k x + b) - mean) * gamma / sqrt(var + eps) + beta
  const eps = 1e-3
  const spec: UNetSpec = {
    options: { ...tiny.options, bnEpsilon: eps, classes: 2 },
    ops: [
      { op: 'conv', name: 'c', inChannels: 1, outChannels: 2, kernel: 1 },
      { op: 'batchNorm', name: 'bn', channels: 2 },
    ],
  }
  const weights: UNetWeights = {
    'c.kernel': Float32Array.of(3, -0.5),
    'c.bias': Float32Array.of(1, 2),
    'bn.gamma': Float32Array.of(2, 0.25),
    'bn.beta': Float32Array.of(0.5, -1),
    'bn.movingMean': Float32Array.of(4, 1),
    'bn.movingVariance': Float32Array.of(3, 0.04),
  }
  const model = decodeModel(exportOnnx(spec, weights))
  const floats = (name: string) => {
    const raw = model.graph.initializer.find((i) => i.name === name)!.rawData!
    return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength))
  }
  const s0 = 2 / Math.sqrt(3 + eps)
  const variance1 = Math.fround(0.04) // the value the Float32Array holds
  const s1 = 0.25 / Math.sqrt(variance1 + eps)
  t.same(floats('c.weight'), Float32Array.of(Math.fround(3 * s0), Math.fround(-0.5 * s1)))
  t.same(
    floats('c.bias'),
    Float32Array.of(Math.fround((1 - 4) * s0 + 0.5), Math.fround((2 - 1) * s1 - 1)),
  )
  const x = Float32Array.of(2, -1) // a 1 x 1 x 1 x 2 image
  const expected = [
    ((3 * 2 + 1 - 4) * 2) / Math.sqrt(3 + eps) + 0.5,
    ((3 * -1 + 1 - 4) * 2) / Math.sqrt(3 + eps) + 0.5,
    ((-0.5 * 2 + 2 - 1) * 0.25) / Math.sqrt(variance1 + eps) - 1,
    ((-0.5 * -1 + 2 - 1) * 0.25) / Math.sqrt(variance1 + eps) - 1,
  ]
  const { logits } = await infer(ortNode, exportOnnx(spec, weights), x, [1, 1, 1, 2])
  t.ok(maxAbsDiff(logits, expected) < 1e-6, `max abs ${maxAbsDiff(logits, expected)}`)
})

t.test('both runtimes match an independent plain-JS forward pass (batch 1 and 3)', async (t) => {
  const weights = randomWeights(tiny, 2)
  const model = exportOnnx(tiny, weights)
  for (const dims of [
    [1, 1, 32, 32],
    [3, 1, 32, 48],
  ] as Dims[]) {
    const image = randomImage(dims, dims[0])
    const reference = referenceForward(tiny, weights, image, dims)
    const outputs = []
    for (const [name, ort] of runtimes) {
      const out = await infer(ort, model, image, dims)
      outputs.push(out)
      t.same(out.dims, [dims[0], 4, dims[2], dims[3]], `${name} dims`)
      const d = maxAbsDiff(out.logits, reference.logits)
      t.ok(
        d <= 1e-4,
        `${name} logits vs reference, batch ${dims[0]}: max abs ${d.toExponential(2)}`,
      )
      const p = maxAbsDiff(out.probabilities, reference.probabilities)
      t.ok(p <= 1e-4, `${name} probabilities vs reference: max abs ${p.toExponential(2)}`)
    }
    const between = maxAbsDiff(outputs[0].probabilities, outputs[1].probabilities)
    t.ok(between <= 1e-4, `node vs web: max abs ${between.toExponential(2)}`)
    // the reference's logits spread enough that the test is not vacuous
    t.ok(Math.max(...reference.logits) - Math.min(...reference.logits) > 1)
  }
})

t.test('probabilities sum to 1 over classes at every pixel', async (t) => {
  const dims: Dims = [2, 1, 16, 16]
  const { probabilities } = await infer(
    ortNode,
    exportOnnx(tiny, randomWeights(tiny, 3)),
    randomImage(dims, 9),
    dims,
  )
  const plane = 16 * 16
  let worst = 0
  for (let b = 0; b < 2; b++)
    for (let i = 0; i < plane; i++) {
      let sum = 0
      for (let c = 0; c < 4; c++) sum += probabilities[(b * 4 + c) * plane + i]
      worst = Math.max(worst, Math.abs(sum - 1))
    }
  t.ok(worst < 1e-6, `worst |sum - 1| = ${worst}`)
})

t.test('the default UNet exports and runs one 256 x 256 slice in both runtimes', async (t) => {
  const spec = unetSpec()
  t.equal(parameterCount(spec), 1_813_764)
  const bytes = exportOnnx(spec, randomWeights(spec, 4))
  const model = decodeModel(bytes)
  // folding removes gamma and beta (2 per batch-norm channel); the upsample scales add 4
  const bnChannels = spec.ops.reduce((n, o) => n + (o.op === 'batchNorm' ? o.channels : 0), 0)
  const stored = model.graph.initializer.reduce((n, i) => n + elementCount(i.dims), 0)
  t.equal(stored, 1_813_764 - 2 * bnChannels + 4)
  const dims: Dims = [1, 1, 256, 256]
  const image = randomImage(dims, 5)
  const [native, web] = [
    await infer(ortNode, bytes, image, dims),
    await infer(runtimes[1][1], bytes, image, dims),
  ]
  t.same(native.dims, [1, 4, 256, 256])
  const d = maxAbsDiff(native.probabilities, web.probabilities)
  t.ok(d <= 1e-4, `node vs web on the default UNet: max abs ${d.toExponential(2)}`)
})

t.test('opsets 18 to 21 give the same outputs as 17', async (t) => {
  const weights = randomWeights(tiny, 6)
  const dims: Dims = [1, 1, 16, 16]
  const image = randomImage(dims, 6)
  const base = await infer(ortNode, exportOnnx(tiny, weights), image, dims)
  for (const opset of [18, 19, 20, 21]) {
    const out = await infer(ortNode, exportOnnx(tiny, weights, { opset }), image, dims)
    t.same(out.logits, base.logits, `opset ${opset}`)
  }
})

t.test('metadata travels in metadata_props', async (t) => {
  const card = JSON.stringify({ name: 'tiny' })
  const bytes = exportOnnx(tiny, randomWeights(tiny, 1), { metadata: { 'maco.modelCard': card } })
  t.same(onnxMetadata(bytes), { _tag: 'Right', right: { 'maco.modelCard': card } })
})

t.test('bad weights or opset are refused with a reason', async (t) => {
  const weights = randomWeights(tiny, 1)
  const { ['enc1.bn2.beta']: _, ...missing } = weights
  t.throws(() => exportOnnx(tiny, missing), /missing weight 'enc1\.bn2\.beta'/)
  t.throws(
    () => exportOnnx(tiny, { ...weights, 'out.bias': new Float32Array(3) }),
    /weight 'out\.bias' has 3 values, shape \[4\] needs 4/,
  )
  t.throws(() => exportOnnx(tiny, weights, { opset: 13 }), /opset must be an integer from 17 to 21/)
})
