import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { budgetOption, defaultWorkers } from '../../src/cli/train.ts'
import * as acdc from '../../pipelines/acdc.ts'
import * as mscmr from '../../pipelines/mscmr.ts'
import { loadEngine } from '../../src/train/engine.ts'
import { childEnv, maco, macoWithCtrlC } from '../helpers/cli.ts'

const SYNTHETIC = 'pipelines/synthetic.ts'
/** Two phantoms (16 slices, 2 steps an epoch at batch 8) and one to validate: seconds. */
const SMALL = ['--train-cases', '2', '--val-cases', '1', '--engine', 'wasm']

/** `maco train --resume` of the run in `out`, with its JSON summary. */
const resumeRun = (out: string) =>
  maco('train', SYNTHETIC, '--out', out, '--resume', '--engine', 'wasm', '--json')

t.test("without --workers a MaCo run takes the recipe's threads where they can help", async (t) => {
  const wasm = await loadEngine('wasm')()
  if (E.isLeft(wasm)) return t.fail(wasm.left)
  const { config } = acdc.recipes.cpu
  const pce = { ...config, loss: { ...config.loss, mcm: false, gc: false } }
  const gpu = { ...wasm.right, name: 'webgpu' as const }
  t.equal(acdc.recipes.cpu.workers, 2, 'the cpu recipe is timed on two cores')
  t.equal(defaultWorkers(acdc.recipes.cpu, config, wasm.right, 2), 2)
  t.equal(defaultWorkers(acdc.recipes.cpu, config, wasm.right, 16), 2, 'no more than asked')
  t.equal(defaultWorkers(acdc.recipes.cpu, config, wasm.right, 1), 1, 'one core')
  t.equal(defaultWorkers(acdc.recipes.cpu, pce, wasm.right, 2), 1, 'one pass a step (no MCM)')
  const ort = { ...wasm.right, name: 'onnxruntime' as const }
  t.equal(
    defaultWorkers(acdc.recipes.cpu, pce, ort, 2),
    2,
    'the threads of that pass on onnxruntime',
  )
  t.equal(defaultWorkers(acdc.recipes.cpu, config, gpu, 2), 1, 'an engine of its own threads')
  t.equal(defaultWorkers({}, config, wasm.right, 2), 1, 'a recipe that names none')
})

t.test("the cpu recipe's 90-minute budget applies unless the flags say otherwise", async (t) => {
  const { cpu, paper } = acdc.recipes
  const flags = (values: Record<string, string>) => ({ values, positionals: [] })
  t.equal(cpu.budget, 90)
  t.equal(paper.budget, undefined, 'the GPU recipe runs all its epochs')
  t.equal(mscmr.recipes.cpu.budget, 90, "MSCMR's cpu recipe has the same cap")
  t.equal(mscmr.recipes.paper.budget, undefined)
  t.equal(budgetOption(flags({}), cpu), 90)
  t.equal(budgetOption(flags({ epochs: '60' }), cpu), undefined, '--epochs N means N epochs')
  t.equal(budgetOption(flags({ epochs: '60', budget: '120' }), cpu), 120, 'both: N at most')
  t.equal(budgetOption(flags({ budget: '0' }), cpu), undefined, '--budget 0: none')
  t.equal(budgetOption(flags({ budget: '45' }), paper), 45)
})

t.test('bad usage and bad input exit 2 with one line', async (t) => {
  const dir = t.testdir({
    'empty.ts': 'export const nothing = 1\n',
    'broken.ts': 'export const recipes = {',
    'notes.txt': '',
  })
  const cases: [string[], RegExp][] = [
    [
      [],
      /^maco train: expected one pipeline file \(e\.g\. pipelines\/acdc\.ts\), got 0 argument\(s\)\n$/,
    ],
    [[join(dir, 'nope.ts')], /^maco train: no pipeline file .*nope\.ts\n$/],
    [
      [join(dir, 'notes.txt')],
      /^maco train: the pipeline must be a \.ts or \.js module, got .*notes\.txt\n$/,
    ],
    [
      [join(dir, 'empty.ts')],
      /^maco train: .*empty\.ts exports no recipes \(export const recipes = \{ name: recipe \}\)\n$/,
    ],
    [[join(dir, 'broken.ts')], /^maco train: cannot load .*broken\.ts: /],
    [
      [SYNTHETIC, '--recipe', 'huge'],
      /^maco train: pipelines\/synthetic\.ts has no recipe 'huge' \(it has smoke\)\n$/,
    ],
    [
      [SYNTHETIC, '--loss', 'dice'],
      /^maco train: --loss must be one of pce, pce\+mcm, pce\+cpl, maco, got 'dice'\n$/,
    ],
    [[SYNTHETIC, '--epochs', '0'], /^maco train: --epochs must be a valid number, got '0'\n$/],
    [[SYNTHETIC, '--shrink', '2'], /^maco train: --shrink must be a valid number, got '2'\n$/],
    [[SYNTHETIC, '--ema', '1'], /^maco train: --ema must be a valid number, got '1'\n$/],
    [[SYNTHETIC, '--budget=-5'], /^maco train: --budget must be a valid number, got '-5'\n$/],
    [
      [SYNTHETIC, '--supervision', 'label', '--loss', 'maco'],
      /^maco train: supervision 'label' trains with cross-entropy/,
    ],
    [
      [SYNTHETIC, '--engine', 'tensorflow', '--out', join(dir, 'run')],
      /^maco train: engine 'tensorflow' is not available: @tensorflow\/tfjs-node is not installed/,
    ],
    [
      [SYNTHETIC, '--resume', '--out', join(dir, 'none')],
      /^maco train: nothing to resume in .*none \(no config\.json\)\n$/,
    ],
    [
      [SYNTHETIC, '--resume', '--epochs', '3'],
      /^maco train: --resume continues a run with its own config: drop --epochs\n$/,
    ],
    [
      [SYNTHETIC, '--resume', '--crop', '32', '--ema', '0.99'],
      /^maco train: --resume continues a run with its own config: drop --crop, --ema\n$/,
    ],
    [
      [SYNTHETIC, '--resume', '--budget', '90'],
      /^maco train: --resume continues a run with its own config: drop --budget\n$/,
    ],
    [[SYNTHETIC, '--bogus'], /^maco train: Unknown option '--bogus'/],
  ]
  for (const [argv, err] of cases) {
    const r = await maco('train', ...argv)
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, err)
    t.equal(r.err.trim().split('\n').length, 1, 'one line')
  }
  const help = await maco('train', '--help')
  t.equal(help.code, 0)
  for (const option of [
    '--recipe',
    '--data',
    '--out',
    '--resume',
    '--engine',
    '--workers',
    '--loss',
    '--supervision',
    '--shrink',
    '--crop',
    '--ema',
    '--budget',
    '--train-cases',
    '--json',
  ])
    t.match(help.out, option)
})

t.test(
  '--workers above 1 with an engine that is not single-threaded is bad usage',
  { skip: E.isLeft(await loadEngine('webgpu')()) && 'no webgpu engine here' },
  async (t) => {
    const r = await maco('train', SYNTHETIC, '--engine', 'webgpu', '--workers', '2')
    t.equal(r.code, 2)
    t.equal(
      r.err,
      "maco train: --workers 2 is for the single-threaded engines (onnxruntime, wasm, cpu); 'webgpu' runs in one process\n",
    )
  },
)

t.test('a missing dataset is bad input, not a crash', async (t) => {
  const dir = t.testdir({
    'acdc-like.ts': `
      import { datasetRecipe } from '${resolve('src/train/recipe.ts')}'
      import { acdcDataset } from '${resolve('src/data/acdc.ts')}'
      import { recipes as synthetic } from '${resolve(SYNTHETIC)}'
      export const recipes = { tiny: datasetRecipe({ summary: 't', config: synthetic.smoke.config, defaultDir: 'nowhere', open: (d, s) => acdcDataset(d, s as 'train') }) }
    `,
  })
  const r = await maco(
    'train',
    join(dir, 'acdc-like.ts'),
    '--data',
    join(dir, 'missing'),
    '--out',
    join(dir, 'run'),
    '--engine',
    'cpu',
  )
  t.equal(r.code, 2)
  t.match(r.err, /engine: cpu \(asked for\)\n/)
  t.match(r.err, /maco train: .*missing\/splits\.json: no such file\n$/)
})

t.test('--budget trains the epochs that fit, and says so; config.json records them', async (t) => {
  const dir = t.testdir()
  const hurried = await maco(
    'train',
    SYNTHETIC,
    ...SMALL,
    '--budget',
    '0.01',
    '--out',
    join(dir, 'a'),
  )
  t.equal(hurried.code, 2)
  t.match(
    hurried.err,
    /\nmaco train: a budget of 1 s fits no epoch here: \d+ s went to loading the data and timing, and an epoch takes about [\d.]+ (s|min) \(2 steps of \d+\.\d\d s and a validation of \d+\.\d s\); give a larger --budget, or --budget 0 for none\n$/,
  )
  t.notMatch(hurried.err, /\n\s+at /, 'no stack trace')
  t.notOk(existsSync(join(dir, 'a', 'last.ckpt')), 'nothing trained')

  // Far more epochs than 40 seconds allow: the run stops being planned at what fits. The budget
  // counts from the start, data loading and timing included (32 s of 20 once on a loaded CI).
  const out = join(dir, 'b')
  const r = await maco(
    'train',
    SYNTHETIC,
    ...SMALL,
    '--epochs',
    '100000',
    '--budget',
    String(40 / 60),
    '--out',
    out,
    '--json',
  )
  t.equal(r.code, 0, r.err)
  const fit =
    /budget: (\d+) of 100000 epochs fit in 0.67 min here \(a step \d+\.\d\d s, an epoch about [\d.]+ (s|min) with its validation\); --budget 0 trains them all\n/.exec(
      r.err,
    )
  t.ok(fit, r.err)
  const epochs = Number(fit?.[1])
  t.ok(epochs >= 1 && epochs < 100000)
  const run = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'))
  t.equal(run.config.epochs, epochs, 'config.json holds the run that was fitted')
  // Should the machine turn slower than when timed (parallel test files load this one), the
  // run stops short of the fitted epochs rather than overrun, and says so.
  const summary = JSON.parse(r.out) as { status: string; epochs: number; steps: number }
  t.equal(summary.steps, 2 * summary.epochs)
  if (summary.status === 'finished') t.equal(summary.epochs, epochs)
  else {
    t.equal(summary.status, 'out of time')
    t.ok(summary.epochs >= 1 && summary.epochs < epochs)
    t.match(
      r.err,
      `budget: the 0.67 min ran out after ${summary.epochs} of ${epochs} epochs, which ran slower than timed; the run is whole to there, and maco train ${SYNTHETIC} --out ${out} --resume trains the rest\n`,
    )
  }
  const seconds = (await readFile(join(out, 'metrics.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { seconds?: number })
    .reduce((sum, l) => sum + (l.seconds ?? 0), 0)
  t.ok(seconds <= 40, `the epochs took ${seconds.toFixed(1)} s of the 40`)

  // --epochs alone turns the recipe's budget off; an explicit budget that fits them all keeps them.
  const capped = await maco(
    'train',
    SYNTHETIC,
    ...SMALL,
    '--epochs',
    '1',
    '--budget',
    '10',
    '--out',
    join(dir, 'c'),
  )
  t.equal(capped.code, 0, capped.err)
  t.match(
    capped.err,
    /budget: 1 of 1 epochs fit in 10 min here \(a step [\d.]+ s, an epoch about [\d.]+ (s|min) with its validation\)\n/,
  )
})

t.test(
  'a run: config.json, checkpoints, metrics, plot; a finished run resumes to nothing',
  async (t) => {
    const dir = t.testdir()
    const out = join(dir, 'run')
    const r = await maco(
      'train',
      SYNTHETIC,
      '--recipe',
      'smoke',
      '--epochs',
      '1',
      '--loss',
      'pce',
      ...SMALL,
      '--out',
      out,
      '--json',
    )
    t.equal(r.code, 0, r.err)
    t.match(
      r.err,
      /^engine: wasm \(asked for\)\ntraining pipelines\/synthetic\.ts recipe 'smoke' in /,
    )
    t.match(r.err, /data: synthetic phantoms \(seed 1\): 2 train, 1 val/)
    t.match(r.err, /epoch 1\/1: loss \d\.\d{4}, val Dice \d\.\d{3} \(RV /)
    const summary = JSON.parse(r.out)
    t.match(summary, {
      runDir: out,
      recipe: 'smoke',
      engine: 'wasm',
      workers: 1,
      epochs: 1,
      steps: 2,
      best: { epoch: 1 },
    })
    const run = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'))
    t.match(run, {
      pipeline: SYNTHETIC,
      recipe: 'smoke',
      dataDir: null,
      config: {
        epochs: 1,
        loss: { pce: true, mcm: false, gc: false, cpl: false },
        data: { trainCases: 2, valCases: 1 },
      },
    })
    for (const f of ['last.ckpt', 'best.ckpt', 'metrics.jsonl', 'plot.svg'])
      t.ok(existsSync(join(out, f)), f)

    const again = await maco('train', SYNTHETIC, '--out', out)
    t.equal(again.code, 2)
    t.match(again.err, /already holds a run: add --resume to continue it, or pick another --out/)
    const resumed = await resumeRun(out)
    t.equal(resumed.code, 0, resumed.err)
    t.match(JSON.parse(resumed.out), { epochs: 1, steps: 2 })
    t.match(resumed.err, /resuming pipelines\/synthetic\.ts recipe 'smoke'/)

    await writeFile(join(out, 'last.ckpt'), 'garbage')
    const corrupt = await maco('train', SYNTHETIC, '--out', out, '--resume', '--engine', 'wasm')
    t.equal(corrupt.code, 1)
    t.match(
      corrupt.err,
      /maco train: checkpoint .*last\.ckpt is unusable: not a MaCo checkpoint\n$/,
    )
  },
)

t.test('a recipe without validation cases trains, the last epoch counting as best', async (t) => {
  const dir = t.testdir({
    'unscored.ts': `
      import { recipes as synthetic } from '${resolve(SYNTHETIC)}'
      const { smoke } = synthetic
      export const recipes = {
        unscored: { ...smoke, cases: (c, d) => async () => {
          const r = await smoke.cases(c, d)()
          return r._tag === 'Right' ? { ...r, right: { ...r.right, val: [] } } : r
        } },
      }
    `,
  })
  const out = join(dir, 'run')
  const r = await maco('train', join(dir, 'unscored.ts'), '--epochs', '1', ...SMALL, '--out', out)
  t.equal(r.code, 0, r.err)
  t.match(r.err, /prepared 16 training slices, 0 validation volumes\n/)
  t.match(r.err, /\nno validation set: keeping the last epoch as best\n/)
  t.match(r.err, /\nepoch 1\/1: loss \d\.\d{4}, [\d.]+s\n/)
  t.equal(
    r.out,
    `trained 1 epochs (2 steps) in ${out}; no validation set: best.ckpt is the last epoch\n`,
  )
  t.same(await readFile(join(out, 'best.ckpt')), await readFile(join(out, 'last.ckpt')))
})

t.test(
  'Ctrl-C writes a checkpoint and exits 130 with how to resume; --resume finishes',
  async (t) => {
    const out = join(t.testdir(), 'run')
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'src/cli/main.ts',
        'train',
        SYNTHETIC,
        '--epochs',
        '3',
        ...SMALL,
        '--out',
        out,
      ],
      // No coverage from this child (see childEnv); the in-process test below covers this code.
      { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() },
    )
    let err = ''
    let sent = false
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString()
      if (!sent && /epoch 1\/3 1\/2/.test(err)) {
        sent = true
        child.kill('SIGINT')
      }
    })
    const code = await new Promise<number | null>((done) => child.on('close', done))
    if (code !== 130) t.comment(err)
    t.equal(code, 130, 'exit code 130')
    t.match(err, /stopping after this step/)
    t.match(
      err,
      new RegExp(
        `stopped after step \\d \\([01] of 3 epochs done\\); resume with: maco train ${SYNTHETIC} --out ${out} --resume\\n$`,
      ),
    )
    t.ok(existsSync(join(out, 'last.ckpt')))
    const resumed = await resumeRun(out)
    t.equal(resumed.code, 0, resumed.err)
    t.match(JSON.parse(resumed.out), { epochs: 3, steps: 6 })
  },
)

t.test('an in-process run stopped by Ctrl-C returns 130 with one line, and resumes', async (t) => {
  const out = join(t.testdir(), 'run')
  // At the first step's progress line the training is under way.
  const { code, err, sent, handlerGone } = await macoWithCtrlC(
    /epoch 1\/3 1\/2/,
    ...['train', SYNTHETIC, '--epochs', '3', ...SMALL, '--out', out],
  )
  t.ok(sent, 'Ctrl-C was sent during the training')
  t.equal(code, 130, 'exit code 130, returned rather than the process ended')
  t.equal(
    err.trimEnd().split('\n').at(-1),
    `maco train: stopped after step 1 (0 of 3 epochs done); resume with: maco train ${SYNTHETIC} --out ${out} --resume`,
    'one line that says how to resume',
  )
  t.match(err, /\nstopping after this step \(Ctrl-C again to quit without a checkpoint\)\n/)
  t.ok(handlerGone, 'the Ctrl-C handler is gone')
  t.ok(existsSync(join(out, 'last.ckpt')), 'a checkpoint to resume from')
  const resumed = await resumeRun(out)
  t.equal(resumed.code, 0, resumed.err)
  t.match(resumed.err, /resuming pipelines\/synthetic\.ts recipe 'smoke'/)
  t.match(JSON.parse(resumed.out), { epochs: 3, steps: 6 })
})

t.test(
  'Ctrl-C before the first step stops there: 130, nothing trained, the same command works',
  async (t) => {
    const ctrlCAt = async (phase: RegExp, args: readonly string[]) => {
      const r = await macoWithCtrlC(phase, 'train', SYNTHETIC, ...args)
      t.ok(r.sent, `Ctrl-C was sent at ${phase}`)
      t.ok(r.handlerGone, 'the Ctrl-C handler is gone')
      return r
    }
    const out = join(t.testdir(), 'run')
    for (const [phase, args] of [
      [/prepare 1\//, ['--epochs', '1']],
      [/timing a few steps/, ['--budget', '5']],
    ] as const) {
      const r = await ctrlCAt(phase, [...SMALL, ...args, '--out', out])
      t.equal(r.code, 130, r.err)
      t.match(r.err, /\nstopping before the first step \(Ctrl-C again to quit at once\)\n/)
      t.equal(
        r.err.trimEnd().split('\n').at(-1),
        'maco train: stopped before the first step; nothing was trained: run the same command again to start',
      )
      t.notMatch(r.err, /epoch 1\//, 'no step was taken')
      t.notOk(existsSync(join(out, 'last.ckpt')), 'no checkpoint')
    }
    const again = await maco('train', SYNTHETIC, ...SMALL, '--epochs', '1', '--out', out, '--json')
    t.equal(again.code, 0, again.err)
    t.match(JSON.parse(again.out), { epochs: 1, steps: 2 })

    const resumed = await ctrlCAt(/prepare 1\//, ['--engine', 'wasm', '--out', out, '--resume'])
    t.equal(resumed.code, 130, resumed.err)
    t.equal(
      resumed.err.trimEnd().split('\n').at(-1),
      `maco train: stopped before the training resumed; the run is as it was: maco train ${SYNTHETIC} --out ${out} --resume`,
    )
  },
)
