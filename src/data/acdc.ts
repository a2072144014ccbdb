/**
 * ACDC as distributed with the WSL4MIS scribbles: `train/` and `val/` hold
 * `<case>_image.nii.gz`, `<case>_scribble.nii.gz` and `<case>_label.nii.gz` per volume (a case
 * is `patientNNN_frameMM`); `splits.json` lists the patients of `train`, `val` and `train35`
 * (the 35-patient subset of train that the paper's main ACDC setting uses).
 *
 * @example
 * const ds = await acdcDataset('../shared/data/acdc', 'train35')()   // 70 volumes of 35 patients
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import { describeErrors } from '../pipeline/decode.ts'
import { CARDIAC_CLASSES, CARDIAC_UNLABELLED, type Dataset } from './dataset.ts'
import { listLayout } from './layout.ts'

export const ACDC_SPLITS = ['train', 'val', 'train35'] as const
export type AcdcSplit = (typeof ACDC_SPLITS)[number]

export const ACDC_PATTERNS = {
  image: '{case}_image.nii.gz',
  scribble: '{case}_scribble.nii.gz',
  label: '{case}_label.nii.gz',
} as const

/** splits.json: patient lists per split (other keys, such as a note on the withheld test set, are ignored). */
const Splits = t.type({
  train: t.array(t.string),
  val: t.array(t.string),
  train35: t.array(t.string),
})

const readSplits = (root: string): TE.TaskEither<string, t.TypeOf<typeof Splits>> => {
  const path = join(root, 'splits.json')
  return pipe(
    TE.tryCatch(
      () => readFile(path, 'utf8'),
      (e) =>
        `${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(e)}`,
    ),
    TE.chainEitherK((text) =>
      pipe(
        E.tryCatch(
          () => JSON.parse(text) as unknown,
          () => `${path}: not valid JSON`,
        ),
        E.chain((u) =>
          pipe(
            Splits.decode(u),
            E.mapLeft((es) => `${path}: ${describeErrors(es)}`),
          ),
        ),
      ),
    ),
  )
}

const patientOf = (caseName: string): string => caseName.replace(/_frame\d+$/, '')

/** The volumes of one split; Left when a listed patient has no files, or the folder is missing. */
export const acdcDataset = (root: string, split: AcdcSplit): TE.TaskEither<string, Dataset> =>
  pipe(
    TE.Do,
    TE.apS('splits', readSplits(root)),
    TE.apS('all', listLayout(join(root, split === 'val' ? 'val' : 'train'), ACDC_PATTERNS, split)),
    TE.chainEitherK(({ splits, all }) => {
      const patients = new Set(splits[split])
      const cases = all.filter((c) => patients.has(patientOf(c.case)))
      const found = new Set(cases.map((c) => patientOf(c.case)))
      const absent = [...patients].filter((p) => !found.has(p))
      return absent.length > 0
        ? E.left(
            `splits.json lists ${absent.length} patient(s) of '${split}' with no image files (first: ${absent[0]})`,
          )
        : E.right({ name: 'acdc', classes: CARDIAC_CLASSES, unlabelled: CARDIAC_UNLABELLED, cases })
    }),
  )
