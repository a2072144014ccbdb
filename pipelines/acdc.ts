/**
 * ACDC (cine MRI, scribbles of Valvano et al.) as training recipes: the cases of
 * `splits.json` (train, train35, val), each volume loaded from NIfTI, sliced, its scribble
 * turned into GC region and CPL, everything on the network grid (src/train/training-set.ts).
 * The data folder is `--data`, else `$MACO_DATA/acdc`, else `../shared/data/acdc`.
 *
 * - `paper`: the paper's setting for a GPU box: 1.37 mm, 256 px, the 1.8 M-parameter UNet,
 *   batch 4, Adam 1e-4, 300 epochs on train35 (35 patients, 70 volumes, 688 slices).
 * - `cpu`: a full train35 run on two CPU cores in at most 90 minutes. 2 mm and 128 px
 *   (256 mm): measured on the labels of train35 and val, 99.996% of the heart voxels lie in
 *   that crop (the worst volume keeps 99.6%), where 1.37 mm x 128 px (175 mm) would lose
 *   1.4% (39% of one volume). The paper's UNet (base 16, 1.8 M parameters), Adam 1e-3 with
 *   poly decay, 50 epochs of 172 steps (batch 4), the two passes of a step on two worker
 *   threads. Measured on these machines with the `onnxruntime` engine (what `auto` takes
 *   where onnxruntime-node is installed; then wasm with native convs): preparing the 100 volumes
 *   takes 7 s, a step 0.56 s, an epoch 96-104 s with the validation of the 30 val volumes;
 *   the 50 epochs took 87 minutes. On wasm alone a step takes 0.77 s (about 2 hours). Raw
 *   mean Dice on val 0.845 (best epoch 48), HD95 9.2 mm, where base width 8 (456 k
 *   parameters, 80 epochs in 85 minutes on wasm), the recipe until then, reached 0.837 and
 *   15.2 mm (docs/results.md). Random 96 px crops (`--crop 96 --epochs 66`, 81 minutes) gave
 *   the same raw Dice (0.846), one point more after LCC (0.860) and a worse raw HD95 (21.5 mm),
 *   and lifted pCE far more (0.768 -> 0.828 raw), so the recipe keeps whole slices.
 *   Two-core machines differ: on one (AVX2 only) the same step took 1.5 s, where 50 epochs
 *   would take about 4 hours; so the recipe has a budget of 90 minutes (`CPU_BUDGET`,
 *   src/train/budget.ts) and trains as many of its 50 epochs as fit there: 18 (83 minutes,
 *   val Dice 0.806 raw, 0.824 with LCC); since the engine runs its passes as whole
 *   onnxruntime graphs (a step 1.15 s there), 22 (85 minutes, 0.816 raw, 0.833 with LCC).
 *
 * Both augment every training slice as WSL4MIS does (quarter turns and flips, or a rotation
 * up to 20 degrees; src/train/augment.ts): without it the pCE baseline overfit (val Dice
 * 0.71 at its best epoch, 0.51 at the last of 36) and MaCo reached 0.778.
 *
 * @example
 * maco train pipelines/acdc.ts --recipe cpu --out runs/acdc-cpu
 * maco train pipelines/acdc.ts --recipe cpu --loss pce --out runs/acdc-pce        # ablation
 * maco train pipelines/acdc.ts --recipe cpu --split train --train-cases 14         # 14 patients
 */
import { join } from 'node:path'
import { ACDC_SPLITS, acdcDataset, type AcdcSplit } from '../src/data/acdc.ts'
import { CARDIAC_CLASSES, CARDIAC_UNLABELLED } from '../src/data/dataset.ts'
import { DEFAULT_LOSS } from '../src/maco/losses.ts'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { WSL4MIS_AUGMENT } from '../src/train/augment.ts'
import { datasetRecipe, type TrainConfig } from '../src/train/recipe.ts'

export const ACDC_DIR = join(process.env.MACO_DATA ?? '../shared/data', 'acdc')

const open = (dir: string, split: string) =>
  (ACDC_SPLITS as readonly string[]).includes(split)
    ? acdcDataset(dir, split as AcdcSplit)
    : TE.left(`ACDC has no split '${split}' (it has ${ACDC_SPLITS.join(', ')})`)

/** A patient's two frames are one subject: `--train-cases 14` keeps 14 patients. */
const patientOf = (caseName: string) => caseName.replace(/_frame\d+$/, '')

/** The paper's cardiac setting; MSCMR's recipes derive from these two. */
export const paper: TrainConfig = {
  classes: [...CARDIAC_CLASSES],
  unlabelled: CARDIAC_UNLABELLED,
  input: { spacing: [1.37, 1.37], size: [256, 256] },
  network: { base: 16, levels: 5, dropout: [0.05, 0.1, 0.2, 0.3, 0.5] },
  data: { split: 'train35', valSplit: 'val' },
  supervision: 'scribble',
  shrink: { ratio: 0, scope: 'slice' },
  loss: DEFAULT_LOSS,
  masking: { patch: 16, ratio: 0.5, scribbleWeight: 3 },
  cpl: { alpha: 0.1, floor: 0.05 },
  optimizer: { lr: 1e-4, schedule: 'constant', beta1: 0.9, beta2: 0.999, eps: 1e-8 },
  batch: 4,
  epochs: 300,
  seed: 1,
  logEvery: 50,
  augment: WSL4MIS_AUGMENT,
}

export const cpu: TrainConfig = {
  ...paper,
  input: { spacing: [2, 2], size: [128, 128] },
  masking: { ...paper.masking, patch: 8 },
  optimizer: { ...paper.optimizer, lr: 1e-3, schedule: 'poly' },
  epochs: 50,
}

// On onnxruntime and wasm (one thread a process) a step's two passes run on two cores: the
// speed of the `cpu` recipe's budget. The workers change only the speed, never the numbers.
export const workers = 2

// The minutes the `cpu` recipe promises: on a machine too slow for its 50 epochs in that time,
// it trains as many as fit (src/train/budget.ts): 22 where a step took 1.15 s.
export const CPU_BUDGET = 90

const recipe = (summary: string, config: TrainConfig, budget?: number) =>
  datasetRecipe({
    summary,
    config,
    defaultDir: ACDC_DIR,
    open,
    subjectOf: patientOf,
    workers,
    ...(budget === undefined ? {} : { budget }),
  })

export const recipes = {
  paper: recipe("the paper's ACDC setting (1.37 mm, 256 px, 300 epochs): for a GPU box", paper),
  cpu: recipe(
    'ACDC train35 on two CPU cores in 90 minutes (2 mm, 128 px, the paper UNet)',
    cpu,
    CPU_BUDGET,
  ),
}
