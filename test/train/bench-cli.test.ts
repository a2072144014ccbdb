import { createRequire } from 'node:module'
import t from 'tap'
import { maco } from '../helpers/cli.ts'

const installed = (pkg: string) => {
  try {
    createRequire(import.meta.url).resolve(`${pkg}/package.json`)
    return true
  } catch {
    return false
  }
}

t.test('bench train --json prints one document with the timing of full MaCo steps', async (t) => {
  const r = await maco(
    'bench',
    'train',
    '--size',
    '32',
    '--batch',
    '2',
    '--engine',
    'wasm',
    '--steps',
    '2',
    '--json',
  )
  t.equal(r.code, 0, r.err)
  const doc = JSON.parse(r.out)
  t.match(doc, { engine: 'wasm', size: 32, batch: 2, workers: 1 })
  t.ok(doc.msPerStep > 0)
  t.equal(doc.stepsMs.length, 2)
  t.ok(Math.abs(doc.imagesPerSecond - (2 * 1000) / doc.msPerStep) < 0.05 * doc.imagesPerSecond)
  t.match(r.err, /step 0 \(warm-up\)/)
})

t.test('bench train --profile adds the kernel times of one more step', async (t) => {
  const r = await maco(
    'bench',
    'train',
    '--size',
    '32',
    '--batch',
    '1',
    '--engine',
    'wasm',
    '--steps',
    '1',
    '--profile',
    '--json',
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

t.test('bench train with two workers', async (t) => {
  const r = await maco(
    'bench',
    'train',
    '--size',
    '32',
    '--batch',
    '1',
    '--engine',
    'wasm',
    '--workers',
    '2',
    '--steps',
    '1',
    '--json',
  )
  t.equal(r.code, 0, r.err)
  t.match(JSON.parse(r.out), { engine: 'wasm', workers: 2 })
})

t.test(
  'an engine that is not installed: exit 2 with one line',
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

t.test('bad usage: exit 2 with the reason', async (t) => {
  for (const [args, reason] of [
    [['bench', 'nope'], /expected a benchmark/],
    [['bench', 'train', '--size', '100'], /--size must be a multiple of 16/],
    [['bench', 'train', '--workers', '3'], /--workers must be a valid number/],
    [['bench', 'train', '--engine', 'gpu'], /--engine must be one of auto, tensorflow-gpu/],
    [['bench', 'train', '--steps', '0'], /--steps/],
    [
      [
        'bench',
        'train',
        '--workers',
        '2',
        '--profile',
        '--engine',
        'wasm',
        '--size',
        '32',
        '--steps',
        '1',
      ],
      /--profile .* --workers 1/,
    ],
  ] as const) {
    const r = await maco(...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.err, reason)
    t.equal(r.err.trim().split('\n').length, 1)
  }
})

t.test('--help lists the options', async (t) => {
  const r = await maco('bench', '--help')
  for (const o of ['--size', '--batch', '--engine', '--workers', '--steps', '--json'])
    t.match(r.out, o)
})
