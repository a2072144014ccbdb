/**
 * MSCMRseg (late-gadolinium-enhancement cardiac MRI, CycleMix split) as training recipes:
 * 25 training subjects with scribbles only, 5 validation subjects with full masks. The
 * data folder is `--data`, else `$MACO_DATA/mscmr`, else `../shared/data/mscmr`. Training
 * has no labels, so `--supervision label` is refused when the cases are listed.
 *
 * - `paper`: the paper's setting for a GPU box: 1.37 mm, 256 px, the 1.8 M-parameter UNet,
 *   batch 4, Adam 1e-4, 1000 epochs.
 * - `cpu`: two CPU cores, the ACDC `cpu` network and inputs (2 mm, 128 px, the paper's
 *   UNet, Adam 1e-3 with poly decay), 60 epochs: 382 slices make 95 steps an epoch, at the
 *   0.54 s a step measured on ACDC about 55 minutes on two workers (not re-run since the
 *   network went from base 8 to 16: base 8 took about an hour on one worker). The 256 mm
 *   crop keeps every heart voxel of the val masks and all but 0.01% of the foreground
 *   scribble pixels of any training subject. The ACDC budget (`CPU_BUDGET`, 90 minutes)
 *   caps it: a slower machine trains the epochs that fit.
 *
 * @example
 * maco train pipelines/mscmr.ts --recipe cpu --out runs/mscmr-cpu
 */
import * as TE from 'fp-ts/lib/TaskEither.js'
import { join } from 'node:path'
import { MSCMR_SPLITS, mscmrDataset, type MscmrSplit } from '../src/data/mscmr.ts'
import * as acdc from './acdc.ts'
import { datasetRecipe, type TrainConfig } from '../src/train/recipe.ts'

export const MSCMR_DIR = join(process.env.MACO_DATA ?? '../shared/data', 'mscmr')

const open = (dir: string, split: string) =>
  (MSCMR_SPLITS as readonly string[]).includes(split)
    ? mscmrDataset(dir, split as MscmrSplit)
    : TE.left(`MSCMR has no split '${split}' (it has ${MSCMR_SPLITS.join(', ')})`)

// The ACDC recipes with MSCMR's splits and epoch counts: the same network, loss and inputs.
const data = { split: 'train', valSplit: 'val' }
const paper: TrainConfig = { ...acdc.paper, data, epochs: 1000 }
const cpu: TrainConfig = { ...acdc.cpu, data, epochs: 60 }

const where = { defaultDir: MSCMR_DIR, open, workers: acdc.workers }

export const recipes = {
  paper: datasetRecipe({
    summary: "the paper's MSCMRseg setting (1.37 mm, 256 px, 1000 epochs): for a GPU box",
    config: paper,
    ...where,
  }),
  cpu: datasetRecipe({
    summary:
      'MSCMRseg on two CPU cores in about an hour, at most 90 minutes (2 mm, 128 px, the paper UNet)',
    config: cpu,
    ...where,
    budget: acdc.CPU_BUDGET,
  }),
}
