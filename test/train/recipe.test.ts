import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { recipes } from '../../pipelines/synthetic.ts'
import { openDataset } from '../../src/data/open.ts'
import { phantomCase } from '../../src/data/phantom.ts'
import { parameterCount } from '../../src/model/unet.ts'
import { runPipeline } from '../../src/pipeline/run.ts'
import { formatStageError } from '../../src/pipeline/stage.ts'
import {
  LOSS_PRESETS,
  TrainConfig,
  applyOverrides,
  datasetRecipe,
  decodeTrainConfig,
  networkSpec,
  selectSubjects,
} from '../../src/train/recipe.ts'
import { writeNiftiFile } from '../../src/volume/nifti-file.ts'

const base = recipes.smoke.config
const encoded = () =>
  JSON.parse(JSON.stringify(TrainConfig.encode(base))) as Record<string, unknown>

t.test('a config decodes from its JSON, and a network follows from it', async (t) => {
  t.same(decodeTrainConfig(encoded()), E.right(base))
  const spec = networkSpec({
    ...base,
    network: { base: 16, levels: 5, dropout: [0.05, 0.1, 0.2, 0.3, 0.5] },
  })
  t.equal(parameterCount(spec), 1_813_764, "the paper's UNet for 4 classes")
})

t.test('config errors are one line in words', async (t) => {
  const bad = (patch: Record<string, unknown>) => {
    const r = decodeTrainConfig({ ...encoded(), ...patch })
    return E.isLeft(r) ? r.left : 'decoded'
  }
  t.equal(bad({ epochs: 0 }), 'epochs must be a whole number >= 1, got 0')
  t.equal(
    bad({ optimizer: { ...base.optimizer, lr: -1 } }),
    'optimizer.lr must be a positive number, got -1',
  )
  t.equal(
    bad({ supervision: 'pixels' }),
    'supervision must be one of "scribble", "label", got "pixels"',
  )
  t.equal(
    bad({ epoch: 3 }),
    "unknown option 'epoch' (options: classes, unlabelled, input, network, data, supervision, shrink, loss, masking, cpl, optimizer, batch, epochs, seed, logEvery, augment, crop, ema)",
  )
  t.equal(
    bad({ input: { spacing: [1.5, 1.5], size: [60, 64] } }),
    'input.size 60x64 must be a multiple of 8 for a 4-level network',
  )
  t.equal(
    bad({ network: { base: 8, levels: 4, dropout: [0.1] } }),
    'network.dropout needs one rate per level (4), got 1',
  )
  t.equal(bad({ unlabelled: 2 }), 'unlabelled (2) must not be a class value (0..3)')
  t.equal(
    bad({ masking: { ...base.masking, patch: 128 } }),
    'masking.patch 128 is larger than the input',
  )
  t.equal(
    bad({ crop: [32, 256] }),
    `crop 32x256 is larger than input.size ${base.input.size.join('x')}`,
  )
  t.match(bad({ crop: [36, 36] }), /^crop 36x36 must be a multiple of \d+ for a \d-level network$/)
  t.equal(
    bad({ crop: [16, 16], masking: { ...base.masking, patch: 32 } }),
    'masking.patch 32 is larger than the crop',
  )
  t.equal(bad({ ema: 1 }), 'ema must be a number between 0 and 1, got 1')
  t.equal(bad({ ema: 0 }), 'ema must be a number between 0 and 1, got 0')
  t.equal(
    bad({ loss: { ...base.loss, pce: false, mcm: false, gc: false, cpl: false } }),
    'loss: every term is off',
  )
  t.match(
    bad({ supervision: 'label' }),
    /^supervision 'label' trains with cross-entropy on the labels/,
  )
  const { epochs: _, ...withoutEpochs } = encoded()
  t.equal(
    decodeTrainConfig(withoutEpochs)._tag === 'Left' &&
      (decodeTrainConfig(withoutEpochs) as E.Left<string>).left,
    'epochs is missing (expected a whole number >= 1)',
  )
})

t.test('overrides: losses, full supervision, shrink, crop, ema, data', async (t) => {
  const over = (o: Parameters<typeof applyOverrides>[1]) => applyOverrides(base, o)
  t.match(over({ loss: 'pce' }), { right: { loss: { ...LOSS_PRESETS.pce, beta: 0.5 } } })
  t.match(over({ loss: 'pce+cpl' }), {
    right: { loss: { pce: true, mcm: false, gc: false, cpl: true } },
  })
  t.match(over({ supervision: 'label' }), {
    right: { supervision: 'label', loss: LOSS_PRESETS.pce },
  })
  t.same(
    over({ supervision: 'label', loss: 'maco' })._tag,
    'Left',
    'labels have no scribbles for GC and CPL',
  )
  t.match(
    over({
      shrink: 0.3,
      trainCases: 5,
      split: 'train35',
      epochs: 2,
      seed: 4,
      lr: 0.01,
      batch: 2,
    }),
    {
      right: {
        shrink: { ratio: 0.3, scope: 'slice' },
        data: { split: 'train35', trainCases: 5 },
        epochs: 2,
        seed: 4,
        batch: 2,
        optimizer: { lr: 0.01, schedule: 'poly' },
      },
    },
  )
  t.same(over({ shrink: 1.5 }), E.left('shrink.ratio must be a number from 0 to 1, got 1.5'))
  t.match(over({ crop: 32 }), { right: { crop: [32, 32] } }, 'a square training crop')
  t.same(over({ crop: 72 }), E.left('crop 72x72 is larger than input.size 64x64'))
  t.match(over({ ema: 0.999 }), { right: { ema: 0.999 } }, 'a weight average')
  const averaged = applyOverrides(base, { ema: 0.99 })
  t.ok(E.isRight(averaged))
  if (E.isRight(averaged)) {
    t.notOk(
      'ema' in (applyOverrides(averaged.right, { ema: 0 }) as E.Right<object>).right,
      '0: off',
    )
    t.match(applyOverrides(averaged.right, {}), { right: { ema: 0.99 } }, 'kept when not asked')
  }
  t.same(over({ ema: 1.5 }), E.left('ema must be a number between 0 and 1, got 1.5'))
})

t.test('subjects are chosen in one fixed order, so smaller sets nest in larger ones', async (t) => {
  const cases = ['p1_f1', 'p1_f2', 'p2_f1', 'p2_f2', 'p3_f1', 'p3_f2', 'p4_f1', 'p4_f2'].map(
    (c) => ({ case: c }),
  )
  const subject = (c: string) => c.split('_')[0]
  const pick = (n?: number) => {
    const r = selectSubjects(cases, n, subject)
    if (E.isLeft(r)) throw new Error(r.left)
    return r.right.map((c) => c.case)
  }
  t.equal(pick().length, 8)
  const two = pick(2)
  const three = pick(3)
  t.equal(two.length, 4, 'both frames of each patient')
  t.ok(two.every((c) => three.includes(c)))
  t.same(new Set(two.map(subject)).size, 2)
  t.same(pick(2), two, 'the same every time')
  t.same(selectSubjects(cases, 5, subject), E.left('asked for 5 subjects, the split has 4'))
})

t.test('a dataset recipe lists, loads and prepares NIfTI cases from a folder', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'maco-recipe-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  for (const [i, split] of [
    [0, 'a'],
    [1, 'a'],
    [2, 'b'],
  ] as const) {
    const c = phantomCase(i, { size: [48, 40], slices: 3, spacing: [4, 4, 8] })
    for (const [role, v] of [
      ['image', c.image],
      ['scribble', c.scribble],
      ['label', c.label],
    ] as const) {
      const written = await writeNiftiFile(join(dir, split, `case${i}_${role}.nii.gz`), v)()
      if (E.isLeft(written)) throw new Error(written.left)
    }
  }
  const open = (root: string, split: string) =>
    openDataset({
      kind: 'folder',
      root: join(root, split),
      patterns: {
        image: '{case}_image.nii.gz',
        scribble: '{case}_scribble.nii.gz',
        label: '{case}_label.nii.gz',
      },
    })
  const config = {
    ...base,
    input: { spacing: [6, 6] as [number, number], size: [32, 32] as [number, number] },
    data: { split: 'a', valSplit: 'b' },
  }
  const recipe = datasetRecipe({ summary: 'test', config, defaultDir: dir, open })
  const cases = await recipe.cases(config)()
  if (E.isLeft(cases)) throw new Error(cases.left)
  t.same(
    cases.right.train.map((c) => c.case),
    ['case0', 'case1'],
  )
  t.same(
    cases.right.val.map((c) => c.case),
    ['case2'],
  )
  t.equal(cases.right.data, `${dir} a (2 volumes), validated on b (1 volume)`)
  const slices = await runPipeline(recipe.training(config), cases.right.train, { seed: 1 })()
  if (E.isLeft(slices)) throw new Error(formatStageError(slices.left))
  t.equal(slices.right.length, 6)
  t.same(Object.keys(slices.right[0]).sort(), ['case', 'cpl', 'gc', 'image', 'scribble', 'slice'])
  t.equal(slices.right[0].image.length, 32 * 32)
  t.equal(slices.right[0].cpl.length, 4 * 32 * 32)
  const val = await runPipeline(recipe.validation(config), cases.right.val, { seed: 1 })()
  t.match(val, { right: [{ case: 'case2', dims: [48, 40, 3], spacing: [4, 4, 8] }] })

  const labelled = {
    ...config,
    ...(applyOverrides(config, { supervision: 'label' }) as E.Right<typeof config>).right,
  }
  const full = await runPipeline(recipe.training(labelled), cases.right.train, { seed: 1 })()
  if (E.isLeft(full)) throw new Error(formatStageError(full.left))
  const values = new Set(full.right.flatMap((s) => [...s.scribble]))
  t.ok(values.has(1) && values.has(2) && values.has(3), 'the labels supervise')
  const labelledPixels = full.right[1].scribble.filter((v) => v !== 4).length
  const scribbledPixels = slices.right[1].scribble.filter((v) => v !== 4).length
  t.ok(
    labelledPixels > 5 * scribbledPixels,
    'every pixel of the FOV is labelled, not a few strokes',
  )

  t.same(
    await recipe.cases({ ...config, data: { split: 'nowhere', valSplit: 'b' } })(),
    E.left(`no such folder: ${join(dir, 'nowhere')}`),
  )
  const imagesOnly = (root: string, split: string) =>
    pipe(
      open(root, split),
      TE.map((d) => ({ ...d, cases: d.cases.map(({ case: c, image }) => ({ case: c, image })) })),
    )
  const noLabels = datasetRecipe({ summary: 'x', config, defaultDir: dir, open: imagesOnly })
  t.same(
    await noLabels.cases(config)(),
    E.left(`${dir} split 'a': case case0 has no scribble file`),
  )
})
