import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import tap from 'tap'
import { acdcDataset } from '../../src/data/acdc.ts'
import type { Dataset } from '../../src/data/dataset.ts'
import { listLayout } from '../../src/data/layout.ts'
import { mscmrDataset } from '../../src/data/mscmr.ts'
import { datasetFromConfig } from '../../src/data/open.ts'
import { sharedData } from '../helpers/data.ts'

const acdc = sharedData('acdc')
const mscmr = sharedData('mscmr')

const right = <A>(e: E.Either<string, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left)
  return e.right
}
const problem = (e: E.Either<string, unknown>) => (E.isLeft(e) ? e.left : 'no error')
const patients = (ds: Dataset) => new Set(ds.cases.map((c) => c.case.replace(/_frame\d+$/, '')))

/** A temp folder holding empty files with these names. */
const folder = async (
  t: Pick<typeof tap, 'teardown'>,
  names: readonly string[],
): Promise<string> => {
  const dir = await mkdtemp(join(tmpdir(), 'maco-layout-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  for (const name of names) {
    await mkdir(join(dir, name, '..'), { recursive: true })
    await writeFile(join(dir, name), '')
  }
  return dir
}

tap.test(
  'ACDC: 140 train and 30 val volumes, train35 = 70 volumes of 35 patients',
  { skip: acdc.skip },
  async (t) => {
    const root = acdc.path as string
    const train = right(await acdcDataset(root, 'train')())
    const val = right(await acdcDataset(root, 'val')())
    const train35 = right(await acdcDataset(root, 'train35')())
    t.same([train.cases.length, val.cases.length, train35.cases.length], [140, 30, 70])
    t.same([patients(train).size, patients(val).size, patients(train35).size], [70, 15, 35])
    t.ok(
      [...patients(train35)].every((p) => patients(train).has(p)),
      'train35 is a subset of train',
    )
    t.notOk(
      [...patients(val)].some((p) => patients(train).has(p)),
      'no patient is in train and val',
    )
    t.same(train.classes, ['background', 'RV', 'MYO', 'LV'])
    t.equal(train.unlabelled, 4)
    const first = train35.cases[0]
    t.same(first, {
      case: 'patient001_frame01',
      split: 'train35',
      image: join(root, 'train', 'patient001_frame01_image.nii.gz'),
      scribble: join(root, 'train', 'patient001_frame01_scribble.nii.gz'),
      label: join(root, 'train', 'patient001_frame01_label.nii.gz'),
    })
    const files = [...train.cases, ...val.cases].flatMap((c) => [c.image, c.scribble, c.label])
    t.ok(
      files.every((f) => f !== undefined && existsSync(f)),
      'every case has its three files',
    )
  },
)

tap.test(
  'MSCMR: 25 train subjects with scribbles, 5 val subjects with masks',
  { skip: mscmr.skip },
  async (t) => {
    const root = mscmr.path as string
    const train = right(await mscmrDataset(root, 'train')())
    const val = right(await mscmrDataset(root, 'val')())
    t.same([train.cases.length, val.cases.length], [25, 5])
    t.ok(train.cases.every((c) => c.scribble !== undefined && c.label === undefined))
    t.ok(val.cases.every((c) => c.label !== undefined && c.scribble === undefined))
    t.same(
      train.cases.slice(0, 3).map((c) => c.case),
      ['subject2_DE', 'subject4_DE', 'subject6_DE'],
    )
    t.same(val.cases[0], {
      case: 'subject1_DE',
      split: 'val',
      image: join(root, 'val', 'subject1_DE.nii.gz'),
      label: join(root, 'val', 'subject1_DE_manual.nii.gz'),
    })
  },
)

tap.test('a generic layout: one case per image, other roles where present', async (t) => {
  const dir = await folder(t, [
    'b10_0000.nii.gz',
    'b10_gt.nii.gz',
    'b9_0000.nii.gz',
    'b9_scribble.nii.gz',
    'b9_gt.nii.gz',
    'notes.txt',
  ])
  const cases = right(
    await listLayout(dir, {
      image: '{case}_0000.nii.gz',
      scribble: '{case}_scribble.nii.gz',
      label: '{case}_gt.nii.gz',
    })(),
  )
  t.same(cases, [
    {
      case: 'b9',
      image: join(dir, 'b9_0000.nii.gz'),
      scribble: join(dir, 'b9_scribble.nii.gz'),
      label: join(dir, 'b9_gt.nii.gz'),
    },
    { case: 'b10', image: join(dir, 'b10_0000.nii.gz'), label: join(dir, 'b10_gt.nii.gz') },
  ])
})

tap.test('an image pattern that also matches other roles takes only the images', async (t) => {
  const dir = await folder(t, ['a.nii.gz', 'a_seg.nii.gz', 'b.nii.gz'])
  const cases = right(
    await listLayout(dir, { image: '{case}.nii.gz', label: '{case}_seg.nii.gz' }, 'test')(),
  )
  t.same(
    cases.map((c) => [c.case, c.split, c.label !== undefined]),
    [
      ['a', 'test', true],
      ['b', 'test', false],
    ],
  )
})

tap.test('missing folders, empty folders and bad patterns are errors in words', async (t) => {
  const dir = await folder(t, ['x.txt', 'sub/a_image.nii.gz'])
  t.equal(
    problem(await listLayout(join(dir, 'nope'), { image: '{case}.nii' })()),
    `no such folder: ${join(dir, 'nope')}`,
  )
  t.equal(
    problem(await listLayout(join(dir, 'x.txt'), { image: '{case}.nii' })()),
    `not a folder: ${join(dir, 'x.txt')}`,
  )
  t.equal(
    problem(await listLayout(dir, { image: '{case}_image.nii.gz' })()),
    `no files matching '{case}_image.nii.gz' in ${dir}`,
  )
  t.equal(
    problem(await listLayout(dir, { image: 'image.nii.gz' })()),
    "the image pattern 'image.nii.gz' must contain '{case}' exactly once",
  )
  t.equal(
    problem(await listLayout(dir, { image: '{case}.nii', label: 'seg/{case}.nii' })()),
    "the label pattern 'seg/{case}.nii' must be a file name, not a path",
  )
})

tap.test(
  'ACDC: a split naming patients without files, or no splits.json, is an error',
  async (t) => {
    const dir = await folder(t, ['train/patient001_frame01_image.nii.gz'])
    t.equal(problem(await acdcDataset(dir, 'train')()), `${join(dir, 'splits.json')}: no such file`)
    await writeFile(
      join(dir, 'splits.json'),
      JSON.stringify({ train: ['patient001', 'patient002'], val: [], train35: [] }),
    )
    t.equal(
      problem(await acdcDataset(dir, 'train')()),
      "splits.json lists 1 patient(s) of 'train' with no image files (first: patient002)",
    )
    await writeFile(join(dir, 'splits.json'), JSON.stringify({ train: ['patient001'], val: [] }))
    t.equal(
      problem(await acdcDataset(dir, 'train')()),
      `${join(dir, 'splits.json')}: train35 is missing (expected a list of strings)`,
    )
  },
)

tap.test('datasets from JSON configs', async (t) => {
  const dir = await folder(t, ['s1.nii', 's1_scr.nii'])
  const ds = right(
    await datasetFromConfig({
      kind: 'folder',
      root: dir,
      patterns: { image: '{case}.nii', scribble: '{case}_scr.nii' },
      classes: ['background', 'tumour'],
      unlabelled: 255,
    })(),
  )
  t.same(ds, {
    name: dir.split('/').pop(),
    classes: ['background', 'tumour'],
    unlabelled: 255,
    cases: [{ case: 's1', image: join(dir, 's1.nii'), scribble: join(dir, 's1_scr.nii') }],
  })
  t.equal(
    problem(await datasetFromConfig({ kind: 'acdc', root: dir, split: 'test' })()),
    'split must be one of "train", "val", "train35", got "test"',
  )
  t.equal(
    problem(await datasetFromConfig({ kind: 'folder', root: dir })()),
    'patterns is missing (expected an object)',
  )
  t.equal(
    problem(
      await datasetFromConfig({
        kind: 'folder',
        root: dir,
        patterns: { image: '{case}.nii' },
        unlabelled: -1,
      })(),
    ),
    'unlabelled must be a whole number >= 0, got -1',
  )
  t.equal(
    problem(await datasetFromConfig({ kind: 'nnunet', root: dir })()),
    'unknown kind "nnunet" (one of acdc, mscmr, folder)',
  )
})

tap.test('ACDC and MSCMR by config', { skip: acdc.skip || mscmr.skip }, async (t) => {
  const a = right(await datasetFromConfig({ kind: 'acdc', root: acdc.path, split: 'val' })())
  const m = right(await datasetFromConfig({ kind: 'mscmr', root: mscmr.path })())
  t.same([a.name, a.cases.length, m.name, m.cases.length], ['acdc', 30, 'mscmr', 25])
})
