/**
 * `maco train PIPELINE.ts`: trains a recipe of a pipeline module (a `.ts` file exporting
 * `recipes`, see src/train/recipe.ts) into a run folder: `config.json` (what was run),
 * checkpoints, `metrics.jsonl` and `plot.svg`. Ctrl-C finishes the step under way, writes
 * a resumable checkpoint and exits 130 (an `interrupted` CLI error); `--resume` continues
 * exactly where it stopped. Before the first step (data preparation, the budget's timing)
 * Ctrl-C stops at once with nothing trained, and the same command starts again.
 *
 * @example
 * maco train pipelines/acdc.ts --recipe cpu --out runs/acdc-cpu
 * maco train pipelines/acdc.ts --recipe cpu --out runs/acdc-cpu --resume
 * maco train pipelines/synthetic.ts --recipe smoke --loss pce --epochs 3 --json
 */
import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import { existsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { readFile } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { CaseRecord } from '../pipeline/stage.ts'
import {
  ENGINE_CHOICES,
  loadEngine,
  singleThreaded,
  type Engine,
  type EngineChoice,
} from '../train/engine.ts'
import { budgetText, duration, epochSeconds, fitEpochs } from '../train/budget.ts'
import { trainingPasses } from '../train/parallel.ts'
import {
  LOSS_PRESET_NAMES,
  TrainConfig,
  applyOverrides,
  networkSpec,
  prepareData,
  type LossPreset,
  type Overrides,
  type Recipe,
} from '../train/recipe.ts'
import {
  CHECKPOINTS,
  METRICS_FILE,
  PLOT_FILE,
  probeEpochCost,
  stepsPerEpoch,
  train,
  type TrainOutcome,
} from '../train/trainer.ts'
import { writeFileAtomic } from '../util/atomic.ts'
import {
  choice,
  flag,
  inputError,
  interrupted,
  stoppedBeforeFirstStep,
  numberOption,
  optionalInteger,
  optionalString,
  positionals,
  runFailed,
  stoppableByCtrlC,
  usageError,
  type Command,
  type CommandIO,
  type Parsed,
} from './command.ts'
import { progress, type Progress } from './progress.ts'

/** `config.json` of a run folder: what `--resume` and `maco export` read back. */
export const RunFile = t.type({
  pipeline: t.string,
  recipe: t.string,
  dataDir: t.union([t.string, t.null]),
  config: TrainConfig,
})
export type RunFile = t.TypeOf<typeof RunFile>
export const RUN_FILE = 'config.json'

const isRecipe = (u: unknown): u is Recipe =>
  typeof u === 'object' &&
  u !== null &&
  ['cases', 'training', 'validation'].every(
    (k) => typeof (u as Record<string, unknown>)[k] === 'function',
  ) &&
  E.isRight(TrainConfig.decode((u as Record<string, unknown>).config))

/** The recipes a pipeline module exports, or a usage/input error in one line. */
export const loadRecipes = async (file: string): Promise<Readonly<Record<string, Recipe>>> => {
  if (!/\.[cm]?[tj]s$/.test(file))
    throw usageError(`the pipeline must be a .ts or .js module, got ${file}`)
  const path = resolve(file)
  if (!existsSync(path)) throw inputError(`no pipeline file ${file}`)
  let module: Record<string, unknown>
  try {
    module = (await import(pathToFileURL(path).href)) as Record<string, unknown>
  } catch (e) {
    throw inputError(`cannot load ${file}: ${(e as Error).message.split('\n')[0]}`)
  }
  const recipes = module.recipes
  if (typeof recipes !== 'object' || recipes === null || Object.keys(recipes).length === 0)
    throw inputError(`${file} exports no recipes (export const recipes = { name: recipe })`)
  const broken = Object.entries(recipes).find(([, r]) => !isRecipe(r))
  if (broken)
    throw inputError(
      `${file}: recipe '${broken[0]}' is not a recipe (config, cases, training, validation)`,
    )
  return recipes as Record<string, Recipe>
}

/** A recipe by name; with no name, the module's first. */
export const pickRecipe = (
  recipes: Readonly<Record<string, Recipe>>,
  name: string | undefined,
  file: string,
): [string, Recipe] => {
  const names = Object.keys(recipes)
  const chosen = name ?? names[0]
  if (!Object.hasOwn(recipes, chosen))
    throw usageError(`${file} has no recipe '${chosen}' (it has ${names.join(', ')})`)
  return [chosen, recipes[chosen]]
}

/** `--workers`: threads for the two passes of a MaCo step; undefined when absent (see `defaultWorkers`). */
export const workersOption = (args: Parsed): number | undefined =>
  args.values.workers === undefined
    ? undefined
    : numberOption(args, 'workers', 1, (n) => Number.isInteger(n) && n >= 1 && n <= 16)

/**
 * The recipe's worker threads where the flag is absent, when they can help: a
 * single-threaded engine, a core for each, and two passes a step (MCM) to share out, or
 * onnxruntime, which runs the one pass of a step without MCM on that many threads.
 */
export const defaultWorkers = (
  recipe: Pick<Recipe, 'workers'>,
  config: TrainConfig,
  engine: Engine,
  cores = availableParallelism(),
): number =>
  singleThreaded(engine.name) && (config.loss.mcm || engine.name === 'onnxruntime')
    ? Math.max(1, Math.min(recipe.workers ?? 1, cores))
    : 1

/** How a run uses its `workers` threads, for its first line ('' for one thread). */
export const threadsPhrase = (workers: number, config: TrainConfig): string =>
  workers === 1 ? '' : config.loss.mcm ? ` on ${workers} worker threads` : ` on ${workers} threads`

/**
 * The wall-clock budget in minutes, or undefined for none: `--budget MIN` (0: none), else the
 * recipe's, unless `--epochs` asks for a number of epochs.
 */
export const budgetOption = (args: Parsed, recipe: Pick<Recipe, 'budget'>): number | undefined => {
  if (args.values.budget === undefined)
    return args.values.epochs === undefined ? recipe.budget : undefined
  const minutes = numberOption(args, 'budget', 0, (n) => Number.isFinite(n) && n >= 0)
  return minutes > 0 ? minutes : undefined
}

/** The config overrides the flags ask for. */
const overridesOf = (args: Parsed): Overrides => {
  const shrink =
    args.values.shrink === undefined
      ? undefined
      : numberOption(args, 'shrink', 0, (n) => n >= 0 && n <= 1)
  const lr = args.values.lr === undefined ? undefined : numberOption(args, 'lr', 0, (n) => n > 0)
  const ema =
    args.values.ema === undefined ? undefined : numberOption(args, 'ema', 0, (n) => n >= 0 && n < 1)
  const o: Overrides = {
    epochs: optionalInteger(args, 'epochs', 1),
    seed: optionalInteger(args, 'seed', 0),
    batch: optionalInteger(args, 'batch', 1),
    trainCases: optionalInteger(args, 'train-cases', 1),
    valCases: optionalInteger(args, 'val-cases', 1),
    lr,
    shrink,
    crop: optionalInteger(args, 'crop', 1),
    ema,
    loss: choice<LossPreset>(args, 'loss', LOSS_PRESET_NAMES),
    supervision: choice(args, 'supervision', ['scribble', 'label'] as const),
    split: optionalString(args, 'split'),
  }
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Overrides
}

const describeEngine = (e: Engine, choice: EngineChoice): string =>
  `engine: ${e.name}${e.device ? ` on ${e.device}` : ''} ` +
  (choice === 'auto'
    ? `(auto${e.skipped.length > 0 ? `; skipped ${e.skipped.join('; ')}` : ''})`
    : '(asked for)')

/**
 * Loads the engine the flag names; exit 2 with its reason when it is not there, or when
 * `workers` above 1 ask for threads that only a single-threaded engine can use.
 */
export const engineFor = async (args: Parsed, io: CommandIO, workers = 1) => {
  const asked = choice<EngineChoice>(args, 'engine', ENGINE_CHOICES) ?? 'auto'
  const engine = await loadEngine(asked)()
  if (E.isLeft(engine)) throw inputError(engine.left)
  if (workers > 1 && !singleThreaded(engine.right.name))
    throw usageError(
      `--workers ${workers} is for the single-threaded engines (onnxruntime, wasm, cpu); '${engine.right.name}' runs in one process`,
    )
  io.err(`${describeEngine(engine.right, asked)}\n`)
  return engine.right
}

export interface RunRequest<C extends CaseRecord> {
  readonly pipeline: string
  readonly recipeName: string
  readonly recipe: Recipe<C>
  readonly config: TrainConfig
  readonly dataDir: string | undefined
  readonly runDir: string
  readonly resume: boolean
  readonly engine: Engine
  readonly workers: number
  /** Minutes from `startedAt` (performance.now() ms) the run must fit in; fresh runs only. */
  readonly budget?: number
  readonly startedAt?: number
}

const writeRunFile = (runDir: string, run: RunFile) =>
  writeFileAtomic(join(runDir, RUN_FILE), `${JSON.stringify(run, null, 2)}\n`)

/**
 * The config with as many of its epochs as fit the budget, timed on this machine with the
 * run's own passes; config.json is rewritten when that is fewer.
 */
const withinBudget = async <C extends CaseRecord>(
  r: RunRequest<C>,
  minutes: number,
  inputs: Omit<Parameters<typeof probeEpochCost>[0], 'config'>,
  io: CommandIO,
): Promise<TrainConfig> => {
  const { config } = r
  io.err(`timing a few steps and a validation to fit the epochs into ${budgetText(minutes)}\n`)
  const cost = await probeEpochCost({ ...inputs, config })
  // A budget is only fitted for a fresh run.
  if (inputs.stopRequested?.()) throw stoppedBeforeFirstStep()
  if (E.isLeft(cost)) throw runFailed(cost.left)
  const perEpoch = stepsPerEpoch(inputs.train.length, config.batch)
  const fit = fitEpochs({
    budgetSeconds: minutes * 60,
    spentSeconds: (performance.now() - (r.startedAt ?? performance.now())) / 1000,
    perEpoch,
    cost: cost.right,
    most: config.epochs,
  })
  if (E.isLeft(fit)) throw usageError(fit.left)
  const epoch = epochSeconds(cost.right, perEpoch)
  io.err(
    `budget: ${fit.right} of ${config.epochs} epochs fit in ${budgetText(minutes)} here (a step ` +
      `${cost.right.stepSeconds.toFixed(2)} s, an epoch about ${duration(epoch)} with its validation)` +
      `${fit.right < config.epochs ? '; --budget 0 trains them all' : ''}\n`,
  )
  if (fit.right === config.epochs) return config
  const fitted = { ...config, epochs: fit.right }
  await writeRunFile(r.runDir, {
    pipeline: r.pipeline,
    recipe: r.recipeName,
    dataDir: r.dataDir ?? null,
    config: fitted,
  })
  return fitted
}

/** Per-epoch progress bars driven by the trainer's step callback. */
const stepBars = (io: CommandIO, epochs: number, perEpoch: number) => {
  let bar: Progress | undefined
  let epochOfBar = -1
  return {
    onStep: (step: number, epoch: number) => {
      if (epoch !== epochOfBar) {
        bar = progress({ label: `epoch ${epoch + 1}/${epochs}`, total: perEpoch, io })
        epochOfBar = epoch
        bar.tick(undefined, step - epoch * perEpoch)
      } else bar?.tick()
    },
    done: () => {
      bar = undefined
      epochOfBar = -1
    },
  }
}

/**
 * Lists and prepares the data, then trains; Ctrl-C asks the trainer to stop after the
 * step under way (a second Ctrl-C quits at once). Before the first step (preparing the data,
 * the budget's timing) Ctrl-C stops there, with nothing trained and the run as it was. Throws
 * a CLI error on any failure; a stopped run is an outcome (status 'stopped'), not an error.
 */
export const runRecipe = async <C extends CaseRecord>(
  r: RunRequest<C>,
  io: CommandIO,
): Promise<TrainOutcome & { data: string; config: TrainConfig }> => {
  let training = false
  return stoppableByCtrlC(
    io,
    async (stopRequested) => {
      const untilTraining = () => {
        if (!stopRequested()) return
        throw r.resume
          ? interrupted(
              `stopped before the training resumed; the run is as it was: maco train ${r.pipeline} --out ${r.runDir} --resume`,
            )
          : stoppedBeforeFirstStep()
      }
      let bar: Progress | undefined
      const prepared = await prepareData(r.recipe, r.config, r.dataDir, {
        onListed: (data, cases) => {
          io.err(`data: ${data}\n`)
          bar = progress({ label: 'prepare', total: cases, io })
        },
        onCase: (c) => bar?.tick(c),
        stopRequested,
      })()
      untilTraining()
      if (E.isLeft(prepared)) throw inputError(prepared.left)
      const { train: trainSlices, val: valVolumes, data: source } = prepared.right
      bar?.done()
      io.err(
        `prepared ${trainSlices.length} training slices, ${valVolumes.length} validation volumes\n`,
      )

      const spec = networkSpec(r.config)
      if (r.workers > 1 && !r.config.loss.mcm && r.engine.name !== 'onnxruntime')
        io.err('note: without MCM a step has one pass, so --workers above 1 cannot help\n')
      const passes = await trainingPasses(spec, r.engine.name, r.workers, r.config.loss.mcm)
      try {
        const inputs = { train: trainSlices, val: valVolumes, passes }
        // A budget is fitted to, and held by, a fresh run only.
        const budget = r.resume ? undefined : r.budget
        const config =
          budget === undefined
            ? r.config
            : await withinBudget(r, budget, { ...inputs, stopRequested }, io)
        untilTraining()
        training = true
        const perEpoch = stepsPerEpoch(trainSlices.length, config.batch)
        const bars = stepBars(io, config.epochs, perEpoch)
        const outcome = await train({
          config,
          ...inputs,
          runDir: r.runDir,
          resume: r.resume,
          origin: { recipe: r.recipeName, pipeline: r.pipeline, data: source },
          stopRequested,
          ...(budget === undefined
            ? {}
            : { deadline: (r.startedAt ?? performance.now()) / 1000 + budget * 60 }),
          onStep: bars.onStep,
          onEpoch: bars.done,
          log: (line) => io.err(`${line}\n`),
        })()
        if (E.isLeft(outcome)) throw runFailed(outcome.left)
        return { ...outcome.right, data: source, config }
      } finally {
        await passes.close()
      }
    },
    () => training,
  )
}

const readRunFile = async (runDir: string): Promise<RunFile> => {
  const path = join(runDir, RUN_FILE)
  const text = await readFile(path, 'utf8').catch(() => undefined)
  if (text === undefined) throw inputError(`nothing to resume in ${runDir} (no ${RUN_FILE})`)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw inputError(`${path} is not valid JSON`)
  }
  const decoded = RunFile.decode(json)
  if (E.isLeft(decoded)) throw inputError(`${path} is not a run config`)
  return decoded.right
}

/** Flags that change the config, which a resumed run cannot. */
const CONFIG_FLAGS = [
  'epochs',
  'budget',
  'seed',
  'batch',
  'lr',
  'loss',
  'supervision',
  'shrink',
  'crop',
  'ema',
  'split',
  'train-cases',
  'val-cases',
]

interface Plan {
  readonly name: string
  readonly recipe: Recipe
  readonly config: TrainConfig
  readonly dataDir: string | undefined
  readonly runDir: string
}

const runDirOf = (args: Parsed, pipeline: string, recipe: string) =>
  optionalString(args, 'out') ??
  join('runs', `${basename(pipeline).replace(/\.[cm]?[tj]s$/, '')}-${recipe}`)

/** A new run: the recipe's config with the flags applied, in a folder that holds no run. */
const freshPlan = (
  args: Parsed,
  recipes: Readonly<Record<string, Recipe>>,
  pipeline: string,
  overrides: Overrides,
): Plan => {
  const [name, recipe] = pickRecipe(recipes, optionalString(args, 'recipe'), pipeline)
  const runDir = runDirOf(args, pipeline, name)
  if (existsSync(join(runDir, CHECKPOINTS.last)))
    throw usageError(
      `${runDir} already holds a run: add --resume to continue it, or pick another --out`,
    )
  const config = applyOverrides(recipe.config, overrides)
  if (E.isLeft(config)) throw usageError(config.left)
  return { name, recipe, config: config.right, dataDir: optionalString(args, 'data'), runDir }
}

/** A stopped run: its own recipe and config from config.json, nothing overridden. */
const resumePlan = async (
  args: Parsed,
  recipes: Readonly<Record<string, Recipe>>,
  pipeline: string,
): Promise<Plan> => {
  const given = CONFIG_FLAGS.filter((f) => args.values[f] !== undefined)
  if (given.length > 0)
    throw usageError(`--resume continues a run with its own config: drop --${given.join(', --')}`)
  const asked = optionalString(args, 'recipe')
  const runDir = runDirOf(args, pipeline, asked ?? Object.keys(recipes)[0])
  const saved = await readRunFile(runDir)
  if (asked !== undefined && asked !== saved.recipe)
    throw usageError(`${runDir} trained recipe '${saved.recipe}', not '${asked}'`)
  if (!existsSync(join(runDir, CHECKPOINTS.last)))
    throw inputError(`nothing to resume in ${runDir} (no ${CHECKPOINTS.last} yet)`)
  const [name, recipe] = pickRecipe(recipes, saved.recipe, pipeline)
  const dataDir = optionalString(args, 'data') ?? saved.dataDir ?? undefined
  return { name, recipe, config: saved.config, dataDir, runDir }
}

export const trainCommand: Command = {
  name: 'train',
  summary: 'train a recipe of a pipeline (pipeline as code) into a run folder',
  usage: 'maco train PIPELINE.ts [--recipe NAME] [--out RUN_DIR] [options]',
  details: [
    'Options:',
    '  --recipe NAME         a recipe the pipeline exports (default: its first)',
    "  --data DIR            where the dataset is (default: the recipe's, e.g. ../shared/data/acdc)",
    '  --out RUN_DIR         run folder (default: runs/<pipeline>-<recipe>)',
    '  --resume              continue the run in RUN_DIR where it stopped (same config)',
    `  --engine E            ${ENGINE_CHOICES.join(', ')} (default auto: the first that loads)`,
    '  --workers N           worker threads for the two passes of a MaCo step (default: the',
    "                        recipe's on onnxruntime, wasm and cpu, at most one per core; else 1);",
    '                        on onnxruntime without MCM, the threads of its one pass',
    '  --epochs N, --seed S, --batch N, --lr X      override the recipe',
    '  --budget MIN          train only as many of the epochs as fit in MIN minutes from the',
    '                        start (timed on this machine before the first step; config.json',
    '                        records the count; should the epochs run slower than timed, the',
    "                        run stops in time, resumable); default: the recipe's (cpu: 90) unless",
    '                        --epochs is given; 0: none',
    `  --loss PRESET         ${LOSS_PRESET_NAMES.join(', ')} (ablations; maco = all terms)`,
    '  --supervision S       scribble (default) or label: the fully supervised upper bound',
    '  --shrink R            remove this fraction of the scribble pixels (0..1)',
    '  --crop PX             train on random PX x PX windows of each slice (a multiple of 16,',
    '                        at most the input size; the input size: whole slices); validation',
    '                        and predictions always see whole slices',
    '  --ema DECAY           keep a moving average of the weights (e.g. 0.999 a step): it is',
    '                        what validation scores, best.ckpt holds and export ships; 0: off',
    '  --split NAME          the training split (e.g. train, train35)',
    '  --train-cases N       keep N training subjects (nested: fixed seeded order)',
    '  --val-cases N         validate on N subjects',
    '  --json                print the outcome as JSON on stdout',
    '',
    'The run folder gets config.json, last.ckpt and best.ckpt (best validation Dice),',
    'metrics.jsonl and plot.svg. Ctrl-C writes a checkpoint and exits 130; --resume continues\n' +
      '(before the first step it stops with nothing trained: run the same command again).',
  ].join('\n'),
  options: {
    recipe: { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string', short: 'o' },
    resume: { type: 'boolean' },
    engine: { type: 'string' },
    workers: { type: 'string' },
    epochs: { type: 'string' },
    budget: { type: 'string' },
    seed: { type: 'string' },
    batch: { type: 'string' },
    lr: { type: 'string' },
    loss: { type: 'string' },
    supervision: { type: 'string' },
    shrink: { type: 'string' },
    crop: { type: 'string' },
    ema: { type: 'string' },
    split: { type: 'string' },
    'train-cases': { type: 'string' },
    'val-cases': { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    const startedAt = performance.now()
    const [pipeline] = positionals(args, 1, 'one pipeline file (e.g. pipelines/acdc.ts)')
    const resume = flag(args, 'resume')
    const asked = workersOption(args)
    const overrides = overridesOf(args)
    const recipes = await loadRecipes(pipeline)
    const { name, recipe, config, dataDir, runDir } = resume
      ? await resumePlan(args, recipes, pipeline)
      : freshPlan(args, recipes, pipeline, overrides)
    const budget = resume ? undefined : budgetOption(args, recipe)
    const engine = await engineFor(args, io, asked)
    const workers = asked ?? defaultWorkers(recipe, config, engine)
    if (!resume)
      await writeRunFile(runDir, { pipeline, recipe: name, dataDir: dataDir ?? null, config })
    io.err(
      `${resume ? 'resuming' : 'training'} ${pipeline} recipe '${name}' in ${runDir}` +
        `${threadsPhrase(workers, config)}\n`,
    )
    const outcome = await runRecipe(
      {
        pipeline,
        recipeName: name,
        recipe,
        config,
        dataDir,
        runDir,
        resume,
        engine,
        workers,
        budget,
        startedAt,
      },
      io,
    )
    if (outcome.status === 'stopped')
      throw interrupted(
        `stopped after step ${outcome.step} (${outcome.epoch} of ${outcome.config.epochs} epochs done); resume with: maco train ${pipeline} --out ${runDir} --resume`,
      )
    if (outcome.status === 'out of time' && budget !== undefined)
      io.err(
        `budget: the ${budgetText(budget)} ran out after ${outcome.epoch} of ${outcome.config.epochs} epochs, which ran slower than timed; the run is whole to there, and maco train ${pipeline} --out ${runDir} --resume trains the rest\n`,
      )
    const summary = {
      runDir,
      status: outcome.status,
      recipe: name,
      engine: engine.name,
      workers,
      epochs: outcome.epoch,
      steps: outcome.step,
      best: outcome.best,
      validation: outcome.validation,
      files: [RUN_FILE, CHECKPOINTS.last, CHECKPOINTS.best, METRICS_FILE, PLOT_FILE].map((f) =>
        join(runDir, f),
      ),
    }
    if (flag(args, 'json')) io.out(`${JSON.stringify(summary)}\n`)
    else
      io.out(
        `trained ${outcome.epoch} epochs (${outcome.step} steps) in ${runDir}; ${outcome.best ? `best val Dice ${outcome.best.valDice.toFixed(3)} at epoch ${outcome.best.epoch}` : 'no validation set: best.ckpt is the last epoch'}\n`,
      )
  },
}
