import t from 'tap'
import { exportOnnx } from '../../src/model/onnx-export.ts'
import { encodeModel } from '../../src/model/onnx-proto.ts'
import { unetSpec } from '../../src/model/unet.ts'
import { createSession } from '../../src/serve/runtime.ts'
import { seeded } from '../../src/util/rng.ts'
import { randomWeights } from '../helpers/unet-weights.ts'

const spec = unetSpec({ base: 4, levels: 3, dropout: [0, 0, 0] })
const model = exportOnnx(spec, randomWeights(spec, 21))
const rng = seeded(22, 'image')
const image = Float32Array.from({ length: 2 * 32 * 32 }, () => rng.normal())

t.test('auto picks onnxruntime-node in Node; web and node agree', async (t) => {
  const auto = await createSession(model)
  t.equal(auto.runtimeName, 'onnxruntime-node')
  t.equal(auto.fallbackReason, undefined)
  const web = await createSession(model, { runtime: 'web' })
  t.equal(web.runtimeName, 'onnxruntime-web')
  t.equal(web.threads, 1)
  const [a, b] = [await auto.run(image, [2, 1, 32, 32]), await web.run(image, [2, 1, 32, 32])]
  t.same(a.dims, [2, 4, 32, 32])
  t.same(b.dims, [2, 4, 32, 32])
  let worst = 0
  for (let i = 0; i < a.probabilities.length; i++)
    worst = Math.max(worst, Math.abs(a.probabilities[i] - b.probabilities[i]))
  t.ok(worst <= 1e-4, `node vs web: max abs ${worst.toExponential(2)}`)
  const plane = 32 * 32
  t.ok(
    Math.abs(
      a.probabilities[0] +
        a.probabilities[plane] +
        a.probabilities[2 * plane] +
        a.probabilities[3 * plane] -
        1,
    ) < 1e-6,
  )
  // the web runtime's thread count is fixed by its first session in the process
  const second = await createSession(model, { runtime: 'web', threads: 2 })
  t.equal(second.threads, 1)
  await Promise.all([auto.release(), web.release(), second.release()])
})

t.test('native threads are what was asked for', async (t) => {
  const session = await createSession(model, { runtime: 'node', threads: 2 })
  t.equal(session.threads, 2)
  t.equal(
    (await session.run(image.subarray(0, 32 * 32), [1, 1, 32, 32])).probabilities.length,
    4 * 32 * 32,
  )
  await session.release()
})

t.test('bad input and bad models are refused in one line', async (t) => {
  const session = await createSession(model, { runtime: 'node' })
  await t.rejects(
    session.run(image, [1, 1, 32, 32]),
    /input has 2048 values, dims \[1, 1, 32, 32\] need 1024/,
  )
  // 30 is not a multiple of 4: the pooled and upsampled maps no longer line up
  const odd = session.run(new Float32Array(30 * 30), [1, 1, 30, 30])
  await t.rejects(odd, /^inference failed: [^\n]+$/)
  await session.release()
  await t.rejects(createSession(model, { threads: 0 }), /threads must be a positive integer/)
  await t.rejects(
    createSession(Uint8Array.of(1, 2, 3), { runtime: 'node' }),
    /^onnxruntime-node cannot load the model: [^\n]+$/,
  )
  const identity = encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'identity',
      node: [{ name: 'id', opType: 'Identity', input: ['image'], output: ['y'] }],
      initializer: [],
      input: [
        { name: 'image', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 1 }] } } } },
      ],
      output: [
        { name: 'y', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 1 }] } } } },
      ],
    },
  })
  await t.rejects(
    createSession(identity, { runtime: 'web' }),
    /the model has no 'probabilities' output \(outputs: y\)/,
  )
})

t.test('where onnxruntime-node does not load, auto falls back to web and says why', async (t) => {
  // the getter stands for a native addon that fails as it loads
  const broken = Object.defineProperty({}, 'InferenceSession', {
    enumerable: true,
    get: () => {
      throw new Error('no native binary for this platform')
    },
  })
  const runtime = await t.mockImport<typeof import('../../src/serve/runtime.ts')>(
    '../../src/serve/runtime.ts',
    { 'onnxruntime-node': broken },
  )
  const session = await runtime.createSession(model)
  t.equal(session.runtimeName, 'onnxruntime-web')
  t.equal(
    session.fallbackReason,
    'onnxruntime-node did not load (no native binary for this platform)',
  )
  await session.release()
  await t.rejects(
    runtime.createSession(model, { runtime: 'node' }),
    /^onnxruntime-node is not available: no native binary for this platform$/,
  )
})

const esbuild = await import('esbuild').catch(() => undefined)

t.test(
  'the module bundles for Workers without onnxruntime-node',
  { skip: esbuild === undefined ? 'esbuild (a dependency of tsx) is not installed' : false },
  async (t) => {
    const result = await esbuild!.build({
      entryPoints: [new URL('../../src/serve/runtime.ts', import.meta.url).pathname],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'neutral',
      conditions: ['workerd', 'worker', 'browser', 'import'],
      mainFields: ['module', 'main'],
      metafile: true,
      logLevel: 'silent',
    })
    const inputs = Object.keys(result.metafile.inputs)
    t.ok(
      inputs.some((p) => p.includes('node_modules/onnxruntime-web/')),
      'onnxruntime-web is in the bundle',
    )
    t.notOk(
      inputs.some((p) => p.includes('onnxruntime-node')),
      'onnxruntime-node is not',
    )
  },
)
