import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { recipes } from '../../pipelines/synthetic.ts'
import { modelCard } from '../../src/cli/export.ts'
import { predictLogits, toParams } from '../../src/model/tfjs-unet.ts'
import { parseModelCard } from '../../src/serve/model-card.ts'
import { sha256Hex } from '../../src/serve/models.ts'
import { createSession } from '../../src/serve/runtime.ts'
import { readCheckpoint } from '../../src/train/checkpoint.ts'
import { loadEngine } from '../../src/train/engine.ts'
import { networkSpec, type TrainConfig } from '../../src/train/recipe.ts'
import { Progress } from '../../src/train/trainer.ts'
import { preprocessVolume } from '../../src/volume/preprocess.ts'
import { maco } from '../helpers/cli.ts'

/** One short training run shared by the tests: two epochs on three phantoms. */
const dir = t.testdir()
const run = join(dir, 'run')
const trained = await maco(
  'train',
  'pipelines/synthetic.ts',
  '--epochs',
  '2',
  '--train-cases',
  '3',
  '--val-cases',
  '1',
  '--engine',
  'wasm',
  '--out',
  run,
)
if (trained.code !== 0) throw new Error(trained.err)

t.test('export writes the ONNX and a card that decodes and names its bytes', async (t) => {
  const out = join(dir, 'models', 'heart.onnx')
  const r = await maco('export', run, '-o', out, '--json')
  t.equal(r.code, 0, r.err)
  const printed = JSON.parse(r.out)
  const card = parseModelCard(await readFile(join(dir, 'models', 'heart.json'), 'utf8'))
  if (E.isLeft(card)) throw new Error(card.left)
  const bytes = new Uint8Array(await readFile(out))
  t.equal(card.right.onnx.sha256, await sha256Hex(bytes))
  t.equal(printed.sha256, card.right.onnx.sha256)
  const config = recipes.smoke.config
  t.match(card.right, {
    name: 'heart',
    classes: config.classes.map((name, value) => ({ name, value })),
    input: { spacing: config.input.spacing, size: config.input.size },
    normalisation: 'zscore-slice',
    training: {
      recipe: /^smoke \(pipelines\/synthetic\.ts\), \d epochs?, \d+ steps$/,
      data: /^synthetic phantoms/,
    },
    validation: { dice: { RV: Number, MYO: Number, LV: Number } },
  })
  const best = await readCheckpoint(join(run, 'best.ckpt'), Progress)()
  t.same(
    E.isRight(best) && best.right.meta.validation?.classes,
    card.right.validation?.dice,
    "the best epoch's Dice",
  )

  const named = await maco(
    'export',
    run,
    '-o',
    join(dir, 'models', 'x.onnx'),
    '--name',
    'acdc-v1',
    '--checkpoint',
    'last',
  )
  t.equal(named.code, 0, named.err)
  t.match(JSON.parse(await readFile(join(dir, 'models', 'x.json'), 'utf8')), {
    name: 'acdc-v1',
    training: { recipe: /2 epochs, / },
  })
})

/** A middle slice of the first validation phantom, as the network of `config` sees it. */
const phantomSlice = async (config: TrainConfig) => {
  const cases = await recipes.smoke.cases(config)()
  if (E.isLeft(cases)) throw new Error(cases.left)
  const [w, h] = config.input.size
  const image = preprocessVolume(cases.right.val[0].image, { ...config.input, kind: 'image' })
  return (image.data as Float32Array).slice(3 * w * h, 4 * w * h)
}

/** Class-last logits of tfjs with these weights, and class-first probabilities of the ONNX file. */
const bothModels = async (
  config: TrainConfig,
  weights: Readonly<Record<string, Float32Array>>,
  onnx: string,
  slice: Float32Array,
) => {
  const engine = await loadEngine('cpu')()
  if (E.isLeft(engine)) throw new Error(engine.left)
  const [w, h] = config.input.size
  const spec = networkSpec(config)
  const params = toParams(spec, weights)
  const logits = predictLogits(spec, params, tf.tensor4d(slice, [1, h, w, 1]))
  const tfjs = (await logits.data()) as Float32Array
  tf.dispose([logits, ...Object.values(params)])
  const session = await createSession(new Uint8Array(await readFile(onnx)), { runtime: 'auto' })
  const { probabilities, dims } = await session.run(slice, [1, 1, h, w])
  await session.release()
  return { tfjs, probabilities, dims }
}

t.test('the ONNX model segments a phantom slice exactly as the tfjs model does', async (t) => {
  const out = join(dir, 'parity.onnx')
  t.equal((await maco('export', run, '-o', out)).code, 0)
  const c = await readCheckpoint(join(run, 'best.ckpt'), Progress)()
  if (E.isLeft(c)) throw new Error(c.left)
  const config = c.right.meta.config
  const [w, h] = config.input.size
  const slice = await phantomSlice(config)
  const { tfjs, probabilities, dims } = await bothModels(config, c.right.weights, out, slice)
  t.same(dims, [1, 4, h, w])
  let differ = 0
  const classes = new Set<number>()
  for (let i = 0; i < w * h; i++) {
    const a = [0, 1, 2, 3].reduce((b, k) => (tfjs[i * 4 + k] > tfjs[i * 4 + b] ? k : b), 0)
    const b = [0, 1, 2, 3].reduce(
      (m, k) => (probabilities[k * w * h + i] > probabilities[m * w * h + i] ? k : m),
      0,
    )
    if (a !== b) differ++
    classes.add(a)
  }
  t.equal(differ, 0, 'the same class at every pixel')
  t.ok(classes.size > 1, 'a trained model, not a constant one')
})

t.test('a run trained with --ema exports its weight average', async (t) => {
  const averaged = join(dir, 'run-ema')
  const trainedEma = await maco(
    'train',
    'pipelines/synthetic.ts',
    '--epochs',
    '2',
    '--train-cases',
    '2',
    '--val-cases',
    '1',
    '--ema',
    '0.9',
    '--engine',
    'wasm',
    '--out',
    averaged,
  )
  t.equal(trainedEma.code, 0, trainedEma.err)
  const out = join(dir, 'ema.onnx')
  t.equal((await maco('export', averaged, '-o', out)).code, 0)
  const c = await readCheckpoint(join(averaged, 'best.ckpt'), Progress)()
  if (E.isLeft(c) || !c.right.average) throw new Error('no average in best.ckpt')
  const config = c.right.meta.config
  const [w, h] = config.input.size
  const slice = await phantomSlice(config)
  /** The largest gap between the ONNX probabilities and the softmax of tfjs's logits. */
  const gap = async (weights: Readonly<Record<string, Float32Array>>) => {
    const { tfjs, probabilities } = await bothModels(config, weights, out, slice)
    let worst = 0
    for (let i = 0; i < w * h; i++) {
      const z = [0, 1, 2, 3].map((k) => Math.exp(tfjs[i * 4 + k]))
      const sum = z.reduce((a, b) => a + b, 0)
      for (let k = 0; k < 4; k++)
        worst = Math.max(worst, Math.abs(z[k] / sum - probabilities[k * w * h + i]))
    }
    return worst
  }
  t.ok((await gap(c.right.average)) < 1e-4, 'the ONNX file is the average')
  t.ok((await gap(c.right.weights)) > 1e-3, 'not the raw weights')
})

t.test('a card describes validation only for the weights it scored', async (t) => {
  const c = await readCheckpoint(join(run, 'last.ckpt'), Progress)()
  if (E.isLeft(c)) throw new Error(c.left)
  const sha = 'a'.repeat(64)
  const whole = modelCard('m', c.right, sha)
  t.ok(E.isRight(whole) && whole.right.validation !== undefined)
  const midEpoch = { ...c.right, meta: { ...c.right.meta, stepInEpoch: 1 } }
  const card = modelCard('m', midEpoch, sha)
  t.ok(E.isRight(card) && card.right.validation === undefined)
  t.same(
    modelCard('has space', c.right, sha),
    E.left(
      'invalid model card: name: expected a model name (letters, digits, . _ -), got "has space"',
    ),
  )
})

t.test(
  '--postprocess and --tta are recorded on the card; without them it has neither',
  async (t) => {
    for (const [argv, postprocess, tta] of [
      [['--postprocess', 'largest-component'], 'largest-component', undefined],
      [['--tta', 'dihedral'], undefined, 'dihedral'],
      [[], undefined, undefined],
    ] as const) {
      const out = join(dir, 'post', `m${argv.join('')}.onnx`)
      t.equal((await maco('export', run, '-o', out, ...argv)).code, 0)
      const card = parseModelCard(await readFile(out.replace(/onnx$/, 'json'), 'utf8'))
      if (E.isLeft(card)) return t.fail(card.left)
      t.equal(card.right.postprocess, postprocess, argv.join(' ') || 'no flag')
      t.equal(card.right.tta, tta, argv.join(' ') || 'no flag')
    }
  },
)

t.test('bad usage and bad runs exit 2 with one line', async (t) => {
  await writeFile(join(dir, 'broken.ckpt'), 'nope')
  const cases: [string[], RegExp][] = [
    [[run], /^maco export: missing --out\n$/],
    [[], /^maco export: expected one run folder \(made by maco train\), got 0 argument\(s\)\n$/],
    [[run, '-o', join(dir, 'm.pt')], /^maco export: -o must name an \.onnx file, got .*m\.pt\n$/],
    [
      [join(dir, 'nowhere'), '-o', join(dir, 'm.onnx')],
      /^maco export: no checkpoint at .*nowhere\/best\.ckpt\n$/,
    ],
    [
      [run, '-o', join(dir, 'm.onnx'), '--checkpoint', 'first'],
      /^maco export: --checkpoint must be best or last, got 'first'\n$/,
    ],
    [
      [run, '-o', join(dir, 'm.onnx'), '--opset', '9'],
      /^maco export: --opset must be a valid number, got '9'\n$/,
    ],
    [
      [run, '-o', join(dir, 'm.onnx'), '--postprocess', 'biggest'],
      /^maco export: --postprocess must be none or largest-component, got 'biggest'\n$/,
    ],
    [
      [run, '-o', join(dir, 'm.onnx'), '--tta', 'rotate'],
      /^maco export: --tta must be one of none, flip, dihedral, got 'rotate'\n$/,
    ],
    [
      [run, '-o', join(dir, 'm.onnx'), '--name', '../x'],
      /^maco export: invalid model card: name: /,
    ],
  ]
  for (const [argv, err] of cases) {
    const r = await maco('export', ...argv)
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, err)
  }
})
