/**
 * `maco finetune`: adapts a shipped model (an ONNX file with its card, or a run folder) to
 * new scans from a few scribbled volumes (src/train/finetune.ts), and writes the new ONNX
 * file with a model card that names its parent, data and validation Dice.
 *
 * Data: a folder of scans with their scribbles (`scan.nii.gz` + `scan_scribble.nii.gz`;
 * labelled scans `scan_label.nii.gz` without scribbles validate), or a pipeline's recipe
 * (`--pipeline pipelines/mscmr.ts --recipe cpu`). The network and its input grid are the
 * parent's; the classes are the data's (another count gets a new output layer, said on
 * stderr). Without labelled volumes nothing is scored: the last epoch is kept and the card
 * says no validation Dice was measured. Ctrl-C writes a checkpoint and exits 130;
 * `--resume` continues.
 *
 * @example
 * maco finetune --from models/acdc.onnx --data scans/lge --epochs 20 -o models/acdc-lge.onnx
 * maco finetune --from models/acdc.onnx --pipeline pipelines/mscmr.ts --recipe cpu --train-cases 5 -o models/acdc-mscmr.onnx
 */
import * as E from 'fp-ts/lib/Either.js'
import type * as TE from 'fp-ts/lib/TaskEither.js'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { CARDIAC_UNLABELLED } from '../data/dataset.ts'
import type { CaseRecord } from '../pipeline/stage.ts'
import { trainingPasses } from '../train/parallel.ts'
import {
  DEFAULT_PATTERNS,
  FINETUNE_DEFAULTS,
  FREEZE_CHOICES,
  casesRecipe,
  finetune,
  finetuneConfig,
  finetunedModel,
  fitBatch,
  layoutCases,
  loadParent,
  resumeFinetune,
  type Freeze,
  type Parent,
} from '../train/finetune.ts'
import {
  networkSpec,
  prepareData,
  type DataRecipe,
  type PrepareOptions,
  type PreparedData,
  type TrainConfig,
} from '../train/recipe.ts'
import { CHECKPOINTS, stepsPerEpoch } from '../train/trainer.ts'
import { writeFileAtomic } from '../util/atomic.ts'
import {
  flag,
  inputError,
  interrupted,
  modelOutput,
  numberOption,
  optionalInteger,
  optionalString,
  requireString,
  runFailed,
  stoppableByCtrlC,
  stoppedBeforeFirstStep,
  usageError,
  type Command,
  type CommandIO,
  type Parsed,
} from './command.ts'
import { progress, type Progress } from './progress.ts'
import {
  defaultWorkers,
  engineFor,
  loadRecipes,
  pickRecipe,
  threadsPhrase,
  workersOption,
} from './train.ts'

const freezeOf = (args: Parsed): Freeze => {
  const v = optionalString(args, 'freeze') ?? 'none'
  if (!(FREEZE_CHOICES as readonly string[]).includes(v))
    throw usageError(`--freeze must be one of ${FREEZE_CHOICES.join(', ')}, got '${v}'`)
  return v as Freeze
}

interface Plan {
  readonly config: TrainConfig
  /** Lists and prepares the data. */
  readonly prepare: (opts: PrepareOptions) => TE.TaskEither<string, PreparedData>
  /** How the card names where the data came from. */
  readonly pipeline: string
}

const planned = <C extends CaseRecord>(
  recipe: DataRecipe<C>,
  config: TrainConfig,
  dataDir: string | undefined,
  pipeline: string,
): Plan => ({
  config,
  prepare: (opts) => prepareData(recipe, config, dataDir, opts),
  pipeline,
})

/** The data and config: a pipeline's recipe, or a folder of scans with scribbles. */
const planOf = async (args: Parsed, parent: Parent, io: CommandIO): Promise<Plan> => {
  const options = {
    epochs: optionalInteger(args, 'epochs', 1),
    batch: optionalInteger(args, 'batch', 1),
    seed: optionalInteger(args, 'seed', 0),
    trainCases: optionalInteger(args, 'train-cases', 1),
    lr: args.values.lr === undefined ? undefined : numberOption(args, 'lr', 0, (n) => n > 0),
  }
  const pipeline = optionalString(args, 'pipeline')
  const dataDir = optionalString(args, 'data')
  if (pipeline !== undefined) {
    const layoutFlags = ['val', 'image', 'scribble', 'label', 'classes', 'unlabelled'].filter(
      (f) => args.values[f] !== undefined,
    )
    if (layoutFlags.length > 0)
      throw usageError(`--${layoutFlags[0]} describes a --data folder; the recipe has its own data`)
    const [name, recipe] = pickRecipe(
      await loadRecipes(pipeline),
      optionalString(args, 'recipe'),
      pipeline,
    )
    const config = finetuneConfig(parent, recipe.config, options, recipe.config)
    if (E.isLeft(config)) throw usageError(config.left)
    const [a, b] = [recipe.config.input, config.right.input]
    if (a.spacing.some((s, i) => s !== b.spacing[i]) || a.size.some((s, i) => s !== b.size[i]))
      io.err(
        `note: the recipe's grid (${a.spacing.join('x')} mm, ${a.size.join('x')} px) is replaced by the parent's (${b.spacing.join('x')} mm, ${b.size.join('x')} px)\n`,
      )
    return planned(recipe, config.right, dataDir, `${pipeline} recipe ${name}`)
  }
  if (optionalString(args, 'recipe') !== undefined) throw usageError('--recipe needs --pipeline')
  if (dataDir === undefined)
    throw usageError('missing --data (a folder of scans with scribbles) or --pipeline')
  const classes =
    optionalString(args, 'classes')
      ?.split(',')
      .map((s) => s.trim()) ?? parent.classes
  const unlabelled =
    optionalInteger(args, 'unlabelled', 0) ?? Math.max(CARDIAC_UNLABELLED, classes.length)
  const config = finetuneConfig(parent, { classes, unlabelled }, options)
  if (E.isLeft(config)) throw usageError(config.left)
  const patterns = {
    image: optionalString(args, 'image') ?? DEFAULT_PATTERNS.image,
    scribble: optionalString(args, 'scribble') ?? DEFAULT_PATTERNS.scribble,
    label: optionalString(args, 'label') ?? DEFAULT_PATTERNS.label,
  }
  const cases = await layoutCases(dataDir, patterns, optionalString(args, 'val'))()
  if (E.isLeft(cases)) throw inputError(cases.left)
  return planned(casesRecipe(cases.right), config.right, dataDir, `scans in ${dataDir}`)
}

const describeDice = (dice: Readonly<Record<string, number>>): string =>
  Object.entries(dice)
    .map(([k, v]) => `${k} ${v.toFixed(3)}`)
    .join(', ')

const meanOf = (dice: Readonly<Record<string, number>>): number => {
  const values = Object.values(dice)
  return values.reduce((a, b) => a + b, 0) / Math.max(values.length, 1)
}

export const finetuneCommand: Command = {
  name: 'finetune',
  summary: 'adapt a model to new scans from a few scribbled volumes',
  usage:
    'maco finetune --from MODEL.onnx|RUN_DIR (--data DIR | --pipeline P.ts [--recipe R]) -o NEW.onnx [options]',
  details: [
    'Options:',
    '  --from M              the parent: MODEL.onnx (with MODEL.json beside it) or a run folder',
    '  -o, --out NEW.onnx    the new model; its card NEW.json goes beside it',
    '  --name NAME           the new model name (default: the file name without .onnx)',
    `  --data DIR            scans with scribbles: ${DEFAULT_PATTERNS.image} + ${DEFAULT_PATTERNS.scribble};`,
    `                        scans with ${DEFAULT_PATTERNS.label} and no scribble validate`,
    '  --val DIR             validate on the labelled scans of DIR instead',
    '  --image P, --scribble P, --label P   file name patterns with {case} (as above)',
    "  --classes A,B,...     class names by label value (default: the parent's)",
    '  --unlabelled N        the scribble value of unannotated voxels (default 4, or the class count)',
    '  --pipeline P.ts       a pipeline module: its recipe lists and prepares the data (with --data',
    "  --recipe NAME         as its data folder); the network and grid stay the parent's",
    `  --epochs N            (default ${FINETUNE_DEFAULTS.epochs}), --lr X (default ${FINETUNE_DEFAULTS.lr}, poly decay),`,
    `  --batch N             (default ${FINETUNE_DEFAULTS.batch}), --seed S`,
    '  --train-cases N       keep N training subjects (fixed seeded order)',
    '  --freeze F            encoder (its weights stay fixed) or none (default)',
    '  --engine E            training engine (default auto); --workers N: threads for the two passes',
    '                        (default 2 on onnxruntime, wasm and cpu, at most one per core)',
    '  --run DIR             the run folder: checkpoints, metrics.jsonl, plot.svg (default runs/finetune-NAME)',
    '  --resume              continue a stopped fine-tune in --run (same options)',
    '  --json                print {onnx, card, name, parent, validation, parentValidation, ...} on stdout',
    '',
    "Batch norm: an ONNX file holds it folded into the convs; it is re-estimated on the new data's",
    "slices so that training starts from the parent's function (see src/train/finetune.ts).",
  ].join('\n'),
  options: {
    from: { type: 'string' },
    out: { type: 'string', short: 'o' },
    name: { type: 'string' },
    data: { type: 'string' },
    val: { type: 'string' },
    image: { type: 'string' },
    scribble: { type: 'string' },
    label: { type: 'string' },
    classes: { type: 'string' },
    unlabelled: { type: 'string' },
    pipeline: { type: 'string' },
    recipe: { type: 'string' },
    epochs: { type: 'string' },
    lr: { type: 'string' },
    batch: { type: 'string' },
    seed: { type: 'string' },
    'train-cases': { type: 'string' },
    freeze: { type: 'string' },
    engine: { type: 'string' },
    workers: { type: 'string' },
    run: { type: 'string' },
    resume: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    if (args.positionals.length > 0)
      throw usageError(`unexpected argument '${args.positionals[0]}' (the parent goes in --from)`)
    const from = requireString(args, 'from')
    const out = modelOutput(requireString(args, 'out'))
    const name = optionalString(args, 'name') ?? out.name
    const freeze = freezeOf(args)
    const resume = flag(args, 'resume')
    const askedWorkers = workersOption(args)
    const runDir = optionalString(args, 'run') ?? join('runs', `finetune-${name}`)
    const started = existsSync(join(runDir, CHECKPOINTS.last))
    if (started && !resume)
      throw usageError(
        `${runDir} already holds a run: add --resume to continue it, or pick another --run`,
      )
    if (resume && !started)
      throw inputError(`nothing to resume in ${runDir} (no ${CHECKPOINTS.last})`)

    const parent = await loadParent(from)()
    if (E.isLeft(parent)) throw inputError(parent.left)
    const plan = await planOf(args, parent.right, io)
    const engine = await engineFor(args, io, askedWorkers)
    let fineTuning = false
    const { trained, steps } = await stoppableByCtrlC(
      io,
      async (stopRequested) => {
        let bar: Progress | undefined
        const data = await plan.prepare({
          onListed: (_, cases) => {
            bar = progress({ label: 'prepare', total: cases, io })
          },
          onCase: (c) => bar?.tick(c),
          stopRequested,
        })()
        if (stopRequested())
          throw resume
            ? interrupted(
                `stopped before the fine-tuning resumed; the run is as it was: continue with the same options and --resume (run folder ${runDir})`,
              )
            : stoppedBeforeFirstStep()
        if (E.isLeft(data)) throw inputError(data.left)
        bar?.done()
        const config = fitBatch(plan.config, data.right.train.length)
        // The two passes of a MaCo step on two cores, as the recipes train.
        const workers = askedWorkers ?? defaultWorkers({ workers: 2 }, config, engine)
        io.err(
          `${resume ? 'resuming' : 'fine-tuning'} ${parent.right.name} on ${data.right.train.length} slices (${data.right.data}) in ${runDir}${freeze === 'encoder' ? ', encoder frozen' : ''}${threadsPhrase(workers, config)}\n`,
        )
        const spec = networkSpec(config)
        const passes = await trainingPasses(spec, engine.name, workers, config.loss.mcm)
        const steps = progress({
          label: 'fine-tune',
          total: stepsPerEpoch(data.right.train.length, config.batch) * config.epochs,
          io,
        })
        const inputs = {
          parent: parent.right,
          config: config,
          ...data.right,
          runDir,
          freeze,
          origin: {
            recipe: `finetune of ${parent.right.name}${freeze === 'encoder' ? ', encoder frozen' : ''}`,
            pipeline: plan.pipeline,
            data: data.right.data,
          },
          passes,
          stopRequested,
          log: (line: string) => io.err(`${line}\n`),
          onStep: () => steps.tick(),
        }
        fineTuning = true
        try {
          return { trained: await (resume ? resumeFinetune : finetune)(inputs)(), steps }
        } finally {
          await passes.close()
        }
      },
      () => fineTuning,
    )
    if (E.isLeft(trained)) throw runFailed(trained.left)
    const result = trained.right
    steps.done()
    if (result.outcome.status === 'stopped')
      throw interrupted(
        `stopped after step ${result.outcome.step}; continue with the same options and --resume (run folder ${runDir})`,
      )
    const model = await finetunedModel(name, result)()
    if (E.isLeft(model)) throw runFailed(model.left)
    // The ONNX file first: a model is served only once its card exists.
    await writeFileAtomic(out.onnx, model.right.onnx)
    await writeFileAtomic(out.card, `${JSON.stringify(model.right.card, null, 2)}\n`)
    const validation = model.right.card.validation?.dice ?? null
    const before = result.parentValidation?.classes ?? null
    if (flag(args, 'json'))
      io.out(
        `${JSON.stringify({
          onnx: out.onnx,
          card: out.card,
          name,
          parent: parent.right.name,
          runDir,
          epochs: result.outcome.epoch,
          steps: result.outcome.step,
          freeze,
          notes: result.notes,
          validation,
          parentValidation: before,
        })}\n`,
      )
    else
      io.out(
        [
          out.onnx,
          out.card,
          ...(before
            ? [
                `parent ${parent.right.name}: val Dice ${meanOf(before).toFixed(3)} (${describeDice(before)})`,
              ]
            : []),
          validation
            ? `${name}: val Dice ${meanOf(validation).toFixed(3)} (${describeDice(validation)})`
            : `${name}: no validation Dice (no labelled volumes)`,
          '',
        ].join('\n'),
      )
  },
}
