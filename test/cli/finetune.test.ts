import * as E from 'fp-ts/lib/Either.js'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { availableParallelism } from 'node:os'
import t, { type Test } from 'tap'
import { parseModelCard } from '../../src/serve/model-card.ts'
import { sha256Hex } from '../../src/serve/models.ts'
import { onnxUNetSpec } from '../../src/train/finetune.ts'
import { maco, macoWithCtrlC } from '../helpers/cli.ts'
import { scribbledScans } from '../helpers/scans.ts'
import { tinyModelDir } from '../helpers/serve-fixtures.ts'

/** A parent (UNet base 4, 3 levels, 32 px at 6 mm) and two scribbled scans plus one labelled. */
const setup = async (dir: string, classes: 4 | 2 = 4) => {
  const models = join(dir, 'models')
  await mkdir(models)
  await tinyModelDir(models, { input: { spacing: [6, 6], size: [32, 32] } })
  const scans = join(dir, 'scans')
  await mkdir(scans)
  await scribbledScans(scans, { scribbled: 2, labelled: 1, classes })
  return { parent: join(models, 'tiny.onnx'), scans, models }
}

const card = async (path: string) => {
  const c = parseModelCard(await readFile(path, 'utf8'))
  if (E.isLeft(c)) throw new Error(c.left)
  return c.right
}

const FAST = ['--epochs', '1', '--batch', '2', '--engine', 'wasm']

t.test('bad usage and bad input exit 2 with one line', async (t) => {
  const dir = t.testdir()
  const { parent, scans, models } = await setup(dir)
  await writeFile(join(models, 'other.onnx'), 'not the file its card describes')
  await writeFile(join(models, 'other.json'), await readFile(join(models, 'tiny.json')))
  const out = ['-o', join(dir, 'new.onnx')]
  const cases: [string[], RegExp][] = [
    [['--data', scans, ...out], /^maco finetune: missing --from\n$/],
    [['--from', parent, '--data', scans], /^maco finetune: missing --out\n$/],
    [
      ['--from', parent, '--data', scans, '-o', 'x.json'],
      /-o must name an \.onnx file, got x\.json/,
    ],
    [
      ['--from', parent, ...out],
      /missing --data \(a folder of scans with scribbles\) or --pipeline/,
    ],
    [
      ['--from', parent, '--data', scans, '--freeze', 'all', ...out],
      /--freeze must be one of encoder, none, got 'all'/,
    ],
    [
      ['--from', join(dir, 'none.onnx'), '--data', scans, ...out],
      /^maco finetune: no model at .*none\.onnx\n$/,
    ],
    [
      ['--from', join(dir, 'scans'), '--data', scans, ...out],
      /no checkpoint at .*scans\/best\.ckpt/,
    ],
    [
      ['--from', join(models, 'other.onnx'), '--data', scans, ...out],
      /other\.onnx is not the file its card .*other\.json describes \(SHA-256\)/,
    ],
    [
      ['--from', parent, '--data', join(dir, 'nope'), ...out],
      /^maco finetune: no such folder: .*nope\n$/,
    ],
    [
      ['--from', parent, '--data', scans, '--scribble', '{case}_s.nii.gz', ...out],
      /no scribbles in .*scans: no file matches '\{case\}_s\.nii\.gz' for a scan/,
    ],
    [['--from', parent, '--data', scans, '--recipe', 'cpu', ...out], /--recipe needs --pipeline/],
    [
      ['--from', parent, '--pipeline', 'pipelines/synthetic.ts', '--classes', 'a,b', ...out],
      /--classes describes a --data folder; the recipe has its own data/,
    ],
    [
      ['--from', parent, '--data', scans, '--classes', 'background', ...out],
      /classes: at least 2 are needed/,
    ],
    [
      ['--from', parent, '--data', scans, '--epochs', '0', ...out],
      /--epochs must be a valid number, got '0'/,
    ],
    [
      ['--from', parent, '--data', scans, '--resume', '--run', join(dir, 'r'), ...out],
      /nothing to resume in .*r \(no last\.ckpt\)/,
    ],
    [['stray', '--from', parent], /unexpected argument 'stray' \(the parent goes in --from\)/],
  ]
  for (const [argv, err] of cases) {
    const r = await maco('finetune', ...argv, '--engine', 'wasm')
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, err)
    t.equal(r.err.trim().split('\n').length, 1, `one line: ${r.err}`)
  }
  // Scribble values are checked while the data is prepared: after the progress lines.
  const data = await maco(
    'finetune',
    ...['--from', parent, '--data', scans, '--classes', 'background,LV', ...out],
  )
  t.equal(data.code, 2)
  t.match(
    data.err,
    /\nmaco finetune: stage 'scribble values' failed on scan0: the scribble holds the value 2: neither a class \(0\.\.1\) nor unlabelled \(4\)\n$/,
  )
  t.notMatch(data.err, /\n\s+at /, 'no stack trace')
  const help = await maco('finetune', '--help')
  t.equal(help.code, 0)
  for (const option of [
    '--from',
    '--out',
    '--data',
    '--val',
    '--pipeline',
    '--recipe',
    '--epochs',
    '--freeze',
    '--classes',
    '--run',
    '--resume',
    '--json',
  ])
    t.match(help.out, option)
})

t.test('fine-tuning writes a new model whose card names its parent, data and Dice', async (t) => {
  const dir = t.testdir()
  const { parent, scans } = await setup(dir)
  const out = join(dir, 'models', 'tiny-lge.onnx')
  const r = await maco(
    'finetune',
    '--from',
    parent,
    '--data',
    scans,
    ...FAST,
    '--run',
    join(dir, 'run'),
    '-o',
    out,
    '--json',
  )
  t.equal(r.code, 0, r.err)
  t.match(r.err, /note: batch norm re-estimated from the folded ONNX weights on 6 training slices/)
  t.match(r.err, /\nepoch 1\/1: loss \d+\.\d{4}, val Dice \d\.\d{3} \(RV /)
  if (availableParallelism() > 1)
    t.match(r.err, / on 2 worker threads\n/, 'the two passes on two cores by default')
  const summary = JSON.parse(r.out) as Record<string, unknown>
  t.match(summary, {
    onnx: out,
    card: join(dir, 'models', 'tiny-lge.json'),
    name: 'tiny-lge',
    parent: 'tiny',
    epochs: 1,
    steps: 3,
    freeze: 'none',
    validation: { RV: Number, MYO: Number, LV: Number },
    parentValidation: { RV: Number, MYO: Number, LV: Number },
  })
  const c = await card(join(dir, 'models', 'tiny-lge.json'))
  const bytes = new Uint8Array(await readFile(out))
  t.equal(c.name, 'tiny-lge')
  t.equal(c.parent, 'tiny', 'lineage')
  t.equal(c.onnx.sha256, await sha256Hex(bytes))
  t.match(c.training, {
    recipe: /^finetune of tiny \(scans in .*scans\), 1 epochs, 3 steps$/,
    data: /scans \(2 volumes with scribbles\), validated on .*scans \(1 volume with labels\)/,
  })
  t.same(Object.keys(c.validation?.dice ?? {}), ['RV', 'MYO', 'LV'])
  t.same(c.input, { spacing: [6, 6], size: [32, 32] })
  t.not(
    c.onnx.sha256,
    (await card(join(dir, 'models', 'tiny.json'))).onnx.sha256,
    'the model changed',
  )
  const spec = onnxUNetSpec(bytes)
  t.ok(E.isRight(spec) && spec.right.options.base === 4 && spec.right.options.classes === 4)

  // The run folder is a parent too; its fine-tune keeps the encoder.
  const again = await maco(
    'finetune',
    '--from',
    join(dir, 'run'),
    '--data',
    scans,
    ...FAST,
    '--freeze',
    'encoder',
    '--run',
    join(dir, 'run2'),
    '-o',
    join(dir, 'again.onnx'),
  )
  t.equal(again.code, 0, again.err)
  t.match(
    again.out,
    /again\.onnx\n.*again\.json\nparent run: val Dice \d\.\d{3} \(RV .*\)\nagain: val Dice \d\.\d{3} \(RV /,
  )
  t.match((await card(join(dir, 'again.json'))).training.recipe, /^finetune of run, encoder frozen/)
  t.equal((await card(join(dir, 'again.json'))).parent, 'run')

  const twice = await maco(
    'finetune',
    '--from',
    parent,
    '--data',
    scans,
    ...FAST,
    '--run',
    join(dir, 'run'),
    '-o',
    out,
  )
  t.equal(twice.code, 2)
  t.match(twice.err, /run already holds a run: add --resume to continue it, or pick another --run/)
})

t.test('another class count: a new output layer, said on stderr; no labels, no Dice', async (t) => {
  const dir = t.testdir()
  const { parent, scans } = await setup(dir, 2)
  const out = join(dir, 'lv.onnx')
  const r = await maco(
    'finetune',
    '--from',
    parent,
    '--data',
    scans,
    '--label',
    '{case}_none.nii.gz',
    '--classes',
    'background,LV',
    '--unlabelled',
    '2',
    ...FAST,
    '--run',
    join(dir, 'run'),
    '-o',
    out,
  )
  t.equal(r.code, 0, r.err)
  t.match(
    r.err,
    /note: new output layer: the parent has 4 classes \(background, RV, MYO, LV\), the data 2 \(background, LV\)/,
  )
  t.match(r.err, /\nno validation set: keeping the last epoch as best\n/)
  t.match(r.err, /\nepoch 1\/1: loss \d+\.\d{4}, [\d.]+s\n/, 'the epoch line has no score')
  t.notMatch(r.err, /val Dice/)
  const c = await card(join(dir, 'lv.json'))
  t.same(c.classes, [
    { name: 'background', value: 0 },
    { name: 'LV', value: 1 },
  ])
  t.same(c.validation, { data: 'none: no labelled volumes, so no validation Dice was measured' })
  t.equal(c.parent, 'tiny')
  const spec = onnxUNetSpec(new Uint8Array(await readFile(out)))
  t.ok(E.isRight(spec) && spec.right.options.classes === 2)
  t.equal(r.out, `${out}\n${join(dir, 'lv.json')}\nlv: no validation Dice (no labelled volumes)\n`)
})

t.test("a pipeline's recipe supplies the data; the grid stays the parent's", async (t) => {
  const dir = t.testdir()
  const { parent } = await setup(dir)
  const r = await maco(
    'finetune',
    '--from',
    parent,
    '--pipeline',
    'pipelines/synthetic.ts',
    '--recipe',
    'smoke',
    '--train-cases',
    '1',
    ...FAST,
    '--run',
    join(dir, 'run'),
    '-o',
    join(dir, 'smoke.onnx'),
    '--json',
  )
  t.equal(r.code, 0, r.err)
  t.match(
    r.err,
    /note: the recipe's grid \(3x3 mm, 64x64 px\) is replaced by the parent's \(6x6 mm, 32x32 px\)/,
  )
  t.match(JSON.parse(r.out), {
    parent: 'tiny',
    steps: 4,
    validation: { RV: Number, MYO: Number, LV: Number },
  })
  const c = await card(join(dir, 'smoke.json'))
  t.match(c.training, {
    recipe: /^finetune of tiny \(pipelines\/synthetic\.ts recipe smoke\), 1 epochs, 4 steps$/,
    data: /^synthetic phantoms \(seed 1\): 1 train, 4 val$/,
  })
  t.same(c.input, { spacing: [6, 6], size: [32, 32] })
})

/** A fine-tune of `epochs` in a fresh folder, Ctrl-C sent when stderr first matches `when`. */
const interrupted = async (t: Test, epochs: number, when: RegExp) => {
  const dir = t.testdir()
  const { parent, scans } = await setup(dir)
  const argv = ['--from', parent, '--data', scans, ...FAST, '--epochs', String(epochs)]
  const run = join(dir, 'run')
  const out = join(dir, 'new.onnx')
  const stopped = await macoWithCtrlC(when, ...['finetune', ...argv, '--run', run, '-o', out])
  return { argv, run, out, ...stopped }
}

t.test('Ctrl-C stops an in-process fine-tune: 130, one line, then --resume ends it', async (t) => {
  const { argv, run, out, code, err, sent, handlerGone } = await interrupted(t, 2, /fine-tune 1\/6/)
  t.ok(sent, 'Ctrl-C was sent during the training')
  t.equal(code, 130)
  t.equal(
    err.trimEnd().split('\n').at(-1),
    `maco finetune: stopped after step 1; continue with the same options and --resume (run folder ${run})`,
  )
  t.ok(handlerGone, 'the Ctrl-C handler is gone')
  t.notOk(existsSync(out), 'no model from a stopped fine-tune')
  const resumed = await maco('finetune', ...argv, '--run', run, '--resume', '-o', out, '--json')
  t.equal(resumed.code, 0, resumed.err)
  t.match(JSON.parse(resumed.out), { epochs: 2, steps: 6 })
})

t.test(
  'Ctrl-C while the data is prepared stops there: 130, nothing trained, the same command works',
  async (t) => {
    const { argv, run, out, code, err, sent, handlerGone } = await interrupted(t, 1, /prepare 1\//)
    t.ok(sent, 'Ctrl-C was sent while preparing')
    t.equal(code, 130, err)
    t.match(err, /\nstopping before the first step \(Ctrl-C again to quit at once\)\n/)
    t.equal(
      err.trimEnd().split('\n').at(-1),
      'maco finetune: stopped before the first step; nothing was trained: run the same command again to start',
    )
    t.notMatch(err, /fine-tune 1\//, 'no step was taken')
    t.ok(handlerGone, 'the Ctrl-C handler is gone')
    t.notOk(existsSync(join(run, 'last.ckpt')), 'no checkpoint')
    t.notOk(existsSync(out), 'no model')
    const again = await maco('finetune', ...argv, '--run', run, '-o', out, '--json')
    t.equal(again.code, 0, again.err)
    t.ok(existsSync(out), 'the same command fine-tunes')
  },
)
