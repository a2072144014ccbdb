/**
 * `maco bench [train|infer|cpl|serve]`: the performance suite; with no benchmark named it
 * runs all four. Each figure comes with the floor it is judged against and the ratio to it:
 * train against PyTorch on the same machines (measured once, not re-run), infer
 * (onnxruntime-web) against onnxruntime-node, cpl against scipy's exact EDT (measured once),
 * serve (HTTP) against the same inference without HTTP. The measuring is in src/bench/;
 * this file reads the options, runs what was asked and prints a table or one JSON document.
 *
 * @example
 * maco bench train --size 256 --batch 4 --engine wasm --workers 2 --json
 * // {"engine":"wasm","size":256,"batch":4,"workers":2,"msPerStep":...,"imagesPerSecond":...,"ratio":...}
 * maco bench --json   // {"train":[{...1 worker},{...2 workers}],"infer":{...},"cpl":{...},"serve":{...}}
 */
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { cplBench, cplRows, phantomScribbles, scribbleSlices } from '../bench/cpl.ts'
import { inferBench, inferRows } from '../bench/infer.ts'
import { checkModelChoice } from '../bench/model.ts'
import { table, type Row } from '../bench/report.ts'
import { serveBench, serveRows } from '../bench/serve.ts'
import { trainBench, trainRows } from '../bench/train.ts'
import { DEFAULT_UNET, sizeMultiple, unetSpec } from '../model/unet.ts'
import { ENGINE_CHOICES, loadEngine, singleThreaded, type EngineChoice } from '../train/engine.ts'
import {
  flag,
  inputError,
  numberOption,
  optionalString,
  runFailed,
  usageError,
  type Command,
  type CommandIO,
  type Parsed,
} from './command.ts'

const BENCHMARKS = ['train', 'infer', 'cpl', 'serve'] as const
type Benchmark = (typeof BENCHMARKS)[number]

/** The benchmarks each option is for (`--size` and `--json` are for all). */
const OPTION_FOR: Readonly<Record<string, readonly Benchmark[]>> = {
  batch: ['train'],
  base: ['train'],
  engine: ['train'],
  workers: ['train'],
  steps: ['train'],
  profile: ['train'],
  runs: ['infer', 'cpl'],
  model: ['infer', 'serve'],
  data: ['cpl'],
  requests: ['serve'],
}

/** ACDC's training scribbles where the project's data usually is (as pipelines/acdc.ts looks). */
const defaultScribbles = () => join(process.env.MACO_DATA ?? '../shared/data', 'acdc', 'train')
const ACDC_VOLUMES = 20
const SYNTHETIC = 'synthetic'

interface Run {
  readonly json: unknown
  readonly rows: readonly Row[]
}

/**
 * Reads and checks a benchmark's options (throwing usage and input errors), and returns the
 * measuring to do: the whole suite checks every option before it spends minutes measuring.
 */
type Prepare = (args: Parsed, io: CommandIO, all: boolean) => Promise<() => Promise<Run>>

const log = (io: CommandIO) => (line: string) => io.err(`${line}\n`)

const sizeOption = (args: Parsed): number => {
  const size = numberOption(args, 'size', 256, (n) => Number.isInteger(n) && n >= 32 && n <= 1024)
  const multiple = sizeMultiple(unetSpec())
  if (size % multiple !== 0)
    throw usageError(`--size must be a multiple of ${multiple}, got ${size}`)
  return size
}

const modelOption = (args: Parsed): string | undefined => {
  const choice = checkModelChoice(optionalString(args, 'model'))
  if (E.isLeft(choice)) throw inputError(choice.left)
  return choice.right
}

/** The UNet widths worth timing: the reference's 16, the `cpu` recipes' 8, and powers of two around. */
const BASES = [1, 2, 4, 8, 16, 32, 64]

const baseOption = (args: Parsed): number => {
  const v = args.values.base
  if (v === undefined) return DEFAULT_UNET.base
  const base = Number(v)
  if (!BASES.includes(base))
    throw usageError(`--base must be a power of two from 1 to 64, got '${String(v)}'`)
  return base
}

const countOption = (args: Parsed, name: string, fallback: number): number =>
  numberOption(args, name, fallback, (n) => Number.isInteger(n) && n >= 1 && n <= 1000)

const train: Prepare = async (args, io, all) => {
  const size = sizeOption(args)
  const batch = numberOption(args, 'batch', 4, (n) => Number.isInteger(n) && n >= 1 && n <= 64)
  const base = baseOption(args)
  const workers = numberOption(args, 'workers', 1, (n) => n === 1 || n === 2)
  const steps = numberOption(args, 'steps', 3, (n) => Number.isInteger(n) && n >= 1 && n <= 100)
  const profile = flag(args, 'profile')
  if (workers > 1 && profile)
    throw usageError('--profile times the kernels of this thread: use it with --workers 1')
  const engineChoice = optionalString(args, 'engine') ?? 'auto'
  if (!(ENGINE_CHOICES as readonly string[]).includes(engineChoice))
    throw usageError(`--engine must be one of ${ENGINE_CHOICES.join(', ')}, got '${engineChoice}'`)
  const loaded = await loadEngine(engineChoice as EngineChoice)()
  if (E.isLeft(loaded)) throw inputError(loaded.left)
  const engine = loaded.right
  for (const s of engine.skipped) io.err(`skipped engine ${s}\n`)
  if (workers > 1 && !singleThreaded(engine.name))
    throw usageError(
      `--workers 2 is for the single-threaded engines (onnxruntime, wasm, cpu); '${engine.name}' runs in one process`,
    )
  // The whole suite compares one worker with two where two can help, and the onnxruntime
  // engine's graphs with wasm where auto took onnxruntime, unless told otherwise.
  const counts =
    all && args.values.workers === undefined && singleThreaded(engine.name) ? [1, 2] : [workers]
  const engines =
    all && engineChoice === 'auto' && engine.name === 'onnxruntime'
      ? (['wasm', 'onnxruntime'] as const)
      : [engine.name]
  return async () => {
    const results = []
    for (const name of engines) {
      const active = engines.length === 1 ? E.right(engine) : await loadEngine(name)()
      if (E.isLeft(active)) throw runFailed(active.left)
      for (const w of counts)
        results.push(
          await trainBench(
            {
              engine: active.right,
              size,
              batch,
              base,
              workers: w,
              steps,
              profile: profile && w === 1,
            },
            log(io),
          ),
        )
    }
    return { json: all ? results : results[0], rows: results.flatMap(trainRows) }
  }
}

const infer: Prepare = async (args, io) => {
  const settings = {
    model: modelOption(args),
    size: sizeOption(args),
    warmup: 3,
    runs: countOption(args, 'runs', 10),
    threads: [1, 2],
  }
  return async () => {
    const result = await inferBench(settings, log(io))()
    if (E.isLeft(result)) throw runFailed(result.left)
    return { json: result.right, rows: inferRows(result.right) }
  }
}

const cpl: Prepare = async (args, io) => {
  const size = sizeOption(args)
  const rounds = countOption(args, 'runs', 7)
  const given = optionalString(args, 'data')
  if (
    given !== undefined &&
    given !== SYNTHETIC &&
    !statSync(given, { throwIfNoEntry: false })?.isDirectory()
  )
    throw inputError(`--data ${given}: no such folder`)
  const source = given ?? (existsSync(defaultScribbles()) ? defaultScribbles() : SYNTHETIC)
  return async () => {
    const slices =
      source === SYNTHETIC
        ? E.right(phantomScribbles(size, 10))
        : scribbleSlices(source, ACDC_VOLUMES, size)
    if (E.isLeft(slices)) throw inputError(slices.left)
    io.err(`bench cpl: ${slices.right.length} slices (${source}), ${size} px, ${rounds} round(s)\n`)
    const result = cplBench(slices.right, { size, source, rounds })
    return { json: result, rows: cplRows(result) }
  }
}

const serve: Prepare = async (args, io) => {
  const settings = {
    model: modelOption(args),
    size: sizeOption(args),
    slices: 10,
    requests: countOption(args, 'requests', 16),
  }
  return async () => {
    const result = await serveBench(settings, log(io))()
    // serveBench's errors are the model's (its card); failures of the run itself throw.
    if (E.isLeft(result)) throw inputError(result.left)
    return { json: result.right, rows: serveRows(result.right) }
  }
}

const prepare: Readonly<Record<Benchmark, Prepare>> = { train, infer, cpl, serve }

export const bench: Command = {
  name: 'bench',
  summary: 'performance suite: training, inference, CPL and serving speed against their floors',
  usage: `maco bench [${BENCHMARKS.join('|')}] [options]     (no benchmark: all four)`,
  details: [
    'train: full MaCo training steps of the reference UNet on synthetic data, against PyTorch',
    '       (2.2 s a step at 256 px, 0.48 s at 128, batch 4, 2 threads: measured once, not re-run;',
    '       other --base widths have no floor)',
    'infer: ms per slice on onnxruntime-web (1 and 2 threads, a process each), against onnxruntime-node',
    'cpl:   ms per slice of continuous pseudo labels (4 classes), against scipy (5.9 ms at 256 px, once)',
    'serve: POST /segment of a 10-slice .nii.gz, 1 and 8 clients, against segmentVolume without HTTP',
    'The whole suite runs train with 1 and with 2 workers (onnxruntime, wasm, cpu), and on wasm too',
    'where auto took onnxruntime (its onnxruntime graphs against wasm, in the same run).',
    '',
    '  --size PX        image / slice size, a multiple of 16, 32..1024 (default 256); serve: the',
    "                   random model's input (a model file's card gives its own)",
    '  --json           one JSON document on stdout (all four: {"train":[...],"infer","cpl","serve"})',
    'train:',
    '  --batch N        images per step (default 4)',
    `  --base N         UNet base width, a power of two 1..64 (default ${DEFAULT_UNET.base}, the reference; the cpu`,
    '                   recipes train it at 128 px: --size 128)',
    `  --engine NAME    ${ENGINE_CHOICES.join('|')} (default auto)`,
    '  --workers 1|2    worker threads running the two forward/backward passes (onnxruntime, wasm,',
    '                   cpu)',
    '  --steps N        timed steps after one warm-up (default 3); the median is reported',
    '  --profile        then time one more step per tfjs kernel (top kernels on stderr, all in the',
    '                   JSON; on onnxruntime the passes run as onnxruntime graphs, outside them)',
    '                   {"engine","size","batch","base","workers","msPerStep","imagesPerSecond","stepsMs",',
    '                   "reference","ratio"[,"kernels"]}',
    'infer, serve:',
    '  --model FILE     an .onnx file with its card beside it, or random (default: models/acdc-maco.onnx',
    '                   when it exists, else the default UNet with seeded random weights: the same cost)',
    'infer, cpl:',
    '  --runs N         infer: timed runs per configuration after 3 warm-up runs (default 10);',
    '                   cpl: timed rounds of at least 200 slices (default 7); the median is reported',
    'cpl:',
    '  --data DIR       a folder of *_scribble.nii.gz (the first 20) or synthetic (default: the ACDC',
    '                   training scribbles in $MACO_DATA/acdc/train or ../shared/data/acdc/train when',
    '                   there, else synthetic phantoms)',
    'serve:',
    '  --requests N     direct calls and 1-client requests (default 16); 8 clients send 2.5 x N',
  ].join('\n'),
  options: {
    size: { type: 'string' },
    batch: { type: 'string' },
    base: { type: 'string' },
    engine: { type: 'string' },
    workers: { type: 'string' },
    steps: { type: 'string' },
    profile: { type: 'boolean' },
    runs: { type: 'string' },
    model: { type: 'string' },
    data: { type: 'string' },
    requests: { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    const kind = args.positionals[0]
    if (kind !== undefined && !(BENCHMARKS as readonly string[]).includes(kind))
      throw usageError(
        `expected a benchmark (${BENCHMARKS.join(', ')}) or none for all, got '${kind}'`,
      )
    if (args.positionals.length > 1)
      throw usageError(`unexpected argument '${args.positionals[1]}'`)
    const chosen: readonly Benchmark[] = kind === undefined ? BENCHMARKS : [kind as Benchmark]
    for (const [option, targets] of Object.entries(OPTION_FOR))
      if (args.values[option] !== undefined && !targets.some((b) => chosen.includes(b)))
        throw usageError(`--${option} is for ${targets.join(', ')}, not ${chosen.join(', ')}`)
    const all = kind === undefined
    const measure = []
    for (const b of chosen) measure.push(await prepare[b](args, io, all))
    const runs: Run[] = []
    for (const m of measure) runs.push(await m())
    if (!flag(args, 'json')) io.out(table(runs.flatMap((r) => r.rows)))
    else if (!all) io.out(`${JSON.stringify(runs[0].json)}\n`)
    else io.out(`${JSON.stringify(Object.fromEntries(chosen.map((b, i) => [b, runs[i].json])))}\n`)
  },
}
