import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import tap from 'tap'
import { pipelineFromConfig } from '../../src/pipeline/config.ts'
import { fieldKinds, loadNifti, slices } from '../../src/pipeline/fields.ts'
import { pick, start, then } from '../../src/pipeline/pipeline.ts'
import { runPipeline } from '../../src/pipeline/run.ts'
import { formatStageError } from '../../src/pipeline/stage.ts'
import { writeNiftiFile } from '../../src/volume/nifti-file.ts'
import { volumeOf } from '../../src/volume/volume.ts'

// A 2 x 3 x 2 image (voxel value = its index) and a label with as many slices.
const image = volumeOf({
  dims: [2, 3, 2],
  data: Float32Array.from({ length: 12 }, (_, i) => i),
  spacing: [1.5, 1.5, 8],
})
const label = volumeOf({
  dims: [2, 3, 2],
  data: new Uint8Array(12).fill(3),
  spacing: [1.5, 1.5, 8],
})
const thin = volumeOf({ dims: [2, 3, 1], data: new Uint8Array(6), spacing: [1.5, 1.5, 8] })

const withFiles = async (
  t: Pick<typeof tap, 'teardown'>,
  files: Record<string, typeof image | typeof label>,
): Promise<string> => {
  const dir = await mkdtemp(join(tmpdir(), 'maco-fields-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  for (const [name, v] of Object.entries(files)) {
    const written = await writeNiftiFile(join(dir, name), v)()
    if (E.isLeft(written)) throw new Error(written.left)
  }
  return dir
}

tap.test('load then slice: one record per slice, real values in place of paths', async (t) => {
  const dir = await withFiles(t, { 'c1_image.nii.gz': image, 'c1_label.nii.gz': label })
  const p = pipe(
    start<{ case: string; image: string; label?: string }>(),
    then(loadNifti('image', 'label')),
    then(slices('image', 'label')),
  )
  t.same(p.stages, ['load image, label', 'slices'])
  const out = await runPipeline(
    p,
    [{ case: 'c1', image: join(dir, 'c1_image.nii.gz'), label: join(dir, 'c1_label.nii.gz') }],
    {},
  )()
  if (E.isLeft(out)) return t.fail(formatStageError(out.left))
  t.same(
    out.right.map((r) => [r.case, r.slice, [...r.image.data], [...r.label.data]]),
    [
      ['c1', 0, [0, 1, 2, 3, 4, 5], [3, 3, 3, 3, 3, 3]],
      ['c1', 1, [6, 7, 8, 9, 10, 11], [3, 3, 3, 3, 3, 3]],
    ],
  )
  t.same(out.right[0].image.spacing, [1.5, 1.5])
})

tap.test('a missing key or file is an error naming the stage, the case and the file', async (t) => {
  const dir = await withFiles(t, {})
  const p = pipe(
    start<{ case: string; image: string; label?: string }>(),
    then(loadNifti('image', 'label')),
  )
  const noLabel = await runPipeline(p, [{ case: 'c2', image: join(dir, 'x.nii') }], {})()
  t.same(
    noLabel,
    E.left({ stage: 'load image, label', case: 'c2', message: "the case has no 'label' file" }),
  )
  const noFile = await runPipeline(p, [{ case: 'c3', image: join(dir, 'x.nii'), label: 'y' }], {})()
  t.same(
    noFile,
    E.left({
      stage: 'load image, label',
      case: 'c3',
      message: `${join(dir, 'x.nii')}: no such file`,
    }),
  )
})

tap.test('volumes with different slice counts cannot be sliced together', async (t) => {
  const p = pipe(
    start<{ case: string; image: typeof image; label: typeof thin }>(),
    then(slices('image', 'label')),
    pick('image'),
  )
  const out = await runPipeline(p, [{ case: 'c4', image, label: thin }], {})()
  t.same(
    out,
    E.left({ stage: 'slices', case: 'c4', message: "'image' has 2 slices but 'label' has 1" }),
  )
})

tap.test('the field stages work from a JSON config', async (t) => {
  const dir = await withFiles(t, { 'c5.nii.gz': image })
  const p = pipelineFromConfig(
    {
      stages: [
        { kind: 'load', keys: ['image'] },
        { kind: 'slices', keys: ['image'] },
        { kind: 'rename', from: 'image', to: 'x' },
      ],
    },
    fieldKinds,
  )
  if (E.isLeft(p)) return t.fail(p.left)
  const out = await runPipeline(p.right, [{ case: 'c5', image: join(dir, 'c5.nii.gz') }], {})()
  if (E.isLeft(out)) return t.fail(formatStageError(out.left))
  t.same(
    out.right.map((r) => [r.slice, Object.keys(r).sort()]),
    [
      [0, ['case', 'slice', 'x']],
      [1, ['case', 'slice', 'x']],
    ],
  )
})
