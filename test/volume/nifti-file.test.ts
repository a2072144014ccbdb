import t from 'tap'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { isGzip } from '../../src/volume/nifti.ts'
import { readNiftiFile, writeNiftiFile } from '../../src/volume/nifti-file.ts'
import { volumeOf } from '../../src/volume/volume.ts'

const volume = volumeOf({
  dims: [3, 4, 5],
  data: Int16Array.from({ length: 60 }, (_, i) => i * 101 - 3000),
  spacing: [1.25, 1.25, 8],
})

t.test('write then read, gzipped iff the name ends in .gz', async (t) => {
  const dir = t.testdir()
  for (const name of ['a.nii', 'b.nii.gz', 'nested/c.NII.GZ']) {
    const path = join(dir, name)
    t.same(await writeNiftiFile(path, volume)(), E.right(undefined))
    t.equal(isGzip(readFileSync(path)), /\.gz$/i.test(name), name)
    const back = await readNiftiFile(path)()
    t.ok(
      E.isRight(back) && Array.from(back.right.data).join() === Array.from(volume.data).join(),
      name,
    )
  }
  t.same(readdirSync(dir).sort(), ['a.nii', 'b.nii.gz', 'nested'], 'no temporary files left behind')
})

t.test('errors name the file and say what is wrong', async (t) => {
  const dir = t.testdir({ 'notes.txt': 'not an image', 'folder.nii': {} })
  t.same(
    await readNiftiFile(join(dir, 'missing.nii.gz'))(),
    E.left(`${join(dir, 'missing.nii.gz')}: no such file`),
  )
  t.same(
    await readNiftiFile(join(dir, 'folder.nii'))(),
    E.left(`${join(dir, 'folder.nii')}: is a directory, not a file`),
  )
  t.same(
    await readNiftiFile(join(dir, 'notes.txt'))(),
    E.left(`${join(dir, 'notes.txt')}: not a NIfTI-1 file (only 12 bytes; a header needs 348)`),
  )
  const bad = join(dir, 'notes.txt', 'out.nii')
  t.same(await writeNiftiFile(bad, volume)(), E.left(`${bad}: a folder on the path is a file`))
})

t.test('the limits apply to files, from the file size before reading', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'big.nii')
  writeFileSync(path, new Uint8Array(300_000))
  const r = await readNiftiFile(path, { maxBytes: 100_000 })()
  t.same(
    r,
    E.left(
      `${path}: the file is 300000 bytes, more than the limit of 100000 bytes of image data allows`,
    ),
  )
  await writeNiftiFile(path, volume)()
  t.match(await readNiftiFile(path, { maxVoxels: 10 })(), {
    left: /^.*big\.nii: 60 voxels \(dims 3x4x5\) exceeds the limit of 10 voxels$/,
  })
})
