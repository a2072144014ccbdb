/**
 * A folder of small scribbled scans for the fine-tuning tests: phantoms written as NIfTI in
 * the fine-tune layout (`scanN.nii.gz` with `scanN_scribble.nii.gz`, or with `scanN_label.nii.gz`
 * for the ones that validate), with all four cardiac classes or just background and LV.
 *
 * @example
 * await scribbledScans(dir, { scribbled: 2, labelled: 1 }) // scan0, scan1 scribbled; scan2 labelled
 */
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { phantomCase, type PhantomCase } from '../../src/data/phantom.ts'
import { writeNiftiFile } from '../../src/volume/nifti-file.ts'
import { withData, type Volume } from '../../src/volume/volume.ts'

/** 40 x 40 px at 4.8 mm, 3 slices: the smallest phantom with a whole heart in view. */
export const smallPhantom = (seed: number): PhantomCase =>
  phantomCase(seed, { size: [40, 40], slices: 3, spacing: [4.8, 4.8, 8] })

/** Cardiac labels (unlabelled 4) as background/LV (unlabelled 2). */
export const asLvOnly = (v: Volume<Uint8Array>, scribble: boolean): Volume<Uint8Array> =>
  withData(
    v,
    v.data.map((x) => (scribble && x === 4 ? 2 : x === 3 ? 1 : 0)),
  )

const write = async (path: string, v: Volume) => {
  const r = await writeNiftiFile(path, v)()
  if (E.isLeft(r)) throw new Error(r.left)
}

export const scribbledScans = async (
  dir: string,
  o: { scribbled: number; labelled: number; classes?: 4 | 2 },
): Promise<string> => {
  const relabel = (v: Volume<Uint8Array>, scribble: boolean) =>
    o.classes === 2 ? asLvOnly(v, scribble) : v
  for (let i = 0; i < o.scribbled + o.labelled; i++) {
    const c = smallPhantom(i + 10)
    await write(join(dir, `scan${i}.nii.gz`), c.image)
    if (i < o.scribbled)
      await write(join(dir, `scan${i}_scribble.nii.gz`), relabel(c.scribble, true))
    else await write(join(dir, `scan${i}_label.nii.gz`), relabel(c.label, false))
  }
  return dir
}
