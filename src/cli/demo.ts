/**
 * `maco demo`: the toolkit's main job end to end on data it makes itself, no download and
 * no server: trains the `smoke` recipe of pipelines/synthetic.ts on phantoms, exports the
 * model (ONNX + card), segments the validation phantoms through the exported ONNX exactly
 * as `maco predict` and the server do, prints their Dice/HD95/ASD, writes a sample scan
 * beside the model and says how to serve it and call it.
 *
 * @example
 * npm run demo                     # = maco demo --out runs/demo
 * maco demo --epochs 3 --json      # {"runDir":..., "model":..., "metrics":{...}}
 */
import * as E from 'fp-ts/lib/Either.js'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { recipes, type SyntheticCase } from '../../pipelines/synthetic.ts'
import { classMetrics, meanMetrics, type ClassMetrics } from '../eval/metrics.ts'
import { createSession } from '../serve/runtime.ts'
import { segmentVolume } from '../serve/segment.ts'
import { applyOverrides } from '../train/recipe.ts'
import { writeNiftiFile } from '../volume/nifti-file.ts'
import {
  flag,
  numberOption,
  optionalString,
  runFailed,
  usageError,
  type Command,
} from './command.ts'
import { exportModel } from './export.ts'
import { engineFor, runRecipe } from './train.ts'

const MODEL = 'demo'

const table = (rows: readonly { case: string; classes: readonly ClassMetrics[] }[]): string => {
  const names = rows[0].classes.map((c) => c.name)
  const head = `${'case'.padEnd(12)}${names.map((n) => `${n} Dice`.padStart(10)).join('')}`
  const line = (label: string, cs: readonly ClassMetrics[]) =>
    `${label.padEnd(12)}${cs.map((c) => c.dice.toFixed(3).padStart(10)).join('')}`
  const mean = meanMetrics(rows.map((r) => r.classes))
  return [
    head,
    ...rows.map((r) => line(r.case, r.classes)),
    line('mean', mean.classes),
    `mean Dice ${mean.dice.toFixed(3)}, HD95 ${mean.hd95.toFixed(1)} mm, ASD ${mean.asd.toFixed(2)} mm`,
    '',
  ].join('\n')
}

export const demo: Command = {
  name: 'demo',
  summary: 'train, evaluate and export a model on synthetic phantoms (no data needed)',
  usage: 'maco demo [--out DIR] [--epochs N]',
  details: [
    'Options:',
    '  --out DIR             where the run, the model and a sample scan go (default runs/demo)',
    "  --epochs N            training epochs (default: the smoke recipe's)",
    '  --engine E            auto (default), wasm, cpu, tensorflow, tensorflow-gpu, webgpu',
    '  --json                print {runDir, model, card, sample, metrics} on stdout',
    '',
    'Takes a minute or two on two cores; then serve the model with `maco serve`.',
  ].join('\n'),
  options: {
    out: { type: 'string', short: 'o' },
    epochs: { type: 'string' },
    engine: { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    if (args.positionals.length > 0)
      throw usageError(`unexpected argument '${args.positionals[0]}'`)
    const out = optionalString(args, 'out') ?? join('runs', 'demo')
    const epochs =
      args.values.epochs === undefined
        ? undefined
        : numberOption(args, 'epochs', 1, (n) => Number.isInteger(n) && n >= 1 && n <= 1000)
    const recipe = recipes.smoke
    const config = applyOverrides(recipe.config, epochs === undefined ? {} : { epochs })
    if (E.isLeft(config)) throw usageError(config.left)
    const engine = await engineFor(args, io)
    const runDir = join(out, 'run')
    io.err(`demo: training the smoke recipe on synthetic phantoms in ${runDir}\n`)
    const trained = await runRecipe(
      {
        pipeline: 'pipelines/synthetic.ts',
        recipeName: 'smoke',
        recipe,
        config: config.right,
        dataDir: undefined,
        runDir,
        resume: false,
        engine,
        workers: 1,
      },
      io,
    )
    if (trained.status === 'stopped') throw runFailed('the demo was stopped before it finished')
    const model = await exportModel(runDir, join(out, `${MODEL}.onnx`), { name: MODEL })
    io.err(`demo: exported ${model.onnx} and ${model.cardPath}\n`)

    const cases = await recipe.cases(config.right)()
    if (E.isLeft(cases)) throw runFailed(cases.left)
    const session = await createSession(await readFile(model.onnx), { runtime: 'auto' })
    const rows: { case: string; classes: ClassMetrics[] }[] = []
    try {
      for (const c of cases.right.val as readonly SyntheticCase[]) {
        const mask = await segmentVolume({ card: model.card, session }, c.image)
        rows.push({
          case: c.case,
          classes: classMetrics(mask.data, c.label.data, c.label.dims, c.label.geometry.spacing),
        })
      }
    } finally {
      await session.release()
    }
    const sample = cases.right.val[0] as SyntheticCase
    const samplePath = join(out, `${sample.case}_image.nii.gz`)
    const written = await writeNiftiFile(samplePath, sample.image)()
    if (E.isLeft(written)) throw runFailed(written.left)
    await writeNiftiFile(join(out, `${sample.case}_label.nii.gz`), sample.label)()

    const mean = meanMetrics(rows.map((r) => r.classes))
    if (flag(args, 'json')) {
      io.out(
        `${JSON.stringify({ runDir, model: model.onnx, card: model.cardPath, sample: samplePath, best: trained.best, metrics: { volumes: rows, mean } })}\n`,
      )
      return
    }
    io.out(
      [
        `Validation phantoms segmented through ${model.onnx} (${session.runtimeName}):`,
        table(rows),
        'Next:',
        `  npx maco serve --models ${out}`,
        `  curl -s --data-binary @${samplePath} http://127.0.0.1:8787/v1/models/${MODEL}/segment -o mask.nii.gz`,
        `  curl -s -H 'accept: application/json' --data-binary @${samplePath} http://127.0.0.1:8787/v1/models/${MODEL}/segment`,
        `  npx maco predict --model ${model.onnx} --input ${samplePath} -o ${join(out, 'pred')}`,
        `  npx maco eval --pred ${join(out, 'pred')} --gt ${out}`,
        `Training curves: ${join(runDir, 'plot.svg')}; real data: maco train pipelines/acdc.ts --recipe cpu`,
        '',
      ].join('\n'),
    )
  },
}
