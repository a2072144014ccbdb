import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { join } from 'node:path'
import t from 'tap'
import { parameterShapes } from '../../src/model/unet.ts'
import { readCheckpoint } from '../../src/train/checkpoint.ts'
import { networkSpec } from '../../src/train/recipe.ts'
import { CHECKPOINTS, Progress, train, type TrainInputs } from '../../src/train/trainer.ts'
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

for (const [what, config] of [
  ['whole slices', tiny],
  ['random crops', cropped],
  ['a weight average', averaging],
] as const)
  t.test(
    `a resumed run ends with the same weights as an uninterrupted one, bit for bit (${what})`,
    async (t) => {
      await use('wasm')
      const data = await prepared(config)
      const whole = await tempDir(t)
      const split = await tempDir(t)
      const before = tf.memory().numTensors
      const counts: number[] = []
      const base: TrainInputs = { config, ...data, runDir: whole, resume: false }
      const a = await train({ ...base, onEpoch: () => counts.push(tf.memory().numTensors) })()
      t.same(E.isRight(a) && a.right.status, 'finished')
      t.equal(counts.length, 2)
      t.equal(counts[1], counts[0], 'no tensors pile up from one epoch to the next')
      t.equal(tf.memory().numTensors, before, 'the run frees everything it made')

      let steps = 0
      const stopped = await train({
        ...base,
        runDir: split,
        onStep: () => void steps++,
        stopRequested: () => steps === 3,
      })()
      t.same(E.isRight(stopped) && stopped.right, {
        status: 'stopped',
        epoch: 0,
        step: 3,
        best: null,
        validation: null,
      })
      const resumed = await train({ ...base, runDir: split, resume: true })()
      t.same(E.isRight(resumed) && [resumed.right.status, resumed.right.step], ['finished', 8])
      t.equal(tf.memory().numTensors, before)

      const ckA = await readCheckpoint(join(whole, CHECKPOINTS.last), Progress)()
      const ckB = await readCheckpoint(join(split, CHECKPOINTS.last), Progress)()
      if (E.isLeft(ckA) || E.isLeft(ckB)) throw new Error('checkpoints missing')
      const spec = networkSpec(config)
      for (const { name } of parameterShapes(spec))
        t.same(bytes(ckB.right.weights[name]), bytes(ckA.right.weights[name]), name)
      for (const name of Object.keys(ckA.right.adam.m)) {
        t.same(bytes(ckB.right.adam.m[name]), bytes(ckA.right.adam.m[name]))
        t.same(bytes(ckB.right.adam.v[name]), bytes(ckA.right.adam.v[name]))
      }
      t.equal(ckB.right.adam.step, 8)
      t.equal(ckA.right.average === undefined, config.ema === undefined, 'an average if asked')
      t.same(Object.keys(ckB.right.average ?? {}), Object.keys(ckA.right.average ?? {}))
      for (const [name, a] of Object.entries(ckA.right.average ?? {}))
        t.same(bytes(ckB.right.average?.[name] ?? new Float32Array(0)), bytes(a), `average ${name}`)
      const timeless = (ls: Record<string, unknown>[]) =>
        ls.map(({ seconds: _s, secondsPerStep: _p, ...rest }) => rest)
      t.same(
        timeless(await lines(split)),
        timeless(await lines(whole)),
        'the same metrics, line for line',
      )
    },
  )
