/**
 * MSCMRseg (late-gadolinium-enhancement cardiac MRI) in the CycleMix split: `train/` holds
 * `subjectN_DE.nii.gz` with `subjectN_DE_scribble.nii.gz` (scribbles only), `val/` holds
 * `subjectN_DE.nii.gz` with `subjectN_DE_manual.nii.gz` (full masks). A case is `subjectN_DE`,
 * the name the evaluation matches predictions and masks by.
 *
 * @example
 * const ds = await mscmrDataset('../shared/data/mscmr', 'val')()   // 5 subjects with labels
 */
import { join } from 'node:path'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import { CARDIAC_CLASSES, CARDIAC_UNLABELLED, type Dataset } from './dataset.ts'
import { listLayout } from './layout.ts'

export const MSCMR_SPLITS = ['train', 'val'] as const
export type MscmrSplit = (typeof MSCMR_SPLITS)[number]

export const MSCMR_PATTERNS = {
  image: '{case}.nii.gz',
  scribble: '{case}_scribble.nii.gz',
  label: '{case}_manual.nii.gz',
} as const

export const mscmrDataset = (root: string, split: MscmrSplit): TE.TaskEither<string, Dataset> =>
  pipe(
    listLayout(join(root, split), MSCMR_PATTERNS, split),
    TE.map((cases) => ({
      name: 'mscmr',
      classes: CARDIAC_CLASSES,
      unlabelled: CARDIAC_UNLABELLED,
      cases,
    })),
  )
