import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { initialWeights, toParams } from '../../src/model/tfjs-unet.ts'
import { readCheckpoint } from '../../src/train/checkpoint.ts'
import { inProcess, type Passes } from '../../src/train/step.ts'
import { networkSpec } from '../../src/train/recipe.ts'
import {
  CHECKPOINTS,
  METRICS_FILE,
  PLOT_FILE,
  Progress,
  learningRate,
  train,
  validate,
  type EpochLine,
  type TrainInputs,
} from '../../src/train/trainer.ts'
import {
  averaging,
  cropped,
  lines,
  prepared,
  tempDir,
  tiny,
  use,
} from '../helpers/tiny-training.ts'
import { bytes } from '../helpers/bytes.ts'

t.test('the poly schedule decays the rate to 0 over the run, as WSL4MIS', async (t) => {
  const o = { ...tiny.optimizer, lr: 1e-3 }
  t.equal(learningRate({ ...o, schedule: 'constant' }, 50, 100), 1e-3)
  t.equal(learningRate({ ...o, schedule: 'poly' }, 0, 100), 1e-3)
  t.ok(Math.abs(learningRate({ ...o, schedule: 'poly' }, 50, 100) - 1e-3 * 0.5 ** 0.9) < 1e-15)
  t.equal(learningRate({ ...o, schedule: 'poly' }, 100, 100), 0)
})

t.test(
  'validation scores the argmax on the native grid: a network that always says LV',
  async (t) => {
    await use('wasm')
    const { val } = await prepared(tiny)
    const spec = networkSpec(tiny)
    // All weights zero but the output bias: every pixel's logits are (0, 0, 0, 5).
    const weights = Object.fromEntries(
      Object.entries(initialWeights(spec, 1)).map(([name, w]) => [
        name,
        name === 'out.bias'
          ? Float32Array.from([0, 0, 0, 5])
          : name.endsWith('.kernel')
            ? new Float32Array(w.length)
            : w,
      ]),
    )
    const params = toParams(spec, weights)
    const v = await validate(spec, params, val, tiny.classes, 4)
    tf.dispose(Object.values(params))
    const label = val[0].label
    const lv = label.filter((x) => x === 3).length
    t.ok(lv > 0 && lv < label.length)
    t.ok(Math.abs(v.classes.LV - (2 * lv) / (lv + label.length)) < 1e-12, 'Dice of an all-LV mask')
    t.equal(v.classes.RV, 0)
    t.equal(v.classes.MYO, 0)
    t.ok(Math.abs(v.valDice - v.classes.LV / 3) < 1e-12)
    t.equal(v.volumes, 1)
  },
)

t.test(
  'with ema, validation scores the weight average, and best.ckpt is chosen by it',
  async (t) => {
    await use('wasm')
    const data = await prepared(averaging)
    const runDir = await tempDir(t)
    const out = await train({ config: averaging, ...data, runDir, resume: false })()
    t.match(E.isRight(out) && out.right, { status: 'finished', validation: { epoch: 2 } })
    const last = await readCheckpoint(join(runDir, CHECKPOINTS.last), Progress)()
    if (E.isLeft(last) || !last.right.average) throw new Error('no average in last.ckpt')
    const spec = networkSpec(averaging)
    const score = async (weights: Readonly<Record<string, Float32Array>>) => {
      const params = toParams(spec, weights)
      const v = await validate(spec, params, data.val, averaging.classes, averaging.batch)
      tf.dispose(Object.values(params))
      return v.valDice
    }
    const average = await score(last.right.average)
    t.equal(last.right.meta.validation?.valDice, average, "the logged Dice is the average's")
    t.not(await score(last.right.weights), average, 'the raw weights score otherwise')
    const { average: avg, weights } = last.right
    t.ok(
      Object.keys(weights).some((name) => !bytes(avg[name]).equals(bytes(weights[name]))),
      'the average is not the raw weights',
    )
    const best = await readCheckpoint(join(runDir, CHECKPOINTS.best), Progress)()
    t.equal(E.isRight(best) && best.right.average !== undefined, true, 'best.ckpt carries it')
  },
)

t.test('a cropped run trains on windows and validates whole slices', async (t) => {
  await use('wasm')
  const shapes = new Set<string>()
  const passes = inProcess(networkSpec(cropped))
  const recording: Passes = {
    ...passes,
    forward: async (params, images, seeds) => {
      for (const image of images) shapes.add(image.shape.join('x'))
      return passes.forward(params, images, seeds)
    },
  }
  const config = { ...cropped, epochs: 1 }
  const data = await prepared(config)
  t.equal(data.train[0].image.length, 32 * 32, 'slices are prepared whole')
  const out = await train({
    config,
    ...data,
    runDir: await tempDir(t),
    resume: false,
    passes: recording,
  })()
  t.same([...shapes], ['2x16x16x1'], 'every pass saw a batch of 16 px windows')
  t.match(E.isRight(out) && out.right, { status: 'finished', validation: { valDice: Number } })
})

t.test('the run folder holds metrics, a plot and both checkpoints', async (t) => {
  await use('wasm')
  const dir = await tempDir(t)
  const config = { ...tiny, epochs: 1 }
  const out = await train({ config, ...(await prepared(config)), runDir: dir, resume: false })()
  t.ok(E.isRight(out))
  t.same(
    (await readdir(dir)).sort(),
    [CHECKPOINTS.best, CHECKPOINTS.last, METRICS_FILE, PLOT_FILE].sort(),
  )
  const ls = await lines(dir)
  t.same(
    ls.map((l) => l.step),
    [3, 4],
    'a step line every 3 steps, then the epoch line',
  )
  t.match(ls[0], {
    epoch: 1,
    loss: Number,
    pce: Number,
    pceMasked: Number,
    mcm: Number,
    gc: Number,
    cpl: Number,
  })
  t.match(ls[1], {
    epoch: 1,
    loss: Number,
    valDice: Number,
    valClassDice: { RV: Number, MYO: Number, LV: Number },
    seconds: Number,
  })
  t.match(await readFile(join(dir, PLOT_FILE), 'utf8'), /^<svg[^]*<\/svg>\n$/)
  const best = await readCheckpoint(join(dir, CHECKPOINTS.best), Progress)()
  t.match(E.isRight(best) && best.right.meta, {
    epoch: 1,
    best: { epoch: 1 },
    validation: { epoch: 1 },
  })
})

t.test('without validation volumes the last epoch is kept as best, unscored', async (t) => {
  await use('wasm')
  const dir = await tempDir(t)
  const { train: slices } = await prepared(tiny)
  const log: string[] = []
  const epochs: EpochLine[] = []
  const out = await train({
    config: tiny,
    train: slices,
    val: [],
    runDir: dir,
    resume: false,
    log: (l) => log.push(l),
    onEpoch: (l) => epochs.push(l),
  })()
  t.same(E.isRight(out) && out.right, {
    status: 'finished',
    epoch: 2,
    step: 8,
    best: null,
    validation: null,
  })
  t.equal(log[0], 'no validation set: keeping the last epoch as best')
  t.match(
    log[1],
    /^epoch 1\/2: loss \d\.\d{4}, \d+\.\ds; about \d+(\.\d)?s left$/,
    'the time left: one more epoch',
  )
  // Under 10 s the time left has a decimal, above it whole seconds.
  const [, took, left] = /, (\d+\.\d)s; about (\d+(?:\.\d)?)s left$/.exec(log[1]) ?? []
  t.ok(Math.abs(Number(left) - Number(took)) <= 0.5, `one epoch of ${took}s left, said ${left}s`)
  t.match(log[2], /^epoch 2\/2: loss \d\.\d{4}, \d+\.\ds$/, 'nothing left after the last')
  t.notOk(
    log.some((l) => /Dice|best so far/.test(l)),
    'no score and no "best so far" in the log',
  )
  t.same(
    epochs.map((l) => 'valDice' in l || 'valClassDice' in l),
    [false, false],
  )
  const ls = await lines(dir)
  t.same(
    ls.map((l) => [l.step, 'seconds' in l]),
    [
      [3, false],
      [4, true],
      [6, false],
      [8, true],
    ],
    'a step line every 3 steps, an epoch line every 4',
  )
  t.notOk(
    ls.some((l) => 'valDice' in l || 'valClassDice' in l),
    'metrics.jsonl has no validation score',
  )
  t.same(
    await readFile(join(dir, CHECKPOINTS.best)),
    await readFile(join(dir, CHECKPOINTS.last)),
    'best.ckpt is last.ckpt, byte for byte',
  )
  const plot = await readFile(join(dir, PLOT_FILE), 'utf8')
  t.match(plot, /Training loss/)
  t.notMatch(plot, /Validation Dice/, 'the plot has no Dice panel')
  t.equal((plot.match(/<polyline /g) ?? []).length, 2, 'logged steps and epoch means only')
})

t.test(
  'a deadline the epochs would pass stops the run after an epoch, resumable; a far one, nothing',
  async (t) => {
    await use('wasm')
    const config = { ...tiny, epochs: 3 }
    const data = await prepared(config)
    const runDir = await tempDir(t)
    const base: TrainInputs = { config, ...data, runDir, resume: false }
    // Due now: after the first epoch, another of its length would end too late.
    const due = await train({ ...base, deadline: performance.now() / 1000 })()
    t.match(E.isRight(due) && due.right, { status: 'out of time', epoch: 1 })
    const resumed = await train({ ...base, resume: true })()
    t.match(E.isRight(resumed) && resumed.right, { status: 'finished', epoch: 3 })

    const far = await train({
      ...base,
      runDir: await tempDir(t),
      deadline: performance.now() / 1000 + 3600,
    })()
    t.match(E.isRight(far) && far.right, { status: 'finished', epoch: 3 })
  },
)

t.test('runs that cannot start say why in one line', async (t) => {
  await use('wasm')
  const data = await prepared(tiny)
  const dir = await tempDir(t)
  const run = (inputs: Partial<TrainInputs>) =>
    train({ config: tiny, ...data, runDir: dir, resume: false, ...inputs })()
  t.same(
    await run({ train: data.train.slice(0, 1) }),
    E.left('1 training slices are fewer than one batch of 2'),
  )
  t.same(await run({ resume: true }), E.left(`no checkpoint at ${join(dir, CHECKPOINTS.last)}`))
  t.ok(E.isRight(await run({ config: { ...tiny, epochs: 1 } })))
  t.same(
    await run({ resume: true, config: { ...tiny, seed: 9 } }),
    E.left(`${dir} was trained with another config; resume it with its own config.json`),
  )
})
