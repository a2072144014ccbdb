import t from 'tap'
import { readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { encodeNifti } from '../../src/volume/nifti.ts'
import { volumeOf, type Mat4 } from '../../src/volume/volume.ts'
import { maco } from '../helpers/cli.ts'
import { sharedData } from '../helpers/data.ts'

const affine: Mat4 = [
  [-0.5, 0, 0, 10],
  [0, 0.5, 0, -20],
  [0, 0, 4, 30],
  [0, 0, 0, 1],
]

t.test('--json on a label map: geometry, intensity range and voxels per label', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'label.nii.gz')
  // 24 voxels: twelve 0, six 1, four 3, two 7.
  const data = Uint8Array.from([...Array(12).fill(0), ...Array(6).fill(1), 3, 3, 3, 3, 7, 7])
  writeFileSync(
    path,
    encodeNifti(volumeOf({ dims: [2, 3, 4], data, spacing: [0.5, 0.5, 4], affine }), {
      gzip: true,
    }),
  )
  const r = await maco('inspect', path, '--json')
  t.equal(r.code, 0, r.err)
  t.equal(r.err, '')
  const j = JSON.parse(r.out)
  t.same(j.dims, [2, 3, 4])
  t.same(j.spacing, [0.5, 0.5, 4])
  t.same(j.affine, affine)
  t.equal(j.datatype, 'uint8')
  t.same([j.qformCode, j.sformCode], [1, 1])
  t.same(j.scaling, { slope: 1, inter: 0 })
  // mean = (6 * 1 + 4 * 3 + 2 * 7) / 24 = 32 / 24
  t.same(j.intensity, { min: 0, max: 7, mean: 32 / 24, nonFinite: 0 })
  t.same(j.labels, { 0: 12, 1: 6, 3: 4, 7: 2 })
})

t.test('label counts for every integer type, up to 32 distinct values', async (t) => {
  const dir = t.testdir()
  const cases = [
    Int16Array.of(-5, -5, 0, 2, 2, 2),
    Uint16Array.of(65535, 0, 0, 0, 1, 1),
    Int32Array.of(-70000, 0, 0, 100000, 100000, 100000),
  ]
  const expected = [
    { '-5': 2, 0: 1, 2: 3 },
    { 0: 3, 1: 2, 65535: 1 },
    { '-70000': 1, 0: 2, 100000: 3 },
  ]
  for (const [i, data] of cases.entries()) {
    const path = join(dir, `labels${i}.nii`)
    writeFileSync(path, encodeNifti(volumeOf({ dims: [3, 2, 1], data, spacing: [1, 1, 1] })))
    t.same(
      JSON.parse((await maco('inspect', path, '--json')).out).labels,
      expected[i],
      data.constructor.name,
    )
  }
  for (const [distinct, counted] of [
    [32, true],
    [33, false],
  ] as const) {
    const path = join(dir, `distinct${distinct}.nii`)
    const data = Int16Array.from({ length: 66 }, (_, i) => (i % distinct) - 10)
    writeFileSync(path, encodeNifti(volumeOf({ dims: [66, 1, 1], data, spacing: [1, 1, 1] })))
    const labels = JSON.parse((await maco('inspect', path, '--json')).out).labels
    t.equal(
      labels === null ? 0 : Object.keys(labels).length,
      counted ? 32 : 0,
      `${distinct} values`,
    )
  }
})

t.test('intensities are real values; images with many values have no label counts', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'image.nii')
  const data = Uint16Array.from({ length: 40 }, (_, i) => i * 100) // 0 .. 3900
  const v = volumeOf({
    dims: [5, 8, 1],
    data,
    spacing: [1, 1, 1],
    scaling: { slope: 0.5, inter: -100 },
  })
  writeFileSync(path, encodeNifti(v))
  const j = JSON.parse((await maco('inspect', path, '--json')).out)
  // real = stored / 2 - 100: min -100, max 1850, mean of 0..3900 step 100 is 1950 -> 875
  t.same(j.intensity, { min: -100, max: 1850, mean: 875, nonFinite: 0 })
  t.equal(j.labels, null)
})

t.test('NaN voxels are counted apart and left out of the range', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'float.nii')
  const data = Float32Array.of(1, NaN, 3, Infinity, -2, 0)
  writeFileSync(path, encodeNifti(volumeOf({ dims: [3, 2, 1], data, spacing: [1, 1, 1] })))
  const j = JSON.parse((await maco('inspect', path, '--json')).out)
  t.same(j.intensity, { min: -2, max: 3, mean: 0.5, nonFinite: 2 })
  t.equal(j.labels, null, 'float data is not a label map')
})

t.test('without --json: a short table', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'scribble.nii.gz')
  const data = Uint8Array.from([0, 0, 4, 4, 4, 1])
  writeFileSync(
    path,
    encodeNifti(volumeOf({ dims: [3, 2, 1], data, spacing: [1.37, 1.37, 10] }), { gzip: true }),
  )
  const r = await maco('inspect', path)
  t.equal(r.code, 0)
  t.match(r.out, /^.*scribble\.nii\.gz\n/)
  t.match(r.out, /\n {2}dims {7}3 x 2 x 1\n/)
  t.match(r.out, /\n {2}spacing {4}1\.37 x 1\.37 x 10 mm\n/)
  t.match(r.out, /\n {2}datatype {3}uint8\n/)
  t.match(r.out, /\n {2}qform {6}code 1 \(scanner\)\n/)
  t.match(r.out, /\n {2}affine {5}1\.37 +0 +0 +0\n/)
  t.match(r.out, /\n {2}labels {5}0: 2, 1: 1, 4: 3\n/)
})

t.test('bad input: exit 2 and one line on stderr', async (t) => {
  const dir = t.testdir({ 'noise.nii.gz': 'definitely not an image', 'cut.nii': '' })
  const cases: [string[], RegExp][] = [
    [['inspect', join(dir, 'missing.nii')], /^maco inspect: .*missing\.nii: no such file\n$/],
    [['inspect', join(dir, 'noise.nii.gz')], /^maco inspect: .*noise\.nii\.gz: not a NIfTI-1 file/],
    [
      ['inspect', join(dir, 'cut.nii')],
      /^maco inspect: .*cut\.nii: not a NIfTI-1 file \(it is empty\)\n$/,
    ],
    [['inspect', dir], /^maco inspect: .*: is a directory, not a file\n$/],
    [['inspect'], /^maco inspect: expected one FILE, got 0 argument\(s\)\n$/],
    [['inspect', 'a.nii', 'b.nii'], /^maco inspect: expected one FILE/],
  ]
  for (const [argv, reason] of cases) {
    const r = await maco(...argv)
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, reason)
    t.equal(r.err.trim().split('\n').length, 1, 'one line')
    t.equal(r.out, '')
  }
})

t.test('--help lists the options', async (t) => {
  const r = await maco('inspect', '--help')
  t.equal(r.code, 0)
  t.match(r.out, /Usage: maco inspect FILE \[--json\]/)
  t.match(r.out, /--json/)
})

const data = sharedData()
t.test(
  'inspect --json succeeds on every file of the shared data',
  { skip: data.skip },
  async (t) => {
    const failures: string[] = []
    let files = 0
    for (const ds of ['acdc', 'mscmr'])
      for (const split of ['train', 'val']) {
        const dir = join(data.path!, ds, split)
        for (const f of readdirSync(dir).filter((n) => n.endsWith('.nii.gz'))) {
          files++
          const r = await maco('inspect', join(dir, f), '--json')
          const j = r.code === 0 ? JSON.parse(r.out) : undefined
          if (
            !j ||
            j.dims.length !== 3 ||
            j.affine.length !== 4 ||
            !(j.intensity.max >= j.intensity.min)
          )
            failures.push(`${ds}/${split}/${f}: exit ${r.code} ${r.err.trim()}`)
          else if (/_(scribble|label|manual)\./.test(f) && j.labels === null)
            failures.push(`${f}: no label counts`)
        }
      }
    t.same(failures, [])
    t.ok(files >= 400, `${files} files inspected`)
  },
)
