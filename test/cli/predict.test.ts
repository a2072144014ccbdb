import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import t, { type Test } from 'tap'
import { loadModel } from '../../src/serve/models.ts'
import { directoryStore } from '../../src/serve/node.ts'
import { createSession } from '../../src/serve/runtime.ts'
import { segmentVolume } from '../../src/serve/segment.ts'
import { keepLargestComponents } from '../../src/volume/components.ts'
import { decodeNifti, encodeNifti } from '../../src/volume/nifti.ts'
import { volumeOf, type Volume } from '../../src/volume/volume.ts'
import { seeded } from '../../src/util/rng.ts'
import { maco } from '../helpers/cli.ts'
import { sharedData } from '../helpers/data.ts'
import { diskVolume, tinyModelDir } from '../helpers/serve-fixtures.ts'

const models = await tinyModelDir(t.testdir({ in: {}, out: {} }), {
  name: 'tiny',
  input: { spacing: [2, 2], size: [64, 64] },
})
const model = join(models, 'tiny.onnx')

const read = async (path: string): Promise<Volume> => {
  const v = decodeNifti(new Uint8Array(await readFile(path)))
  if (E.isLeft(v)) throw new Error(v.left)
  return v.right
}

const sameGeometry = (t: Test, mask: Volume, image: Volume) => {
  t.equal(mask.datatype, 'uint8')
  t.same(mask.dims, image.dims)
  t.same(mask.geometry, image.geometry, 'spacing, affine, qform/sform and codes')
}

t.test(
  'a file in, its mask out: the geometry of the input, the voxels segment gives',
  async (t) => {
    const input = join(models, 'in', 'case7.nii.gz')
    const volume = diskVolume([50, 46, 4], [1.3, 1.3, 7])
    await writeFile(input, encodeNifti(volume, { gzip: true }))
    const out = join(models, 'out', 'case7_mask.nii.gz')
    const r = await maco(
      'predict',
      '--model',
      model,
      '--input',
      input,
      '-o',
      out,
      '--json',
      '--runtime',
      'node',
    )
    t.equal(r.code, 0, r.err)
    const json = JSON.parse(r.out) as {
      model: string
      runtime: string
      cases: { case: string; output: string; dims: number[] }[]
    }
    t.match(json, {
      model: 'tiny',
      runtime: 'onnxruntime-node',
      cases: [{ case: 'case7', output: out, dims: [50, 46, 4] }],
    })
    t.match(r.err, /predict: model tiny on onnxruntime-node/)
    t.match(r.err, /predict 1\/1 100%/)
    const mask = await read(out)
    sameGeometry(t, mask, await read(input))
    const loaded = await loadModel(directoryStore(models), 'tiny', (b) =>
      createSession(b, { runtime: 'node' }),
    )()
    if (E.isLeft(loaded)) return t.fail(loaded.left)
    const session = await loaded.right.session()
    t.same(mask.data, (await segmentVolume({ card: loaded.right.card, session }, volume)).data)
    await session.release()
  },
)

t.test('a folder in: one <case>_pred.nii.gz per image, masks and scribbles skipped', async (t) => {
  const dir = t.testdir({})
  const v = diskVolume([40, 40, 2], [1.5, 1.5, 8])
  await writeFile(join(dir, 'p1_frame01_image.nii.gz'), encodeNifti(v, { gzip: true }))
  await writeFile(join(dir, 'p1_frame01_label.nii.gz'), encodeNifti(v, { gzip: true }))
  await writeFile(join(dir, 'p1_frame01_scribble.nii.gz'), encodeNifti(v, { gzip: true }))
  await writeFile(join(dir, 'subject2_DE.nii'), encodeNifti(v))
  await writeFile(join(dir, 'notes.txt'), 'not an image')
  const out = join(dir, 'pred')
  const r = await maco('predict', '--model', model, '--input', dir, '-o', out, '--runtime', 'web')
  t.equal(r.code, 0, r.err)
  t.same((await readdir(out)).sort(), ['p1_frame01_pred.nii.gz', 'subject2_DE_pred.nii.gz'])
  t.same(r.out.trim().split('\n'), [
    join(out, 'p1_frame01_pred.nii.gz'),
    join(out, 'subject2_DE_pred.nii.gz'),
  ])
  t.match(r.err, /on onnxruntime-web/)
  sameGeometry(
    t,
    await read(join(out, 'subject2_DE_pred.nii.gz')),
    await read(join(dir, 'subject2_DE.nii')),
  )
})

t.test(
  'a real ACDC image: the mask has its dims, affine and pixdim',
  { skip: sharedData('acdc/val').skip },
  async (t) => {
    const input = join(sharedData('acdc/val').path!, 'patient003_frame01_image.nii.gz')
    const out = t.testdir({})
    const r = await maco('predict', '--model', model, '--input', input, '-o', out)
    t.equal(r.code, 0, r.err)
    sameGeometry(t, await read(join(out, 'patient003_frame01_pred.nii.gz')), await read(input))
  },
)

t.test('--postprocess largest-component: each class keeps its largest 3D component', async (t) => {
  // Stripes and noise through these random weights give a mask with many components per class.
  const dir = await tinyModelDir(t.testdir(), {
    name: 'speckle',
    seed: 1,
    input: { spacing: [2, 2], size: [64, 64] },
  })
  const model = join(dir, 'speckle.onnx')
  const input = join(dir, 'noise.nii.gz')
  const rng = seeded(11, 'predict-noise')
  const noise = volumeOf({
    dims: [48, 40, 3],
    data: Float32Array.from(
      { length: 48 * 40 * 3 },
      (_, i) => (Math.floor(i / 8) % 2) * 5 + rng.normal(),
    ),
    spacing: [2, 2, 8],
  })
  await writeFile(input, encodeNifti(noise, { gzip: true }))
  const [raw, cleaned] = [join(dir, 'raw.nii.gz'), join(dir, 'lcc.nii.gz')]
  for (const [out, post] of [
    [raw, 'none'],
    [cleaned, 'largest-component'],
  ]) {
    const r = await maco(
      'predict',
      '--model',
      model,
      '--input',
      input,
      '-o',
      out,
      '--postprocess',
      post,
    )
    t.equal(r.code, 0, r.err)
  }
  const rawMask = await read(raw)
  const expected = keepLargestComponents(rawMask.data as Uint8Array, rawMask.dims, [1, 2, 3])
  t.not(
    Array.from(expected).join(),
    Array.from(rawMask.data).join(),
    'the random model leaves stray blobs',
  )
  t.same((await read(cleaned)).data, expected)
})

t.test(
  '--tta flip makes the model mirror-equivariant: a mirrored scan gets the mirrored mask',
  async (t) => {
    // The volume is on the card's grid (64 x 64 at 2 mm), so preprocessing is the z-score
    // alone and commutes with mirroring; the random network does not, TTA does.
    const dir = await tinyModelDir(t.testdir(), {
      name: 'speckle',
      seed: 3,
      input: { spacing: [2, 2], size: [64, 64] },
    })
    const model = join(dir, 'speckle.onnx')
    const rng = seeded(5, 'predict-tta')
    const [nx, ny, nz] = [64, 64, 2]
    const scan = Float32Array.from(
      { length: nx * ny * nz },
      (_, i) => (i % nx > 20 ? 3 : 0) + rng.normal(),
    )
    const mirror = <A extends Float32Array | Uint8Array>(a: A): A =>
      a.map((_, i) => a[i - (i % nx) + nx - 1 - (i % nx)]) as A
    const masks: Record<string, Uint8Array> = {}
    for (const [name, data] of [
      ['scan', scan],
      ['mirrored', mirror(scan)],
    ] as const) {
      await writeFile(
        join(dir, `${name}.nii.gz`),
        encodeNifti(volumeOf({ dims: [nx, ny, nz], data, spacing: [2, 2, 8] }), { gzip: true }),
      )
      for (const tta of ['none', 'flip']) {
        const out = join(dir, `${name}-${tta}.nii.gz`)
        const args = ['--input', join(dir, `${name}.nii.gz`), '-o', out, '--tta', tta]
        const r = await maco('predict', '--model', model, ...args, '--postprocess', 'none')
        t.equal(r.code, 0, r.err)
        masks[`${name}-${tta}`] = (await read(out)).data as Uint8Array
      }
    }
    t.not(
      Array.from(mirror(masks['scan-none'])).join(),
      Array.from(masks['mirrored-none']).join(),
      'without TTA it is not',
    )
    t.same(mirror(masks['scan-flip']), masks['mirrored-flip'])
    t.not(
      Array.from(masks['scan-flip']).join(),
      Array.from(masks['scan-none']).join(),
      'TTA changes the mask',
    )
  },
)

t.test('bad usage and bad input: exit 2 with one line', async (t) => {
  const dir = t.testdir({ 'bad.nii.gz': 'this is not a volume', empty: {} })
  const cine = join(dir, 'cine.nii')
  await writeFile(
    cine,
    encodeNifti(volumeOf({ dims: [4, 4, 2, 3], data: new Uint8Array(96), spacing: [1, 1, 1] })),
  )
  await writeFile(join(dir, 'lonely.onnx'), await readFile(model))
  const out = join(dir, 'o')
  const cases: [string[], RegExp][] = [
    [['--input', cine, '-o', out], /^maco predict: missing --model\n$/],
    [
      ['--model', join(dir, 'tiny.json'), '--input', cine, '-o', out],
      /--model must be an \.onnx file/,
    ],
    [
      ['--model', join(dir, 'lonely.onnx'), '--input', cine, '-o', out],
      /no model card .*lonely\.json/,
    ],
    [
      ['--model', model, '--input', join(dir, 'nope.nii'), '-o', out],
      /--input .*nope\.nii: no such file or folder/,
    ],
    [['--model', model, '--input', join(dir, 'empty'), '-o', out], /no NIfTI images/],
    [
      ['--model', model, '--input', join(dir, 'bad.nii.gz'), '-o', out],
      /bad\.nii\.gz: not a NIfTI-1 file/,
    ],
    [['--model', model, '--input', cine, '-o', out], /cine\.nii: a 4D volume with 3 frames/],
    [['--model', model, '--input', dir, '-o', join(dir, 'x.nii.gz')], /-o must be a folder/],
    [
      ['--model', model, '--input', cine, '-o', out, '--runtime', 'cuda'],
      /--runtime must be one of auto, web, node/,
    ],
    [
      ['--model', model, '--input', cine, '-o', out, '--postprocess', 'lcc'],
      /--postprocess must be none or largest-component, got 'lcc'/,
    ],
    [
      ['--model', model, '--input', cine, '-o', out, '--tta', 'rotate'],
      /--tta must be one of none, flip, dihedral, got 'rotate'/,
    ],
    [
      ['--model', model, '--input', cine, '-o', out, '--threads', '0'],
      /--threads must be a valid number/,
    ],
  ]
  for (const [args, reason] of cases) {
    const r = await maco('predict', ...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.err, reason)
    t.equal(
      r.err
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('maco predict')).length,
      1,
      'one line',
    )
    t.notMatch(r.err, /    at /)
  }
  t.match((await maco('predict', '--help')).out, /--model MODEL\.onnx/)
})
