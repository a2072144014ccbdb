/**
 * MSCMRseg (late-gadolinium-enhancement cardiac MRI, CycleMix split) as training recipes:
 * 25 training subjects with scribbles only, 5 validation subjects with full masks. The
 * data folder is `--data`, else `$MACO_DATA/mscmr`, else `../shared/data/mscmr`. Training
 * has no labels, so `--supervision label` is refused when the cases are listed.
 *
 * - `paper`: the paper's setting for a GPU box: 1.37 mm, 256 px, the 1.8 M-parameter UNet,
 *   batch 4, Adam 1e-4, 1000 epochs.
 * - `cpu`: two CPU cores, the ACDC `cpu` network (2 mm, 128 px, base 8, Adam 1e-3 with poly
 *   decay): 382 slices make 95 steps an epoch, about 55 s with validation, so 60 epochs
 *   take about an hour. The 256 mm crop keeps every heart voxel of the val masks and all
 *   but 0.01% of the foreground scribble pixels of any training subject.
 *
 * @example
 * maco train pipelines/mscmr.ts --recipe cpu --out runs/mscmr-cpu
 */
import * as TE from 'fp-ts/lib/TaskEither.js'
import { join } from 'node:path'
import { CARDIAC_CLASSES, CARDIAC_UNLABELLED } from '../src/data/dataset.ts'
import { MSCMR_SPLITS, mscmrDataset, type MscmrSplit } from '../src/data/mscmr.ts'
import { DEFAULT_LOSS } from '../src/maco/losses.ts'
import { datasetRecipe, type TrainConfig } from '../src/train/recipe.ts'

export const MSCMR_DIR = join(process.env.MACO_DATA ?? '../shared/data', 'mscmr')

const open = (dir: string, split: string) =>
  (MSCMR_SPLITS as readonly string[]).includes(split)
    ? mscmrDataset(dir, split as MscmrSplit)
    : TE.left(`MSCMR has no split '${split}' (it has ${MSCMR_SPLITS.join(', ')})`)

const paper: TrainConfig = {
  classes: [...CARDIAC_CLASSES],
  unlabelled: CARDIAC_UNLABELLED,
  input: { spacing: [1.37, 1.37], size: [256, 256] },
  network: { base: 16, levels: 5, dropout: [0.05, 0.1, 0.2, 0.3, 0.5] },
  data: { split: 'train', valSplit: 'val' },
  supervision: 'scribble',
  shrink: { ratio: 0, scope: 'slice' },
  loss: DEFAULT_LOSS,
  masking: { patch: 16, ratio: 0.5, scribbleWeight: 3 },
  cpl: { alpha: 0.1, floor: 0.05 },
  optimizer: { lr: 1e-4, schedule: 'constant', beta1: 0.9, beta2: 0.999, eps: 1e-8 },
  batch: 4,
  epochs: 1000,
  seed: 1,
  logEvery: 50,
}

const cpu: TrainConfig = {
  ...paper,
  input: { spacing: [2, 2], size: [128, 128] },
  network: { ...paper.network, base: 8 },
  masking: { ...paper.masking, patch: 8 },
  optimizer: { ...paper.optimizer, lr: 1e-3, schedule: 'poly' },
  epochs: 60,
}

const recipe = (summary: string, config: TrainConfig) =>
  datasetRecipe({ summary, config, defaultDir: MSCMR_DIR, open })

export const recipes = {
  paper: recipe(
    "the paper's MSCMRseg setting (1.37 mm, 256 px, 1000 epochs): for a GPU box",
    paper,
  ),
  cpu: recipe('MSCMRseg on two CPU cores in about an hour (2 mm, 128 px, base 8)', cpu),
}
