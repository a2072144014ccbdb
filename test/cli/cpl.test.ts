import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { PNG } from 'pngjs'
import { readNiftiFile, writeNiftiFile } from '../../src/volume/nifti-file.ts'
import { volumeOf, type Mat4, type Volume } from '../../src/volume/volume.ts'
import { maco } from '../helpers/cli.ts'
import { sharedData } from '../helpers/data.ts'

const read = async (path: string): Promise<Volume> => {
  const r = await readNiftiFile(path)()
  if (E.isLeft(r)) throw new Error(r.left)
  return r.right
}

const write = async (path: string, v: Volume): Promise<string> => {
  const r = await writeNiftiFile(path, v)()
  if (E.isLeft(r)) throw new Error(r.left)
  return path
}

const affine: Mat4 = [
  [0, -1.5, 0, 40],
  [1.5, 0, 0, -20],
  [0, 0, 8, 3],
  [0, 0, 0, 1],
]

/** 40 x 30 x 2 scribble, unlabelled 4; slice 0: background at (0, 0), RV at (20, 10); slice 1: nothing. */
const scribble = () => {
  const data = new Uint8Array(40 * 30 * 2).fill(4)
  data[0] = 0
  data[10 * 40 + 20] = 1
  return volumeOf({ dims: [40, 30, 2], data, spacing: [1.5, 1.5, 8], affine })
}

t.test('writes (x, y, z, class) float32 with the scribble geometry, and PNGs', async (t) => {
  const dir = t.testdir()
  const input = await write(join(dir, 'case_scribble.nii.gz'), scribble())
  const out = join(dir, 'out', 'cpl.nii.gz')
  const r = await maco('cpl', input, '-o', out, '--png', join(dir, 'png'))
  t.equal(r.code, 0, r.err)
  t.match(r.out, /40 x 30 x 2 x 4 float32, 2 PNGs/)
  const v = await read(out)
  t.same(v.dims, [40, 30, 2, 4])
  t.equal(v.datatype, 'float32')
  t.ok(v.geometry.affine.every((row, i) => row.every((x, j) => Math.abs(x - affine[i][j]) < 1e-5)))
  const n = 40 * 30 * 2
  const at = (x: number, y: number, z: number, c: number) => v.data[c * n + z * 1200 + y * 40 + x]
  t.equal(at(0, 0, 0, 0), 1)
  t.equal(at(10, 0, 0, 0), Math.fround(Math.exp(-1)))
  t.equal(at(20, 10, 0, 1), 1)
  t.equal(at(20, 20, 0, 1), Math.fround(Math.exp(-1)))
  t.equal(at(39, 29, 0, 0), 0, 'past the floor')
  t.ok(
    v.data.subarray(2 * n, 4 * n).every((x) => x === 0),
    'MYO and LV never drawn',
  )
  t.ok(
    [0, 1].every((c) => v.data.subarray(c * n + 1200, c * n + 2400).every((x) => x === 0)),
    'slice 1 is empty',
  )
  const pngs = readdirSync(join(dir, 'png')).sort()
  t.same(pngs, ['case_scribble_z00.png', 'case_scribble_z01.png'])
  const png = PNG.sync.read(readFileSync(join(dir, 'png', pngs[0])))
  t.ok(png.width > 4 * 40 && png.height > 30, `${png.width} x ${png.height}: four panels`)
})

t.test('options reach the computation; --json summarises', async (t) => {
  const dir = t.testdir()
  const input = await write(join(dir, 's.nii'), scribble())
  const out = join(dir, 'o.nii')
  const r = await maco(
    'cpl',
    input,
    '-o',
    out,
    '--alpha',
    '0.2',
    '--floor',
    '0',
    '--classes',
    '2',
    '--json',
  )
  t.equal(r.code, 0, r.err)
  const summary = JSON.parse(r.out)
  t.same(summary.dims, [40, 30, 2, 2])
  t.same(summary.options, { alpha: 0.2, floor: 0, unlabelled: 4, classes: 2 })
  const v = await read(out)
  t.equal(v.data[39], Math.fround(Math.exp(-0.2 * 39)), 'floor 0 keeps far values')
})

t.test('bad input: one line, exit 2', async (t) => {
  const dir = t.testdir()
  const input = await write(join(dir, 's.nii.gz'), scribble())
  const foreign = scribble()
  ;(foreign.data as Uint8Array)[5] = 9
  const bad = await write(join(dir, 'bad.nii.gz'), foreign)
  const fourD = await write(
    join(dir, '4d.nii.gz'),
    volumeOf({ dims: [4, 4, 1, 2], data: new Uint8Array(32), spacing: [1, 1, 1] }),
  )
  const cases: [string[], RegExp][] = [
    [[join(dir, 'missing.nii.gz'), '-o', join(dir, 'o.nii')], /missing\.nii\.gz: no such file/],
    [[input], /missing --out/],
    [[input, '-o', join(dir, 'o.png')], /must end in \.nii or \.nii\.gz/],
    [[input, '-o', join(dir, 'o.nii'), '--alpha', 'x'], /--alpha must be a valid number/],
    [[input, '-o', join(dir, 'o.nii'), '--floor', '1.5'], /floor must be in \[0, 1\]/],
    [[input, '-o', join(dir, 'o.nii'), '--classes', '2.5'], /classes must be an integer/],
    [
      [bad, '-o', join(dir, 'o.nii')],
      /holds the value 9, neither a class \(0\.\.3\) nor unlabelled \(4\)/,
    ],
    [[input, '-o', join(dir, 'o.nii'), '--unlabelled', '255'], /holds the value 4/],
    [[fourD, '-o', join(dir, 'o.nii')], /2D or 3D label map/],
    [[input, input, '-o', join(dir, 'o.nii')], /expected one scribble file/],
  ]
  for (const [argv, reason] of cases) {
    const r = await maco('cpl', ...argv)
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, reason)
    t.equal(r.err.trim().split('\n').length, 1, 'one line')
  }
})

t.test('--help lists the options', async (t) => {
  const r = await maco('cpl', '--help')
  t.equal(r.code, 0)
  for (const o of ['--out', '--alpha', '--floor', '--unlabelled', '--classes', '--png', '--json'])
    t.match(r.out, o)
})

const acdc = sharedData('acdc/train')
t.test('a real ACDC scribble', { skip: acdc.skip }, async (t) => {
  const dir = t.testdir()
  const input = join(acdc.path!, 'patient001_frame01_scribble.nii.gz')
  const r = await maco('cpl', input, '-o', join(dir, 'cpl.nii.gz'))
  t.equal(r.code, 0, r.err)
  const [s, y] = [await read(input), await read(join(dir, 'cpl.nii.gz'))]
  t.same(y.dims, [...s.dims.slice(0, 3), 4])
  t.same(y.geometry.spacing, s.geometry.spacing)
  const n = s.data.length
  let ones = 0
  let strokes = 0
  for (let i = 0; i < n; i++) {
    if (s.data[i] < 4) strokes++
    for (let c = 0; c < 4; c++) if (y.data[c * n + i] === 1) ones++
  }
  t.equal(ones, strokes, 'value 1 exactly on the scribble pixels of each class')
  t.ok(
    y.data.every((x) => x === 0 || (x >= 0.05 && x <= 1)),
    'values in {0} or [floor, 1]',
  )
})
