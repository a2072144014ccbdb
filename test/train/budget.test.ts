import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { join } from 'node:path'
import t from 'tap'
import { parameterShapes } from '../../src/model/unet.ts'
import { BUDGET_FILL, budgetText, epochSeconds, fitEpochs } from '../../src/train/budget.ts'
import { readCheckpoint } from '../../src/train/checkpoint.ts'
import { networkSpec } from '../../src/train/recipe.ts'
import {
  CHECKPOINTS,
  Progress,
  probeEpochCost,
  train,
  type TrainInputs,
} from '../../src/train/trainer.ts'
import { prepared, tempDir, tiny, use } from '../helpers/tiny-training.ts'
import { bytes } from '../helpers/bytes.ts'

const cost = { stepSeconds: 1.5, validationSeconds: 30 }

t.test('an epoch costs its steps and one validation', async (t) => {
  t.equal(epochSeconds(cost, 172), 172 * 1.5 + 30)
  t.equal(epochSeconds({ stepSeconds: 0.5, validationSeconds: 0 }, 10), 5)
})

t.test('a slow machine gets the epochs that fit in what is left of the budget', async (t) => {
  // 90 min less 40 s spent: 5360 s, 95% of it 5092 s, over 288 s an epoch: 17.68.
  t.same(
    fitEpochs({ budgetSeconds: 5400, spentSeconds: 40, perEpoch: 172, cost, most: 50 }),
    E.right(17),
  )
  t.equal(BUDGET_FILL, 0.95)
  // Exactly 10 epochs' worth of the filled share: 10, and a second less: 9.
  const exact = (10 * 100) / BUDGET_FILL
  t.same(
    fitEpochs({
      budgetSeconds: exact,
      spentSeconds: 0,
      perEpoch: 10,
      cost: { stepSeconds: 10, validationSeconds: 0 },
      most: 50,
    }),
    E.right(10),
  )
  t.same(
    fitEpochs({
      budgetSeconds: exact - 1,
      spentSeconds: 0,
      perEpoch: 10,
      cost: { stepSeconds: 10, validationSeconds: 0 },
      most: 50,
    }),
    E.right(9),
  )
})

t.test('a fast machine keeps the configured epochs: a budget never adds any', async (t) => {
  const fast = { stepSeconds: 0.4, validationSeconds: 8 }
  t.same(
    fitEpochs({ budgetSeconds: 5400, spentSeconds: 10, perEpoch: 172, cost: fast, most: 50 }),
    E.right(50),
  )
})

t.test('a budget that fits no epoch is refused in one line that says why', async (t) => {
  const none = fitEpochs({ budgetSeconds: 240, spentSeconds: 30, perEpoch: 172, cost, most: 50 })
  t.ok(E.isLeft(none))
  if (E.isRight(none)) return
  t.equal(
    none.left,
    'a budget of 4.0 min fits no epoch here: 30 s went to loading the data and timing, and an ' +
      'epoch takes about 4.8 min (172 steps of 1.50 s and a validation of 30.0 s); give a ' +
      'larger --budget, or --budget 0 for none',
  )
  t.notMatch(none.left, /\n/)
  // Spent past the budget already.
  t.ok(
    E.isLeft(
      fitEpochs({
        budgetSeconds: 60,
        spentSeconds: 90,
        perEpoch: 1,
        cost: { stepSeconds: 0.01, validationSeconds: 0 },
        most: 5,
      }),
    ),
  )
})

t.test('timing an epoch before a run changes nothing of the run and leaks nothing', async (t) => {
  await use('wasm')
  const data = await prepared(tiny)
  const before = tf.memory().numTensors
  const cost = await probeEpochCost({ config: tiny, ...data })
  if (E.isLeft(cost)) return t.fail(cost.left)
  t.ok(cost.right.stepSeconds > 0, `a step ${cost.right.stepSeconds} s`)
  t.ok(cost.right.validationSeconds > 0, `a validation ${cost.right.validationSeconds} s`)
  t.equal(tf.memory().numTensors, before, 'the probe frees what it made')
  const unscored = await probeEpochCost({ config: tiny, train: data.train, val: [] })
  t.same(E.isRight(unscored) && unscored.right.validationSeconds, 0, 'nothing to validate')

  // The same run with and without a probe first: the same weights, bit for bit.
  const plain = await tempDir(t)
  const probed = await tempDir(t)
  const base: TrainInputs = { config: tiny, ...data, runDir: plain, resume: false }
  await train(base)()
  await probeEpochCost({ config: tiny, ...data })
  await train({ ...base, runDir: probed })()
  const a = await readCheckpoint(join(plain, CHECKPOINTS.last), Progress)()
  const b = await readCheckpoint(join(probed, CHECKPOINTS.last), Progress)()
  if (E.isLeft(a) || E.isLeft(b)) return t.fail('checkpoints missing')
  for (const { name } of parameterShapes(networkSpec(tiny)))
    t.same(bytes(b.right.weights[name]), bytes(a.right.weights[name]))

  const wrong = await probeEpochCost({ config: tiny, train: data.train.slice(0, 1), val: [] })
  t.same(wrong, E.left('1 training slices are fewer than one batch of 2'))
})

t.test('a budget reads as given, to two decimals at most', async (t) => {
  t.equal(budgetText(90), '90 min')
  t.equal(budgetText(40 / 60), '0.67 min')
  t.equal(budgetText(1.5), '1.5 min')
})
