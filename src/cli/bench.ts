/**
 * `maco bench KIND`: the performance suite. `train` times full MaCo training steps (two
 * forwards, the MaCo loss, both backwards, Adam) of the reference UNet on synthetic data,
 * and reports the median of the timed steps after one warm-up step: the machine may be
 * shared, so a median, not a mean.
 *
 * @example
 * maco bench train --size 256 --batch 4 --engine wasm --workers 2 --json
 * // {"engine":"wasm","size":256,"batch":4,"workers":2,"msPerStep":...,"imagesPerSecond":...}
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { DEFAULT_LOSS, macoLoss } from '../maco/losses.ts'
import { initialWeights, toParams } from '../model/tfjs-unet.ts'
import { sizeMultiple, unetSpec } from '../model/unet.ts'
import { ENGINE_CHOICES, loadEngine, type EngineChoice } from '../train/engine.ts'
import { workerPasses } from '../train/parallel.ts'
import { disposeState, initialState, inProcess, trainStep, type StepBatch } from '../train/step.ts'
import { seeded } from '../util/rng.ts'
import {
  flag,
  inputError,
  numberOption,
  optionalString,
  usageError,
  type Command,
  type CommandIO,
  type Parsed,
} from './command.ts'

interface BenchBatch extends StepBatch {
  readonly masked: tf.Tensor4D
  readonly scribbles: tf.Tensor3D
  readonly cpl: tf.Tensor4D
  readonly gc: tf.Tensor3D
}

/** Random images, half of their 16 px patches zeroed, sparse scribbles, CPL and a GC disc. */
const syntheticBatch = (batch: number, size: number, classes: number): BenchBatch => {
  const rng = seeded('bench', 'batch')
  const n = batch * size * size
  const image = Float32Array.from({ length: n }, () => rng.normal())
  const patch = Math.max(1, size / 16)
  const masked = image.map((v, i) => {
    const x = Math.floor((i % size) / patch)
    const y = Math.floor((Math.floor(i / size) % size) / patch)
    return (x + y) % 2 === 0 ? 0 : v
  })
  const unlabelled = classes
  const scribbles = Int32Array.from({ length: n }, () =>
    rng.uniform() < 0.05 ? rng.int(classes) : unlabelled,
  )
  const cpl = Float32Array.from({ length: n * classes }, () =>
    rng.uniform() < 0.3 ? rng.uniform() : 0,
  )
  const gc = Float32Array.from({ length: n }, (_, i) => {
    const x = (i % size) / size - 0.5
    const y = (Math.floor(i / size) % size) / size - 0.5
    return x * x + y * y < 0.16 ? 1 : 0
  })
  return {
    image: tf.tensor4d(image, [batch, size, size, 1]),
    masked: tf.tensor4d(masked, [batch, size, size, 1]),
    scribbles: tf.tensor3d(scribbles, [batch, size, size], 'int32'),
    cpl: tf.tensor4d(cpl, [batch, size, size, classes]),
    gc: tf.tensor3d(gc, [batch, size, size]),
  }
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

interface KernelTime {
  readonly name: string
  readonly ms: number
  readonly calls: number
}

/** Kernel time per kernel name over a `tf.profile` run, largest first. */
const kernelTable = (kernels: readonly { name: string; kernelTimeMs: unknown }[]): KernelTime[] => {
  const by = new Map<string, { ms: number; calls: number }>()
  for (const k of kernels) {
    const e = by.get(k.name) ?? { ms: 0, calls: 0 }
    by.set(k.name, {
      ms: e.ms + (typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0),
      calls: e.calls + 1,
    })
  }
  return [...by]
    .map(([name, e]) => ({ name, ms: Math.round(e.ms), calls: e.calls }))
    .sort((a, b) => b.ms - a.ms)
}

const benchTrain = async (args: Parsed, io: CommandIO): Promise<void> => {
  const spec = unetSpec()
  const size = numberOption(args, 'size', 256, (n) => Number.isInteger(n) && n > 0 && n <= 1024)
  if (size % sizeMultiple(spec) !== 0)
    throw usageError(`--size must be a multiple of ${sizeMultiple(spec)}, got ${size}`)
  const batch = numberOption(args, 'batch', 4, (n) => Number.isInteger(n) && n >= 1 && n <= 64)
  const workers = numberOption(args, 'workers', 1, (n) => n === 1 || n === 2)
  const steps = numberOption(args, 'steps', 3, (n) => Number.isInteger(n) && n >= 1 && n <= 100)
  if (workers > 1 && flag(args, 'profile'))
    throw usageError('--profile times the kernels of this thread: use it with --workers 1')
  const engineChoice = optionalString(args, 'engine') ?? 'auto'
  if (!(ENGINE_CHOICES as readonly string[]).includes(engineChoice))
    throw usageError(`--engine must be one of ${ENGINE_CHOICES.join(', ')}, got '${engineChoice}'`)
  const loaded = await loadEngine(engineChoice as EngineChoice)()
  if (E.isLeft(loaded)) throw inputError(loaded.left)
  const engine = loaded.right
  for (const s of engine.skipped) io.err(`skipped engine ${s}\n`)
  if (workers > 1 && engine.name !== 'wasm' && engine.name !== 'cpu')
    throw usageError(
      `--workers 2 is for the single-threaded engines (wasm, cpu); '${engine.name}' uses every core itself`,
    )
  io.err(
    `bench train: engine ${engine.name}, ${size} px, batch ${batch}, ${workers} worker(s), 1 warm-up + ${steps} step(s)\n`,
  )

  const weights = initialWeights(spec, 0)
  let state = initialState(spec, toParams(spec, weights))
  const passes =
    workers === 1
      ? inProcess(spec)
      : await workerPasses(spec, engine.name as 'wasm' | 'cpu', workers)
  const data = syntheticBatch(batch, size, spec.options.classes)
  const loss = (logits: tf.Tensor4D, maskedLogits: tf.Tensor4D | undefined, b: BenchBatch) =>
    macoLoss(DEFAULT_LOSS, {
      logits,
      maskedLogits,
      scribbles: b.scribbles,
      cpl: b.cpl,
      gc: b.gc,
      unlabelled: spec.options.classes,
    })
  const times: number[] = []
  let kernels: KernelTime[] | undefined
  try {
    for (let i = 0; i <= steps; i++) {
      const t0 = performance.now()
      const r = await trainStep(passes, state, data, loss, { seed: 0, step: i })
      const ms = performance.now() - t0
      state = r.state
      if (!Number.isFinite(r.loss)) throw new Error(`the loss is ${r.loss} at step ${i}`)
      io.err(
        `  step ${i}${i === 0 ? ' (warm-up)' : ''}: ${ms.toFixed(0)} ms, loss ${r.loss.toFixed(4)}\n`,
      )
      if (i > 0) times.push(ms)
    }
    if (flag(args, 'profile')) {
      if (workers > 1)
        throw usageError('--profile times kernels on this thread: use it with --workers 1')
      const info = await tf.profile(async () => {
        state = (await trainStep(passes, state, data, loss, { seed: 0, step: steps + 1 })).state
        return []
      })
      kernels = kernelTable(info.kernels)
      for (const k of kernels.slice(0, 12))
        io.err(
          `  ${k.name.padEnd(24)} ${String(k.ms).padStart(7)} ms ${String(k.calls).padStart(5)} calls\n`,
        )
    }
  } finally {
    await passes.close()
    disposeState(state)
    tf.dispose(Object.values(data))
  }
  const msPerStep = median(times)
  const result = {
    engine: engine.name,
    size,
    batch,
    workers,
    msPerStep: Math.round(msPerStep),
    imagesPerSecond: Number(((batch * 1000) / msPerStep).toFixed(2)),
    stepsMs: times.map(Math.round),
    ...(kernels ? { kernels } : {}),
  }
  if (flag(args, 'json')) io.out(`${JSON.stringify(result)}\n`)
  else
    io.out(
      `${engine.name}: ${result.msPerStep} ms/step (median of ${steps}), ${result.imagesPerSecond} images/s\n`,
    )
}

const benchmarks: Readonly<Record<string, (args: Parsed, io: CommandIO) => Promise<void>>> = {
  train: benchTrain,
}

export const bench: Command = {
  name: 'bench',
  summary: 'performance suite: time training steps (more benchmarks: see KIND)',
  usage: 'maco bench KIND [options]      KIND: train',
  details: [
    'train: full MaCo training steps of the reference UNet on synthetic data',
    '  --size PX        image size, a multiple of 16 (default 256)',
    '  --batch N        images per step (default 4)',
    '  --engine NAME    auto|wasm|cpu|tensorflow|tensorflow-gpu (default auto)',
    '  --workers 1|2    worker threads running the two forward/backward passes (wasm, cpu)',
    '  --steps N        timed steps after one warm-up (default 3); the median is reported',
    '  --profile        then time one more step per kernel (top kernels on stderr, all in the JSON)',
    '  --json           one JSON document on stdout:',
    '                   {"engine","size","batch","workers","msPerStep","imagesPerSecond","stepsMs"[,"kernels"]}',
  ].join('\n'),
  options: {
    size: { type: 'string' },
    batch: { type: 'string' },
    engine: { type: 'string' },
    workers: { type: 'string' },
    steps: { type: 'string' },
    profile: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    const kind = args.positionals[0]
    const run = kind === undefined ? undefined : benchmarks[kind]
    if (!run)
      throw usageError(
        `expected a benchmark (${Object.keys(benchmarks).join(', ')}), got '${kind ?? ''}'`,
      )
    if (args.positionals.length > 1)
      throw usageError(`unexpected argument '${args.positionals[1]}'`)
    await run(args, io)
  },
}
