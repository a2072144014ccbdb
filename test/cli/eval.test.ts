import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { classesOption } from '../../src/cli/eval.ts'
import { writeNiftiFile } from '../../src/volume/nifti-file.ts'
import { volumeOf, type Volume } from '../../src/volume/volume.ts'
import { maco } from '../helpers/cli.ts'
import { sharedData } from '../helpers/data.ts'

const write = async (path: string, v: Volume): Promise<string> => {
  const r = await writeNiftiFile(path, v)()
  if (E.isLeft(r)) throw new Error(r.left)
  return path
}

const DIMS = [10, 10, 6] as const
const SPACING = [1.37, 1.37, 5] as const

/** Labels on a 10 x 10 x 6 grid, 1.37 x 1.37 x 5 mm: each value fills [x0, x1) x [y0, y1) on slice z. */
const labels = (
  boxes: [value: number, x0: number, x1: number, y0: number, y1: number, z: number][],
) => {
  const data = new Uint8Array(600)
  for (const [v, x0, x1, y0, y1, z] of boxes)
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) data[z * 100 + y * 10 + x] = v
  return volumeOf({ dims: [...DIMS], data, spacing: [...SPACING] })
}

// case a: prediction = ground truth (RV, MYO, LV present)
const aGt = labels([
  [1, 1, 4, 1, 4, 2],
  [2, 5, 8, 5, 8, 2],
  [3, 5, 8, 1, 4, 3],
])
// case b: RV a one-slice plate predicted one 5 mm slice too high, MYO right, LV absent in both
const bGt = labels([
  [1, 2, 8, 2, 8, 2],
  [2, 0, 2, 0, 2, 0],
])
const bPred = labels([
  [1, 2, 8, 2, 8, 3],
  [2, 0, 2, 0, 2, 0],
])

const folders = async (dir: string) => {
  await write(join(dir, 'gt', 'a_label.nii.gz'), aGt)
  await write(join(dir, 'gt', 'b_label.nii.gz'), bGt)
  await write(join(dir, 'gt', 'b_image.nii.gz'), bGt) // not a case: an image next to the labels
  await write(join(dir, 'pred', 'a_pred.nii.gz'), aGt)
  await write(join(dir, 'pred', 'b_pred.nii.gz'), bPred)
  return { pred: join(dir, 'pred'), gt: join(dir, 'gt') }
}

t.test("folders: per volume and class, and the means, in DESIGN.md's JSON shape", async (t) => {
  const { pred, gt } = await folders(t.testdir())
  const r = await maco('eval', '--pred', pred, '--gt', gt, '--json')
  t.equal(r.code, 0, r.err)
  const j = JSON.parse(r.out)
  t.same(Object.keys(j), ['volumes', 'mean'])
  t.same(
    j.volumes.map((v: { case: string }) => v.case),
    ['a', 'b'],
  )
  const perfect = (name: string, value: number) => ({ name, value, dice: 1, hd95: 0, asd: 0 })
  t.same(j.volumes[0].classes, [perfect('RV', 1), perfect('MYO', 2), perfect('LV', 3)])
  t.same(j.volumes[1].classes[1], perfect('MYO', 2))
  t.same(j.volumes[1].classes[2], perfect('LV', 3), 'absent from both: Dice 1, distances 0')
  const rv = j.volumes[1].classes[0]
  t.equal(rv.dice, 0)
  t.ok(
    Math.abs(rv.hd95 - 5) < 1e-9 && Math.abs(rv.asd - 5) < 1e-9,
    'the plate is one 5 mm slice away',
  )
  t.same(
    j.mean.classes.map((c: { name: string }) => c.name),
    ['RV', 'MYO', 'LV'],
  )
  t.equal(j.mean.classes[0].dice, 0.5)
  t.ok(Math.abs(j.mean.classes[0].hd95 - 2.5) < 1e-9)
  t.ok(Math.abs(j.mean.dice - 2.5 / 3) < 1e-12, 'overall: mean of the class means')
  t.ok(Math.abs(j.mean.asd - 2.5 / 3) < 1e-9)
})

t.test('the table names every case and class, and the means', async (t) => {
  const { pred, gt } = await folders(t.testdir())
  const r = await maco('eval', '--pred', pred, '--gt', gt)
  t.equal(r.code, 0, r.err)
  t.match(r.out, /case\s+class\s+Dice\s+HD95 mm\s+ASD mm/)
  t.match(r.out, /\nb\s+RV\s+0\.0000\s+5\.00\s+5\.00\n/)
  t.match(r.out, /\nmean of 2\s+all\s+0\.8333\s+0\.83\s+0\.83\n/)
})

t.test(
  'two files, chosen labels and names; an empty prediction gets the volume diagonal',
  async (t) => {
    const dir = t.testdir()
    const gt = await write(join(dir, 'x_gt.nii.gz'), bGt)
    const pred = await write(join(dir, 'mine.nii.gz'), labels([[2, 0, 2, 0, 2, 0]]))
    const r = await maco(
      'eval',
      '--pred',
      pred,
      '--gt',
      gt,
      '--labels',
      '1,2',
      '--classes',
      'RV,MYO',
      '--json',
    )
    t.equal(r.code, 0, r.err)
    const j = JSON.parse(r.out)
    t.equal(j.volumes[0].case, 'x')
    const inPlane = 10 * Math.fround(1.37) // pixdim is stored as float32
    const diagonal = Math.hypot(inPlane, inPlane, 30)
    t.same(j.volumes[0].classes[0], {
      name: 'RV',
      value: 1,
      dice: 0,
      hd95: diagonal,
      asd: diagonal,
    })
    t.same(j.volumes[0].classes[1].dice, 1)
    const byValue = await maco('eval', '--pred', pred, '--gt', gt, '--labels', '2', '--json')
    t.same(JSON.parse(byValue.out).volumes[0].classes[0].name, '2', 'named by value')
  },
)

t.test('--classes and --labels', async (t) => {
  t.same(classesOption(), [
    { name: 'RV', value: 1 },
    { name: 'MYO', value: 2 },
    { name: 'LV', value: 3 },
  ])
  t.same(classesOption('A,B'), [
    { name: 'A', value: 1 },
    { name: 'B', value: 2 },
  ])
  t.same(classesOption(undefined, '0,7'), [
    { name: '0', value: 0 },
    { name: '7', value: 7 },
  ])
  t.throws(() => classesOption('A', '1,2'), /names 1 classes but --labels gives 2/)
  t.throws(() => classesOption(undefined, '1,x'), /non-negative integers/)
  t.throws(() => classesOption('A,,B'), /comma-separated/)
  t.throws(() => classesOption(undefined, '1,1'), /twice/)
})

t.test('bad input: one line, exit 2', async (t) => {
  const dir = t.testdir()
  const { pred, gt } = await folders(dir)
  await write(
    join(dir, 'odd', 'a_pred.nii.gz'),
    volumeOf({ dims: [10, 10, 5], data: new Uint8Array(500), spacing: [1, 1, 1] }),
  )
  await write(join(dir, 'odd', 'b_pred.nii.gz'), bPred)
  await write(join(dir, 'fewer', 'a_pred.nii.gz'), aGt)
  await write(join(dir, 'extra', 'a_pred.nii.gz'), aGt)
  await write(join(dir, 'extra', 'b_pred.nii.gz'), aGt)
  await write(join(dir, 'extra', 'c_pred.nii.gz'), aGt)
  mkdirSync(join(dir, 'empty'))
  mkdirSync(join(dir, 'broken'))
  writeFileSync(join(dir, 'broken', 'a_pred.nii.gz'), 'not a nifti')
  writeFileSync(join(dir, 'broken', 'b_pred.nii.gz'), 'not a nifti')
  const file = join(gt, 'a_label.nii.gz')
  const cases: [string[], RegExp][] = [
    [['--pred', join(dir, 'nope'), '--gt', gt], /--pred .*nope: no such file or folder/],
    [['--pred', pred, '--gt', join(dir, 'nope.nii')], /--gt .*nope\.nii: no such file or folder/],
    [['--pred', pred, '--gt', file], /both be files or both be folders/],
    [
      ['--pred', join(dir, 'odd'), '--gt', gt],
      /case a: prediction dims 10x10x5 differ from ground truth 10x10x6/,
    ],
    [['--pred', join(dir, 'fewer'), '--gt', gt], /no prediction for case\(s\) b/],
    [['--pred', join(dir, 'extra'), '--gt', gt], /no ground truth for case\(s\) c/],
    [['--pred', join(dir, 'empty'), '--gt', gt], /empty: no \.nii or \.nii\.gz files/],
    [['--pred', join(dir, 'broken'), '--gt', gt], /a_pred\.nii\.gz: /],
    [['--gt', gt], /missing --pred/],
    [['--pred', pred, '--gt', gt, '--labels', 'x'], /--labels must be/],
    [['--pred', pred, '--gt', gt, 'extra'], /unexpected argument 'extra'/],
  ]
  for (const [argv, reason] of cases) {
    const r = await maco('eval', ...argv)
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, reason)
    t.equal(r.err.trim().split('\n').length, 1, 'one line')
  }
})

t.test('--help lists the options', async (t) => {
  const r = await maco('eval', '--help')
  t.equal(r.code, 0)
  for (const o of ['--pred', '--gt', '--classes', '--labels', '--json']) t.match(r.out, o)
})

const val = sharedData('acdc/val')
t.test(
  'ACDC validation labels against themselves: Dice 1, HD95 0',
  { skip: val.skip },
  async (t) => {
    const r = await maco('eval', '--pred', val.path!, '--gt', val.path!, '--json')
    t.equal(r.code, 0, r.err)
    const j = JSON.parse(r.out)
    t.equal(j.volumes.length, 30)
    t.ok(j.volumes.every((v: { case: string }) => /^patient\d{3}_frame\d{2}$/.test(v.case)))
    t.same({ dice: j.mean.dice, hd95: j.mean.hd95, asd: j.mean.asd }, { dice: 1, hd95: 0, asd: 0 })
  },
)
