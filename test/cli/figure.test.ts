import t from 'tap'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { PNG } from 'pngjs'
import { writeNiftiFile } from '../../src/volume/nifti-file.ts'
import { volumeOf, type Volume } from '../../src/volume/volume.ts'
import { maco } from '../helpers/cli.ts'
import { sharedData } from '../helpers/data.ts'

const write = async (path: string, v: Volume): Promise<string> => {
  const r = await writeNiftiFile(path, v)()
  if (E.isLeft(r)) throw new Error(r.left)
  return path
}

/** 20 x 16 x 5 at 2 mm: a ramp image, LV label in slices 1..3 at x >= 10, a scribble stroke. */
const files = async (dir: string) => {
  const n = 20 * 16
  const image = Uint16Array.from({ length: n * 5 }, (_, i) => i % 20)
  const label = Uint8Array.from({ length: n * 5 }, (_, i) => {
    const z = Math.floor(i / n)
    return z >= 1 && z <= 3 && i % 20 >= 10 ? 3 : 0
  })
  const scribble = Uint8Array.from({ length: n * 5 }, (_, i) => (i % n === 0 ? 0 : 4))
  const at = (name: string, data: Uint16Array | Uint8Array, dims = [20, 16, 5]) =>
    write(join(dir, name), volumeOf({ dims, data, spacing: [2, 2, 8] }))
  return {
    image: await at('case_image.nii.gz', image),
    label: await at('case_label.nii.gz', label),
    scribble: await at('case_scribble.nii.gz', scribble),
    small: await at('small.nii.gz', label.subarray(0, n * 4), [20, 16, 4]),
  }
}

t.test('--help lists every option and the orientation', async (t) => {
  const r = await maco('figure', '--help')
  t.equal(r.code, 0)
  for (const o of ['--image', '--scribble', '--label', '--pred', '--slice ', '--slices', '--out'])
    t.match(r.out, o)
  t.match(r.out, '--title')
  t.match(r.out, /x to the\s+right and y down/)
  t.match((await maco('--help')).out, /figure\s+a PNG of slices/)
})

t.test('writes a PNG: a row per slice, a column per layer', async (t) => {
  const dir = t.testdir()
  const f = await files(dir)
  const out = join(dir, 'fig', 'case.png')
  const r = await maco(
    'figure',
    '--image',
    f.image,
    '--scribble',
    f.scribble,
    '--label',
    f.label,
    '--pred',
    `MaCo=${f.label}`,
    '--pred',
    f.label,
    '-o',
    out,
    '--json',
  )
  t.equal(r.code, 0, r.err)
  const j = JSON.parse(r.out)
  t.same(j.slices, [1, 2, 3], 'auto: spread over the labelled slices')
  t.same(j.columns, ['image', 'scribble', 'ground truth', 'MaCo', 'prediction 2'])
  t.same(readdirSync(join(dir, 'fig')), ['case.png'], 'no temporary file left')
  const png = PNG.sync.read(readFileSync(out))
  t.same([png.width, png.height], [j.width, j.height])
  // 16 rows at minimum height 200: factor 13, panels 260 x 208; 5 columns and 3 rows fit.
  t.ok(png.width > 5 * 260 && png.height > 3 * 208, `${png.width} x ${png.height}`)
  // The last column of the first row (slice 1), at voxel x = 19: the LV colour (40, 110, 255)
  // over the image column's grey at 0.4, the default mask opacity.
  const rgbAt = (x: number, y: number) => [
    ...png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 3),
  ]
  const [x, y] = [png.width - 4 - 10, png.height - 4 - 2 * (208 + 4) - 100]
  const [grey] = rgbAt(x - 4 * (260 + 4), y)
  t.same(
    rgbAt(x, y),
    [40, 110, 255].map((c) => Math.round(0.6 * grey + 0.4 * c)),
    `LV over grey ${grey}`,
  )
})

t.test('explicit slices; plain output names the file', async (t) => {
  const dir = t.testdir()
  const f = await files(dir)
  const out = join(dir, 'a.png')
  const r = await maco('figure', '--image', f.image, '--slice', '4', '--slice', '0', '-o', out)
  t.equal(r.code, 0, r.err)
  t.match(r.out, new RegExp(`^wrote ${out}: \\d+ x \\d+ px, slices 4, 0; columns image\\n$`))
  const list = await maco('figure', '--image', f.image, '--slices', '1,3', '-o', out, '--json')
  t.same(JSON.parse(list.out).slices, [1, 3])
})

t.test('bad usage and bad input: exit 2 with one line', async (t) => {
  const dir = t.testdir()
  const f = await files(dir)
  const out = join(dir, 'x.png')
  const cases: [string[], RegExp][] = [
    [['-o', out], /missing --image/],
    [['--image', f.image], /missing --out/],
    [['--image', f.image, '-o', join(dir, 'x.jpg')], /--out must end in \.png/],
    [['--image', f.image, '-o', out, 'extra'], /expected options only/],
    [
      ['--image', f.image, '-o', out, '--slice', '1', '--slices', '2'],
      /either --slice or --slices/,
    ],
    [['--image', f.image, '-o', out, '--slice', 'x'], /a slice must be a z index .* got 'x'/],
    [['--image', f.image, '-o', out, '--slices', '1,-2'], /got '-2'/],
    [['--image', f.image, '-o', out, '--slice', '5'], /slice 5 is outside the image's 5 slices/],
    [['--image', f.image, '-o', out, '--min-height', '0'], /--min-height must be a valid number/],
    [['--image', join(dir, 'none.nii'), '-o', out], /none\.nii: no such file/],
    [
      ['--image', f.image, '--pred', f.small, '-o', out],
      /small\.nii\.gz has dims 20x16x4, the image 20x16x5; all volumes must share dims/,
    ],
    [['--image', f.image, '-o', out, '--bogus'], /Unknown option '--bogus'/],
  ]
  for (const [args, why] of cases) {
    const r = await maco('figure', ...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.err, why)
    t.equal(r.err.trim().split('\n').length, 1, 'one line')
    t.equal(r.out, '')
  }
  t.notOk(existsSync(out), 'nothing written')
})

const acdc = sharedData('acdc/val')
t.test(
  'real data: patient003 frame 1 with its scribble and label',
  { skip: acdc.skip },
  async (t) => {
    const base = join(acdc.path!, 'patient003_frame01')
    const out = join(t.testdir(), 'p3.png')
    const r = await maco(
      'figure',
      '--image',
      `${base}_image.nii.gz`,
      '--scribble',
      `${base}_scribble.nii.gz`,
      '--label',
      `${base}_label.nii.gz`,
      '-o',
      out,
      '--json',
    )
    t.equal(r.code, 0, r.err)
    const j = JSON.parse(r.out)
    t.equal(j.slices.length, 3)
    t.ok(j.window[0] < j.window[1] && j.window[0] >= 0 && j.window[1] <= 1, 'window in [0, 1]')
    const png = PNG.sync.read(readFileSync(out))
    // 256 x 256 at 1.5625 mm: no upscale, 3 columns of 256.
    t.ok(png.width > 3 * 256 && png.width < 3 * 256 + 100, `width ${png.width}`)
    t.ok(png.height > 3 * 256 && png.height < 3 * 256 + 100, `height ${png.height}`)
  },
)
