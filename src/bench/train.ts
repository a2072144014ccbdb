/**
 * Training speed: full MaCo training steps (two forwards, the MaCo loss, both backwards,
 * Adam) of the reference UNet (the `cpu` recipes train it at 128 px) or one of another base
 * width, on a synthetic batch, the median of the timed steps after one warm-up step. The floor is
 * PyTorch on the same machines (DESIGN.md's reference UNet, batch 4, 2 threads), measured
 * once before the project and not re-run here: other widths have none.
 *
 * @example
 * const engine = (await loadEngine('wasm')())  // Right(engine)
 * await trainBench({ engine, size: 256, batch: 4, workers: 2, steps: 3, profile: false }, log)
 * // { engine: 'wasm', size: 256, batch: 4, base: 16, workers: 2, msPerStep: ..., ratio: ... }
 * await trainBench({ engine, size: 128, batch: 4, base: 8, workers: 2, steps: 3, profile: false }, log)
 * // { ..., base: 8, reference: null, ratio: null }
 */
import * as tf from '@tensorflow/tfjs-core'
import { DEFAULT_LOSS, type LossTargets } from '../maco/losses.ts'
import { initialWeights, toParams } from '../model/tfjs-unet.ts'
import { DEFAULT_UNET, unetSpec } from '../model/unet.ts'
import type { Engine } from '../train/engine.ts'
import { trainingPasses } from '../train/parallel.ts'
import {
  disposeState,
  initialState,
  trainStep,
  type MacoStepLoss,
  type StepBatch,
} from '../train/step.ts'
import { seeded } from '../util/rng.ts'
import type { Row } from './report.ts'
import { median, ratioTo } from './stats.ts'

export interface TrainSettings {
  readonly engine: Engine
  readonly size: number
  readonly batch: number
  /** The UNet's first-level channels (default: the reference UNet's). */
  readonly base?: number
  /** Worker threads running the passes (wasm, cpu); 1 runs them in this thread. */
  readonly workers: number
  /** Timed steps after the warm-up. */
  readonly steps: number
  /** Then time one more step per kernel (this thread's kernels: workers 1 only). */
  readonly profile: boolean
}

export interface KernelTime {
  readonly name: string
  readonly ms: number
  readonly calls: number
}

/** PyTorch 2.13 on the CPU, 2 threads, one MaCo step of the reference UNet at batch 4. */
const PYTORCH_MS_PER_STEP: Readonly<Record<number, number>> = { 256: 2200, 128: 480 }
const PYTORCH =
  'PyTorch 2.13 CPU, 2 threads, batch 4: measured once on these machines (notes), not re-run'

/** PyTorch's ms per step where it was measured: the reference UNet at batch 4, 256 or 128 px. */
export const pytorchMsPerStep = (size: number, batch: number, base: number): number | undefined =>
  batch === 4 && base === DEFAULT_UNET.base ? PYTORCH_MS_PER_STEP[size] : undefined

export interface TrainResult {
  readonly engine: string
  /** The GPU, for engines that name it (webgpu). */
  readonly device?: string
  readonly size: number
  readonly batch: number
  readonly base: number
  readonly workers: number
  readonly msPerStep: number
  readonly imagesPerSecond: number
  readonly stepsMs: readonly number[]
  /** The PyTorch step time at this size and batch (reference UNet only); else null. */
  readonly reference: { readonly msPerStep: number; readonly source: string } | null
  /** msPerStep / reference.msPerStep. */
  readonly ratio: number | null
  readonly kernels?: readonly KernelTime[]
}

interface BenchBatch extends StepBatch {
  readonly masked: tf.Tensor4D
  readonly targets: LossTargets
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
  const scribbles = Uint8Array.from({ length: n }, () =>
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
    targets: { scribbles, unlabelled, cpl, gc },
  }
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

/** Times the steps; progress (and the top kernels when profiling) go to `log`. */
export const trainBench = async (
  s: TrainSettings,
  log: (line: string) => void,
): Promise<TrainResult> => {
  const { engine, size, batch, workers, steps } = s
  const base = s.base ?? DEFAULT_UNET.base
  if (workers > 1 && s.profile)
    throw new RangeError('profiling times the kernels of this thread: use it with 1 worker')
  const spec = unetSpec({ base })
  log(
    `bench train: engine ${engine.name}${engine.device ? ` on ${engine.device}` : ''}, ${size} px, batch ${batch}, base ${base}, ${workers} worker(s), 1 warm-up + ${steps} step(s)`,
  )
  const weights = initialWeights(spec, 0)
  let state = initialState(spec, toParams(spec, weights))
  const passes = await trainingPasses(spec, engine.name, workers)
  const data = syntheticBatch(batch, size, spec.options.classes)
  // The trainer's loss, as data: on two workers each evaluates its pass's branch.
  const loss: MacoStepLoss<BenchBatch> = {
    kind: 'maco',
    config: DEFAULT_LOSS,
    targets: (b) => b.targets,
  }
  const times: number[] = []
  let kernels: KernelTime[] | undefined
  try {
    for (let i = 0; i <= steps; i++) {
      const t0 = performance.now()
      const r = await trainStep(passes, state, data, loss, { seed: 0, step: i })
      const ms = performance.now() - t0
      state = r.state
      if (!Number.isFinite(r.loss)) throw new Error(`the loss is ${r.loss} at step ${i}`)
      log(
        `  step ${i}${i === 0 ? ' (warm-up)' : ''}: ${ms.toFixed(0)} ms, loss ${r.loss.toFixed(4)}`,
      )
      if (i > 0) times.push(ms)
    }
    if (s.profile) {
      const info = await tf.profile(async () => {
        state = (await trainStep(passes, state, data, loss, { seed: 0, step: steps + 1 })).state
        return []
      })
      kernels = kernelTable(info.kernels)
      for (const k of kernels.slice(0, 12))
        log(
          `  ${k.name.padEnd(24)} ${String(k.ms).padStart(7)} ms ${String(k.calls).padStart(5)} calls`,
        )
    }
  } finally {
    await passes.close()
    disposeState(state)
    tf.dispose([data.image, data.masked])
  }
  const msPerStep = median(times)
  const pytorch = pytorchMsPerStep(size, batch, base)
  return {
    engine: engine.name,
    ...(engine.device ? { device: engine.device } : {}),
    size,
    batch,
    base,
    workers,
    msPerStep: Math.round(msPerStep),
    imagesPerSecond: Number(((batch * 1000) / msPerStep).toFixed(2)),
    stepsMs: times.map(Math.round),
    reference: pytorch === undefined ? null : { msPerStep: pytorch, source: PYTORCH },
    ratio: ratioTo(msPerStep, pytorch),
    ...(kernels ? { kernels } : {}),
  }
}

export const trainRows = (r: TrainResult): Row[] => [
  {
    bench: 'train',
    setting: `${r.engine}, ${r.size} px, batch ${r.batch}${r.base === DEFAULT_UNET.base ? '' : `, base ${r.base}`}, ${r.workers} worker${r.workers > 1 ? 's' : ''}`,
    result: `${r.msPerStep} ms/step (${r.imagesPerSecond} images/s)`,
    floor: r.reference
      ? `${r.reference.msPerStep} ms (PyTorch, 2 threads, measured once)`
      : `none (PyTorch was measured on the reference UNet, base ${DEFAULT_UNET.base}, at 256 and 128 px, batch 4)`,
    ratio: r.ratio,
  },
]
