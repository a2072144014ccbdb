/**
 * A tiny training on the smoke recipe's phantoms (32 px, base 4, 4 steps an epoch): the
 * config, its prepared data, and a run folder, for tests of the trainer.
 */
import * as E from 'fp-ts/lib/Either.js'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { recipes } from '../../pipelines/synthetic.ts'
import { runPipeline } from '../../src/pipeline/run.ts'
import { loadEngine } from '../../src/train/engine.ts'
import { applyOverrides, type TrainConfig } from '../../src/train/recipe.ts'
import { METRICS_FILE } from '../../src/train/trainer.ts'

export const use = async (name: 'cpu' | 'wasm') => {
  const r = await loadEngine(name)()
  if (E.isLeft(r)) throw new Error(r.left)
}

const smoke = recipes.smoke

export const configOf = (patch: Partial<TrainConfig>, overrides = {}): TrainConfig => {
  const c = applyOverrides({ ...smoke.config, ...patch }, overrides)
  if (E.isLeft(c)) throw new Error(c.left)
  return c.right
}

/** Training slices and validation volumes of the smoke recipe's phantoms under `config`. */
export const prepared = async (config: TrainConfig) => {
  const cases = await smoke.cases(config)()
  if (E.isLeft(cases)) throw new Error(cases.left)
  const env = { seed: config.seed }
  const train = await runPipeline(smoke.training(config), cases.right.train, env)()
  const val = await runPipeline(smoke.validation(config), cases.right.val, env)()
  if (E.isLeft(train) || E.isLeft(val)) throw new Error('preparation failed')
  return { train: train.right, val: val.right }
}

/** A tiny network on 32 px phantoms: 8 slices, batch 2, so 4 steps an epoch. */
export const tiny = configOf({
  input: { spacing: [6, 6], size: [32, 32] },
  network: { base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] },
  data: { split: 'train', valSplit: 'val', trainCases: 1, valCases: 1 },
  batch: 2,
  epochs: 2,
  logEvery: 3,
})

export const tempDir = async (t: { teardown: (f: () => unknown) => void }) => {
  const dir = await mkdtemp(join(tmpdir(), 'maco-trainer-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

export const lines = async (dir: string) =>
  (await readFile(join(dir, METRICS_FILE), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)

/** The tiny run on random 16 px windows of its 32 px slices. */
export const cropped = configOf({ ...tiny, crop: [16, 16], masking: { ...tiny.masking, patch: 4 } })
/** The tiny run keeping a moving average of its weights. */
export const averaging = configOf({ ...tiny, ema: 0.9 })
