import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { train } from '../../src/train/trainer.ts'
import { configOf, prepared, tempDir, use } from '../helpers/tiny-training.ts'

t.test('the smoke recipe learns the phantoms: validation Dice well above chance', async (t) => {
  await use('wasm')
  const config = configOf({}, { epochs: 5 })
  const dir = await tempDir(t)
  const dice: number[] = []
  const out = await train({
    config,
    ...(await prepared(config)),
    runDir: dir,
    resume: false,
    onEpoch: (l) => dice.push(l.valDice ?? NaN),
  })()
  t.ok(E.isRight(out))
  t.ok(dice[0] < 0.3, `after one epoch ${dice[0].toFixed(3)}`)
  const best = Math.max(...dice)
  t.ok(best > 0.5, `best mean foreground Dice ${best.toFixed(3)} over ${dice.length} epochs`)
})
