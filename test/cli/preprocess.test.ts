import t from 'tap'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { readNiftiFile, writeNiftiFile } from '../../src/volume/nifti-file.ts'
import {
  applyAffine,
  volumeOf,
  type Mat4,
  type Vec3,
  type Volume,
} from '../../src/volume/volume.ts'
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

/** An oblique (rotated in-plane, flipped y) affine with 1.6 x 1.2 x 8 mm voxels. */
const affine: Mat4 = [
  [1.6 * 0.8, 1.2 * 0.6, 0, -40],
  [1.6 * 0.6, -1.2 * 0.8, 0, 25],
  [0, 0, 8, 12],
  [0, 0, 0, 1],
]

const distance = (p: Vec3, q: Vec3) => Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2])

/** The world point of the centre of the field of view of slice k. */
const fovCentre = (v: Volume, k: number): Vec3 =>
  applyAffine(v.geometry.affine, [(v.dims[0] - 1) / 2, (v.dims[1] - 1) / 2, k])

t.test('an image: 256 x 256 at 1.37 mm, z-scored, FOV centre kept', async (t) => {
  const dir = t.testdir()
  const data = Uint16Array.from({ length: 70 * 50 * 3 }, (_, i) => (i * 37) % 1000)
  const input = await write(
    join(dir, 'image.nii.gz'),
    volumeOf({ dims: [70, 50, 3], data, spacing: [1.6, 1.2, 8], affine }),
  )
  const out = join(dir, 'out', 'image-256.nii.gz')
  const r = await maco('preprocess', input, '-o', out)
  t.equal(r.code, 0, r.err)
  t.match(r.out, /256 x 256 x 3 float32, spacing 1\.37 x 1\.37 x 8 mm/)
  const v = await read(out)
  t.same(v.dims, [256, 256, 3])
  t.equal(v.datatype, 'float32')
  ;[1.37, 1.37, 8].forEach((s, i) =>
    t.ok(Math.abs(v.geometry.spacing[i] - s) < 1e-5, `spacing ${i}`),
  )
  const source = await read(input)
  for (let k = 0; k < 3; k++)
    t.ok(distance(fovCentre(v, k), fovCentre(source, k)) < 1e-3, `slice ${k} centre`)
  const slice = Float32Array.from(v.data.subarray(0, 256 * 256))
  const mean = slice.reduce((a, b) => a + b, 0) / slice.length
  t.ok(Math.abs(mean) < 1e-4, `slice mean ${mean}`)
})

t.test(
  '--label keeps uint8 labels, --fill marks outside the FOV, --json describes it',
  async (t) => {
    const dir = t.testdir()
    const data = Uint8Array.from({ length: 20 * 10 * 2 }, (_, i) => i % 4)
    const input = await write(
      join(dir, 'scribble.nii'),
      volumeOf({ dims: [20, 10, 2], data, spacing: [2, 2, 5], affine }),
    )
    const out = join(dir, 'scribble-32.nii')
    const r = await maco(
      'preprocess',
      input,
      '-o',
      out,
      '--label',
      '--spacing',
      '1',
      '--size',
      '48',
      '--fill',
      '4',
      '--json',
    )
    t.equal(r.code, 0, r.err)
    const summary = JSON.parse(r.out)
    t.same([summary.kind, summary.dims, summary.datatype], ['label', [48, 48, 2], 'uint8'])
    const v = await read(out)
    t.equal(v.datatype, 'uint8')
    t.same([...new Set(v.data)].sort(), [0, 1, 2, 3, 4])
    // 20 x 10 px of 2 mm = 40 x 20 px of 1 mm, centred in 48 x 48: 4 and 14 px of fill
    t.equal(v.data[0], 4)
    t.equal(v.data[14 * 48 + 4], data[0])
    t.equal(v.data[14 * 48 + 3], 4)
    t.equal(v.data[13 * 48 + 4], 4)
    t.equal(v.data[33 * 48 + 43], data[199])
    t.equal(v.data[34 * 48 + 43], 4)
    t.equal(v.data[33 * 48 + 44], 4)
  },
)

t.test('bad usage and bad input: exit 2 with one line', async (t) => {
  const dir = t.testdir({ 'junk.nii.gz': 'not a nifti file' })
  const cases: [string[], RegExp][] = [
    [['preprocess', join(dir, 'junk.nii.gz'), '-o', join(dir, 'o.nii.gz')], /junk\.nii\.gz/],
    [['preprocess', join(dir, 'missing.nii'), '-o', join(dir, 'o.nii.gz')], /no such file/],
    [['preprocess', join(dir, 'junk.nii.gz')], /missing --out/],
    [['preprocess', join(dir, 'junk.nii.gz'), '-o', join(dir, 'o.png')], /must end in \.nii/],
    [
      ['preprocess', join(dir, 'junk.nii.gz'), '-o', join(dir, 'o.nii'), '--spacing', '0'],
      /--spacing/,
    ],
    [['preprocess', join(dir, 'junk.nii.gz'), '-o', join(dir, 'o.nii'), '--size', '1e9'], /--size/],
    [
      ['preprocess', join(dir, 'junk.nii.gz'), '-o', join(dir, 'o.nii'), '--size', '12.5'],
      /--size/,
    ],
    [['preprocess', '-o', join(dir, 'o.nii')], /expected one NIfTI file/],
  ]
  for (const [argv, reason] of cases) {
    const r = await maco(...argv)
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, reason)
    t.equal(r.err.trim().split('\n').length, 1, 'one line')
  }
})

t.test('--help lists the options', async (t) => {
  const r = await maco('preprocess', '--help')
  t.equal(r.code, 0)
  for (const o of ['--out', '--spacing', '--size', '--label', '--fill', '--json']) t.match(r.out, o)
})

const acdc = sharedData('acdc/val')
t.test('a real ACDC image', { skip: acdc.skip }, async (t) => {
  const input = join(acdc.path!, 'patient003_frame01_image.nii.gz')
  const out = join(t.testdir(), 'image.nii.gz')
  const r = await maco('preprocess', input, '-o', out)
  t.equal(r.code, 0, r.err)
  const [source, v] = [await read(input), await read(out)]
  t.same(v.dims, [256, 256, source.dims[2]])
  ;[1.37, 1.37, source.geometry.spacing[2]].forEach((s, i) =>
    t.ok(Math.abs(v.geometry.spacing[i] - s) < 1e-5, `spacing ${i}: ${v.geometry.spacing[i]}`),
  )
  for (const k of [0, source.dims[2] - 1]) {
    const d = distance(fovCentre(v, k), fovCentre(source, k))
    t.ok(d < 1e-3, `slice ${k}: FOV centres ${d} mm apart`)
  }
})
