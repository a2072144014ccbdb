import { writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import t from 'tap'
import { inferRows } from '../../src/bench/infer.ts'
import { median, quantile, ratioTo } from '../../src/bench/stats.ts'
import { pytorchMsPerStep, trainRows, type TrainResult } from '../../src/bench/train.ts'
import { phantomCase } from '../../src/data/phantom.ts'
import { encodeNifti } from '../../src/volume/nifti.ts'
import { maco } from '../helpers/cli.ts'
import { tinyModelDir } from '../helpers/serve-fixtures.ts'

const installed = (pkg: string) => {
  try {
    createRequire(import.meta.url).resolve(`${pkg}/package.json`)
    return true
  } catch {
    return false
  }
}
const nativeInstalled = installed('onnxruntime-node')

/** `a` and `b` agree to the rounding of the figures they were computed from. */
const near = (a: number, b: number, relative = 0.01) => Math.abs(a - b) <= relative * Math.abs(b)

t.test(
  'the infer table: a row per runtime and thread count, each against the fastest native run',
  async (t) => {
    const run = (runtime: 'onnxruntime-web' | 'onnxruntime-node', threads: number, ms: number) => ({
      runtime,
      threads,
      msPerSlice: ms,
      minMsPerSlice: ms,
    })
    const rows = inferRows({
      runtime: 'onnxruntime-web',
      size: 256,
      model: 'acdc-maco',
      trained: true,
      runs: 10,
      msPerSlice: 30,
      nativeMsPerSlice: 8,
      ratio: 3.75,
      results: [
        run('onnxruntime-web', 1, 50),
        run('onnxruntime-web', 2, 30),
        run('onnxruntime-node', 1, 16),
        run('onnxruntime-node', 2, 8),
      ],
    })
    t.same(
      rows.map((r) => [r.setting, r.result, r.ratio]),
      [
        ['onnxruntime-web, 1 thread, 256 px slice, acdc-maco', '50 ms/slice', 6.25],
        ['onnxruntime-web, 2 threads, 256 px slice, acdc-maco', '30 ms/slice', 3.75],
        ['onnxruntime-node, 1 thread, 256 px slice, acdc-maco', '16 ms/slice', 2],
        ['onnxruntime-node, 2 threads, 256 px slice, acdc-maco', '8 ms/slice', 1],
      ],
    )
    t.ok(rows.every((r) => r.floor === '8 ms (onnxruntime-node, fastest)'))
  },
)

t.test('medians, quantiles and ratios of timings', async (t) => {
  t.equal(median([30, 10, 20]), 20)
  t.equal(median([30, 10, 20, 1000]), 25, 'even count: the mean of the middle two')
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1)
  t.equal(quantile(hundred, 0.5), 50)
  t.equal(quantile(hundred, 0.99), 99)
  t.equal(quantile([7], 0.99), 7)
  t.equal(ratioTo(167, 20), 8.35)
  t.equal(ratioTo(1, 3), 0.333)
  t.equal(ratioTo(5, null), null, 'no floor, no ratio')
  t.equal(ratioTo(5, 0), null)
})

t.test('bench train --json: the DESIGN shape; no PyTorch floor at 32 px', async (t) => {
  const r = await maco(
    ...['bench', 'train', '--size', '32', '--batch', '2', '--engine', 'wasm', '--steps', '2'],
    '--json',
  )
  t.equal(r.code, 0, r.err)
  const doc = JSON.parse(r.out)
  t.match(doc, {
    engine: 'wasm',
    size: 32,
    batch: 2,
    base: 16,
    workers: 1,
    reference: null,
    ratio: null,
  })
  t.ok(doc.msPerStep > 0)
  t.equal(doc.stepsMs.length, 2, 'the timed steps, after a warm-up step')
  t.match(r.err, /step 0 \(warm-up\)/)
  t.ok(near(doc.imagesPerSecond, (2 * 1000) / doc.msPerStep, 0.05))
})

t.test('bench train --profile adds the kernel times of one more step', async (t) => {
  const r = await maco(
    ...['bench', 'train', '--size', '32', '--batch', '1', '--engine', 'wasm', '--steps', '1'],
    ...['--profile', '--json'],
  )
  t.equal(r.code, 0, r.err)
  const { kernels } = JSON.parse(r.out) as {
    kernels: { name: string; ms: number; calls: number }[]
  }
  t.ok(kernels.some((k) => k.name === 'Conv2DBackpropFilter' && k.calls > 0))
  t.same(
    kernels.map((k) => k.ms),
    kernels.map((k) => k.ms).sort((a, b) => b - a),
    'largest first',
  )
  t.match(r.err, /Conv2D\s+\d+ ms/)
})

t.test(
  'bench train on an engine that is not installed: exit 2 with one line',
  { skip: installed('@tensorflow/tfjs-node') && 'tfjs-node is installed here' },
  async (t) => {
    const r = await maco('bench', 'train', '--engine', 'tensorflow')
    t.equal(r.code, 2)
    t.equal(
      r.err,
      "maco bench: engine 'tensorflow' is not available: @tensorflow/tfjs-node is not installed (npm i @tensorflow/tfjs-node)\n",
    )
  },
)

t.test('bench train --base: another UNet width, recorded, with no PyTorch floor', async (t) => {
  const r = await maco(
    ...['bench', 'train', '--size', '32', '--batch', '1', '--steps', '1', '--base', '4'],
    ...['--engine', 'wasm', '--json'],
  )
  t.equal(r.code, 0, r.err)
  t.match(JSON.parse(r.out), { engine: 'wasm', size: 32, batch: 1, base: 4, reference: null })
  t.match(r.err, /^bench train: engine wasm, 32 px, batch 1, base 4, /m)
})

t.test('PyTorch was measured on the reference UNet only: other widths have no floor', async (t) => {
  t.equal(pytorchMsPerStep(128, 4, 16), 480)
  t.equal(pytorchMsPerStep(256, 4, 16), 2200)
  t.equal(pytorchMsPerStep(128, 4, 8), undefined, 'another width')
  t.equal(pytorchMsPerStep(128, 2, 16), undefined, 'another batch')
  t.equal(pytorchMsPerStep(64, 4, 16), undefined, 'another size')
})

t.test("the train row names a base other than the reference's", async (t) => {
  const result = (base: number, reference: TrainResult['reference']): TrainResult => ({
    engine: 'wasm',
    size: 128,
    batch: 4,
    base,
    workers: 2,
    msPerStep: 960,
    imagesPerSecond: 4.17,
    stepsMs: [960],
    reference,
    ratio: reference && 2,
  })
  const [reference] = trainRows(result(16, { msPerStep: 480, source: 'PyTorch' }))
  t.equal(reference.setting, 'wasm, 128 px, batch 4, 2 workers')
  t.equal(reference.floor, '480 ms (PyTorch, 2 threads, measured once)')
  const [cpu] = trainRows(result(8, null))
  t.equal(cpu.setting, 'wasm, 128 px, batch 4, base 8, 2 workers')
  t.match(cpu.floor, /^none \(PyTorch was measured on the reference UNet, base 16,/)
  t.equal(cpu.ratio, null)
})

t.test(
  'bench infer --json: web against native, each thread count in its own process',
  async (t) => {
    const r = await maco(
      'bench',
      'infer',
      '--size',
      '32',
      '--runs',
      '1',
      '--model',
      'random',
      '--json',
    )
    t.equal(r.code, 0, r.err)
    const doc = JSON.parse(r.out)
    t.match(doc, { runtime: 'onnxruntime-web', size: 32, model: 'random-unet', trained: false })
    const web = doc.results.filter((x: { runtime: string }) => x.runtime === 'onnxruntime-web')
    t.same(
      web.map((x: { threads: number }) => x.threads),
      [1, 2],
      'web got 2 threads after 1: a fresh process each',
    )
    t.equal(doc.msPerSlice, Math.min(...web.map((x: { msPerSlice: number }) => x.msPerSlice)))
    if (nativeInstalled) {
      t.ok(doc.nativeMsPerSlice > 0)
      t.ok(near(doc.ratio, doc.msPerSlice / doc.nativeMsPerSlice))
      t.equal(doc.results.length, 4)
    } else {
      t.match(doc, { nativeMsPerSlice: null, ratio: null, nativeUnavailable: String })
    }
    t.match(r.err, /bench infer: random-unet, onnxruntime-web, 2 thread\(s\), 32 px/)
  },
)

t.test('bench infer: a model onnxruntime cannot load fails the run in one line', async (t) => {
  const dir = t.testdir({ 'broken.onnx': 'not an onnx file', 'broken.json': '{}' })
  const r = await maco(
    'bench',
    'infer',
    '--size',
    '32',
    '--runs',
    '1',
    '--model',
    join(dir, 'broken.onnx'),
  )
  t.equal(r.code, 1)
  t.match(r.err, /^maco bench: onnxruntime-web failed: .+\n$/m)
  t.equal(r.err.split('\n').filter((l) => l.startsWith('maco bench')).length, 1)
})

t.test('bench cpl --json: against scipy at 256 px', async (t) => {
  const r = await maco(
    'bench',
    'cpl',
    '--size',
    '256',
    '--data',
    'synthetic',
    '--runs',
    '1',
    '--json',
  )
  t.equal(r.code, 0, r.err)
  const doc = JSON.parse(r.out)
  t.match(doc, { size: 256, classes: 4, source: 'synthetic', slices: 10 })
  t.equal(doc.reference.msPerSlice, 5.9)
  t.ok(doc.msPerSlice > 0)
  t.ok(near(doc.ratio, doc.msPerSlice / 5.9))
})

t.test('bench cpl --data DIR reads every *_scribble.nii.gz of the folder', async (t) => {
  const dir = t.testdir()
  for (const [seed, slices] of [
    [1, 3],
    [2, 2],
  ]) {
    const c = phantomCase(seed, { size: [64, 64], slices, spacing: [2, 2, 8] })
    await writeFile(
      join(dir, `case${seed}_scribble.nii.gz`),
      encodeNifti(c.scribble, { gzip: true }),
    )
    await writeFile(join(dir, `case${seed}_image.nii.gz`), encodeNifti(c.image, { gzip: true }))
  }
  const r = await maco('bench', 'cpl', '--size', '64', '--data', dir, '--runs', '1', '--json')
  t.equal(r.code, 0, r.err)
  t.match(JSON.parse(r.out), { size: 64, source: dir, slices: 5, reference: null, ratio: null })

  const empty = await maco('bench', 'cpl', '--data', t.testdir())
  t.equal(empty.code, 2)
  t.match(empty.err, /no \*_scribble\.nii\.gz files/)
})

t.test('bench cpl without --json: a short table with the floor', async (t) => {
  const r = await maco('bench', 'cpl', '--size', '32', '--data', 'synthetic', '--runs', '1')
  t.equal(r.code, 0, r.err)
  const [head, row, ...rest] = r.out.trimEnd().split('\n')
  t.match(head, /^bench\s+setting\s+result\s+floor\s+x floor$/)
  t.match(row, /^cpl\s+32 px, 4 classes, synthetic scribbles\s+[\d.]+ ms\/slice\s+none .*-$/)
  t.same(rest, [])
})

t.test('bench serve --json: HTTP with 1 and 8 clients against segmentVolume', async (t) => {
  const r = await maco(
    'bench',
    'serve',
    '--size',
    '32',
    '--requests',
    '2',
    '--model',
    'random',
    '--json',
  )
  t.equal(r.code, 0, r.err)
  const doc = JSON.parse(r.out)
  t.match(doc, {
    model: 'random-unet',
    trained: false,
    threads: 1,
    volume: { dims: [216, 256, 10] },
  })
  t.equal(doc.direct.count, 2)
  t.same(
    doc.http.map((h: { clients: number; count: number }) => [h.clients, h.count]),
    [
      [1, 2],
      [8, 5],
    ],
  )
  const [one, eight] = doc.http
  t.ok(near(doc.ratio.throughput1, doc.direct.perSecond / one.perSecond))
  t.ok(near(doc.ratio.throughput8, doc.direct.perSecond / eight.perSecond))
  t.ok(near(doc.ratio.latency1, one.p50Ms / doc.direct.p50Ms))
  t.ok(one.p50Ms <= one.p99Ms)
})

t.test('bench serve --model FILE serves that model with its card', async (t) => {
  const dir = await tinyModelDir(t.testdir(), { name: 'tiny' })
  const r = await maco(
    'bench',
    'serve',
    '--requests',
    '1',
    '--model',
    join(dir, 'tiny.onnx'),
    '--json',
  )
  t.equal(r.code, 0, r.err)
  t.match(JSON.parse(r.out), { model: 'tiny', trained: true })

  await writeFile(join(dir, 'tiny.json'), '{"name":"tiny"}')
  const bad = await maco('bench', 'serve', '--requests', '1', '--model', join(dir, 'tiny.onnx'))
  t.equal(bad.code, 2)
  t.match(bad.err, /^maco bench: .*tiny\.json: invalid model card: classes/)
})

t.test('bench with no benchmark runs all four into one JSON document', async (t) => {
  const r = await maco(
    ...['bench', '--size', '32', '--batch', '1', '--steps', '1', '--engine', 'wasm'],
    ...['--runs', '1', '--requests', '1', '--data', 'synthetic', '--model', 'random', '--json'],
  )
  t.equal(r.code, 0, r.err)
  const doc = JSON.parse(r.out)
  t.same(Object.keys(doc), ['train', 'infer', 'cpl', 'serve'])
  t.same(
    doc.train.map((x: { workers: number }) => x.workers),
    [1, 2],
    'training with 1 worker and with 2',
  )
  t.match(doc, {
    infer: { runtime: 'onnxruntime-web', size: 32 },
    cpl: { size: 32, source: 'synthetic' },
    serve: { model: 'random-unet', http: [{ clients: 1 }, { clients: 8 }] },
  })
})

t.test('bad usage and bad input: exit 2 with one line, before measuring anything', async (t) => {
  for (const [args, reason] of [
    [
      ['bench', 'nope'],
      /expected a benchmark \(train, infer, cpl, serve\) or none for all, got 'nope'/,
    ],
    [['bench', 'cpl', 'extra'], /unexpected argument 'extra'/],
    [['bench', 'cpl', '--engine', 'wasm'], /--engine is for train, not cpl/],
    [['bench', 'infer', '--data', 'x'], /--data is for cpl, not infer/],
    [['bench', 'train', '--requests', '3'], /--requests is for serve, not train/],
    [['bench', 'infer', '--base', '8'], /--base is for train, not infer/],
    [['bench', 'train', '--base', '12'], /--base must be a power of two from 1 to 64, got '12'/],
    [['bench', 'train', '--base', '128'], /--base must be a power of two from 1 to 64, got '128'/],
    [['bench', 'train', '--base', '0'], /--base must be a power of two from 1 to 64, got '0'/],
    [['bench', 'train', '--base', 'wide'], /--base must be a power of two .*, got 'wide'/],
    [['bench', 'train', '--size', '100'], /--size must be a multiple of 16/],
    [['bench', 'train', '--workers', '3'], /--workers must be a valid number/],
    [['bench', 'train', '--engine', 'gpu'], /--engine must be one of auto, tensorflow-gpu/],
    [['bench', 'train', '--steps', '0'], /--steps/],
    [
      ['bench', 'train', '--workers', '2', '--profile', '--engine', 'wasm', '--size', '32'],
      /--profile .* --workers 1/,
    ],
    [
      ['bench', 'infer', '--model', 'model.txt'],
      /--model must be an \.onnx file or 'random', got model\.txt/,
    ],
    [
      ['bench', 'serve', '--model', '/nonexistent/m.onnx'],
      /--model \/nonexistent\/m\.onnx: no such file/,
    ],
    [['bench', 'cpl', '--data', '/nonexistent'], /--data \/nonexistent: no such folder/],
    [['bench', 'serve', '--requests', '0'], /--requests must be a valid number, got '0'/],
    [['bench', 'cpl', '--runs', '1.5'], /--runs must be a valid number/],
    [['bench', 'cpl', '--size', '40'], /--size must be a multiple of 16, got 40/],
    [['bench', 'infer', '--size', '16'], /--size must be a valid number, got '16'/],
    [
      ['bench', '--size', '32', '--engine', 'wasm', '--data', '/nonexistent'],
      /--data \/nonexistent: no such folder/,
    ],
  ] as const) {
    const r = await maco(...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.err, reason)
    t.equal(r.err.trim().split('\n').length, 1, 'one line, nothing measured')
    t.equal(r.out, '')
  }
  const model = join(t.testdir({ 'm.onnx': 'x' }), 'm.onnx')
  const r = await maco('bench', 'infer', '--model', model)
  t.equal(r.code, 2)
  t.match(r.err, /no model card .*m\.json beside it/)
})

t.test('--help lists every benchmark and option', async (t) => {
  const r = await maco('bench', '--help')
  t.equal(r.code, 0)
  for (const b of ['train', 'infer', 'cpl', 'serve']) t.match(r.out, new RegExp(`^${b}:`, 'm'))
  for (const o of ['--size', '--json', '--batch', '--base', '--engine', '--workers', '--steps'])
    t.match(r.out, o)
  for (const o of ['--profile', '--model', '--runs', '--data', '--requests']) t.match(r.out, o)
})
