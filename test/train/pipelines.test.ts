import * as E from 'fp-ts/lib/Either.js'
import { join } from 'node:path'
import t from 'tap'
import { recipes as acdc } from '../../pipelines/acdc.ts'
import { recipes as mscmr } from '../../pipelines/mscmr.ts'
import { recipes as synthetic } from '../../pipelines/synthetic.ts'
import { runPipeline } from '../../src/pipeline/run.ts'
import { formatStageError } from '../../src/pipeline/stage.ts'
import {
  applyOverrides,
  decodeTrainConfig,
  networkSpec,
  TrainConfig,
} from '../../src/train/recipe.ts'
import { parameterCount } from '../../src/model/unet.ts'
import { sharedData } from '../helpers/data.ts'

t.test('every shipped recipe is a valid config', async (t) => {
  for (const [name, r] of Object.entries({ ...acdc, ...mscmr, ...synthetic }))
    t.same(decodeTrainConfig(TrainConfig.encode(r.config)), E.right(r.config), name)
  t.equal(parameterCount(networkSpec(acdc.paper.config)), 1_813_764, "paper: the paper's UNet")
  t.match(acdc.paper.config, {
    input: { spacing: [1.37, 1.37], size: [256, 256] },
    batch: 4,
    optimizer: { lr: 1e-4 },
    epochs: 300,
  })
  t.match(mscmr.paper.config, {
    input: { spacing: [1.37, 1.37], size: [256, 256] },
    batch: 4,
    optimizer: { lr: 1e-4 },
    epochs: 1000,
  })
})

const data = sharedData()

t.test(
  'ACDC recipes list train35 and val, and prepare real volumes',
  { skip: data.skip },
  async (t) => {
    const root = join(data.path!, 'acdc')
    const config = acdc.cpu.config
    const cases = await acdc.cpu.cases(config, root)()
    if (E.isLeft(cases)) throw new Error(cases.left)
    t.equal(cases.right.train.length, 70, '35 patients, two frames each')
    t.equal(cases.right.val.length, 30)
    const slices = await runPipeline(acdc.cpu.training(config), cases.right.train.slice(0, 1), {
      seed: 1,
    })()
    if (E.isLeft(slices)) throw new Error(formatStageError(slices.left))
    t.ok(slices.right.length >= 6)
    t.ok(slices.right.every((s) => s.image.length === 128 * 128 && s.cpl.length === 4 * 128 * 128))
    const val = await runPipeline(acdc.cpu.validation(config), cases.right.val.slice(0, 1), {
      seed: 1,
    })()
    t.match(val, { right: [{ case: cases.right.val[0].case }] })

    const fourteen = applyOverrides(config, { split: 'train', trainCases: 14 })
    if (E.isLeft(fourteen)) throw new Error(fourteen.left)
    const some = await acdc.cpu.cases(fourteen.right, root)()
    t.equal(E.isRight(some) && some.right.train.length, 28, '14 patients')
    t.same(
      await acdc.cpu.cases({ ...config, data: { ...config.data, split: 'test' } }, root)(),
      E.left("ACDC has no split 'test' (it has train, val, train35)"),
    )
  },
)

t.test(
  'MSCMR recipes: 25 scribbled subjects, 5 labelled for validation',
  { skip: data.skip },
  async (t) => {
    const root = join(data.path!, 'mscmr')
    const cases = await mscmr.cpu.cases(mscmr.cpu.config, root)()
    t.match(cases, { right: { train: { length: 25 }, val: { length: 5 } } })
    const label = applyOverrides(mscmr.cpu.config, { supervision: 'label' })
    if (E.isLeft(label)) throw new Error(label.left)
    t.match(await mscmr.cpu.cases(label.right, root)(), {
      left: /split 'train': case subject\d+_DE has no label file$/,
    })
  },
)
