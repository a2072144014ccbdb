import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { decodeNifti, peekNiftiHeader } from '../../src/volume/nifti.ts'
import { sharedData } from '../helpers/data.ts'

const data = sharedData()

/** Every NIfTI file of a dataset split, with its role read from the name. */
const filesOf = (dir: string) =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.nii.gz'))
    .map((f) => ({
      name: f,
      path: join(dir, f),
      role: /_scribble\./.test(f) ? 'scribble' : /_(label|manual)\./.test(f) ? 'label' : 'image',
    }))

const minMax = (a: ArrayLike<number>): [number, number] => {
  let lo = Infinity
  let hi = -Infinity
  for (let i = 0; i < a.length; i++) {
    if (a[i] < lo) lo = a[i]
    if (a[i] > hi) hi = a[i]
  }
  return [lo, hi]
}

t.test(
  'every file of the shared data decodes with the README geometry and values',
  { skip: data.skip },
  async (t) => {
    // The README says "about 1.37-1.68 mm" in-plane for ACDC; the files span 0.70 (one val
    // patient) to 1.92 mm, and MSCMR's 5 mm slices are 5 to float32 precision.
    const datasets = [
      { name: 'acdc', inPlane: [0.7, 1.95], thickness: [5, 10], imageType: 'uint16' },
      { name: 'mscmr', inPlane: [0.72, 0.77], thickness: [4.999, 5.001], imageType: 'int16' },
    ] as const
    const problems: string[] = []
    let decoded = 0
    for (const ds of datasets)
      for (const split of ['train', 'val']) {
        const files = filesOf(join(data.path!, ds.name, split))
        t.ok(files.length > 0, `${ds.name}/${split} has files`)
        for (const f of files) {
          const bytes = readFileSync(f.path)
          const r = decodeNifti(bytes)
          if (E.isLeft(r)) {
            problems.push(`${f.name}: ${r.left}`)
            continue
          }
          decoded++
          const v = r.right
          const [sx, sy, sz] = v.geometry.spacing
          const where = `${ds.name}/${split}/${f.name}`
          if (!(sx >= ds.inPlane[0] && sx <= ds.inPlane[1] && Math.abs(sx - sy) < 1e-3))
            problems.push(`${where}: in-plane spacing ${sx} x ${sy}`)
          if (!(sz >= ds.thickness[0] && sz <= ds.thickness[1]))
            problems.push(`${where}: slice thickness ${sz}`)
          if (v.dims.length !== 3) problems.push(`${where}: dims ${v.dims.join('x')}`)
          if (!(v.geometry.qformCode > 0 || v.geometry.sformCode > 0))
            problems.push(`${where}: no qform or sform`)
          const peek = peekNiftiHeader(bytes)
          if (!(E.isRight(peek) && peek.right.voxelCount === v.data.length))
            problems.push(`${where}: peek disagrees`)
          const [lo, hi] = minMax(v.data)
          if (f.role === 'image') {
            if (v.datatype !== ds.imageType) problems.push(`${where}: image datatype ${v.datatype}`)
            if (ds.name === 'acdc' && Math.abs(v.scaling.slope - 1 / 65535) > 1e-12)
              problems.push(`${where}: scl_slope ${v.scaling.slope}, expected 1/65535`)
            if (!(hi > lo)) problems.push(`${where}: a constant image`)
          } else {
            const top = f.role === 'scribble' ? 4 : 3
            if (!(lo >= 0 && hi <= top && Number.isInteger(lo) && Number.isInteger(hi)))
              problems.push(`${where}: ${f.role} values in ${lo}..${hi}, expected 0..${top}`)
          }
        }
      }
    t.same(problems, [], 'no file breaks the README')
    t.ok(decoded >= 400, `${decoded} files decoded`)
  },
)
