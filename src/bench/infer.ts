/**
 * Inference speed: milliseconds per slice of the benchmark model (model.ts) through the
 * runtime interface, onnxruntime-web against onnxruntime-node (the floor), at each thread
 * count; the median of the timed runs after warm-up. onnxruntime-web fixes its thread
 * count when its wasm starts, so every configuration runs in a child process of its own
 * (infer-child.ts), one after another. `msPerSlice` / `nativeMsPerSlice` are the medians
 * of the faster thread count of each runtime: on a busy 2-core machine 2 threads can lose
 * to 1, so the summary does not assume. Without onnxruntime-node (an optional dependency)
 * the native figures are null and `nativeUnavailable` says why.
 *
 * @example
 * await inferBench({ model: undefined, size: 256, warmup: 3, runs: 10, threads: [1, 2] }, log)()
 * // Right({ runtime: 'onnxruntime-web', size: 256, msPerSlice: 167, nativeMsPerSlice: 20, ratio: 8.35, results: [...] })
 */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { createSession, type RuntimeName } from '../serve/runtime.ts'
import { seeded } from '../util/rng.ts'
import { benchModel, type BenchModel } from './model.ts'
import type { Row } from './report.ts'
import { median, ratioTo, rounded } from './stats.ts'

export interface InferSettings {
  /** An `.onnx` file, `random`, or undefined for the shipped model else random (model.ts). */
  readonly model: string | undefined
  /** Slices are size x size. */
  readonly size: number
  readonly warmup: number
  readonly runs: number
  readonly threads: readonly number[]
}

export interface InferRun {
  readonly runtime: RuntimeName
  readonly threads: number
  readonly msPerSlice: number
  readonly minMsPerSlice: number
}

export interface InferResult {
  readonly runtime: 'onnxruntime-web'
  readonly size: number
  readonly model: string
  readonly trained: boolean
  readonly runs: number
  readonly msPerSlice: number
  readonly nativeMsPerSlice: number | null
  /** msPerSlice / nativeMsPerSlice: what running on wasm costs. */
  readonly ratio: number | null
  readonly nativeUnavailable?: string
  readonly results: readonly InferRun[]
}

export type SliceTiming = Pick<InferSettings, 'size' | 'warmup' | 'runs'>

/** Times `runs` single-slice runs after `warmup` on one session of `model`, in this process. */
export const timeSlices = async (
  model: BenchModel,
  runtime: 'web' | 'node',
  threads: number,
  t: SliceTiming,
): Promise<InferRun> => {
  const bytes = await model.store.read(`${model.base}.onnx`)
  if (bytes === undefined) throw new Error(`${model.store.where}/${model.base}.onnx is missing`)
  const session = await createSession(bytes, { runtime, threads })
  const rng = seeded(2, 'bench-infer')
  const slice = Float32Array.from({ length: t.size * t.size }, () => rng.normal())
  const times: number[] = []
  try {
    for (let i = 0; i < t.warmup + t.runs; i++) {
      const t0 = performance.now()
      await session.run(slice, [1, 1, t.size, t.size])
      if (i >= t.warmup) times.push(performance.now() - t0)
    }
  } finally {
    await session.release()
  }
  return {
    runtime: session.runtimeName,
    threads: session.threads,
    msPerSlice: rounded(median(times), 1),
    minMsPerSlice: rounded(Math.min(...times), 1),
  }
}

const CHILD = fileURLToPath(new URL('./infer-child.ts', import.meta.url))
/** The child is TypeScript too: load it through tsx, whatever loader this process used. */
const TSX = import.meta.resolve('tsx')

/** One configuration in a fresh process; Left: the child's one-line reason. */
const inChild =
  (choice: string, runtime: 'web' | 'node', threads: number, t: SliceTiming) =>
  (): Promise<E.Either<string, InferRun>> =>
    new Promise((resolve) =>
      execFile(
        process.execPath,
        ['--import', TSX, CHILD, JSON.stringify({ model: choice, runtime, threads, ...t })],
        { encoding: 'utf8', maxBuffer: 1 << 20 },
        (error, stdout, stderr) => {
          const last = (text: string) => text.trim().split('\n').pop() ?? ''
          resolve(
            error
              ? E.left(last(stderr) || error.message.split('\n')[0])
              : E.right(JSON.parse(last(stdout)) as InferRun),
          )
        },
      ),
    )

const fastest = (runs: readonly InferRun[]) => Math.min(...runs.map((r) => r.msPerSlice))

/** Every runtime and thread count, one child process each; Left when onnxruntime-web fails. */
export const inferBench =
  (s: InferSettings, log: (line: string) => void): TE.TaskEither<string, InferResult> =>
  async () => {
    const model = await benchModel(s.model, s.size)()
    if (E.isLeft(model)) return model
    const { base, choice, trained } = model.right
    const timing: SliceTiming = { size: s.size, warmup: s.warmup, runs: s.runs }
    const each = (runtime: 'web' | 'node') =>
      TE.traverseSeqArray((threads: number) => {
        log(`bench infer: ${base}, onnxruntime-${runtime}, ${threads} thread(s), ${s.size} px`)
        return inChild(choice, runtime, threads, timing)
      })(s.threads)()
    const web = await each('web')
    if (E.isLeft(web)) return E.left(`onnxruntime-web failed: ${web.left}`)
    const native = await each('node')
    const nativeMs = E.isRight(native) ? fastest(native.right) : null
    const msPerSlice = fastest(web.right)
    return E.right({
      runtime: 'onnxruntime-web',
      size: s.size,
      model: base,
      trained,
      runs: s.runs,
      msPerSlice,
      nativeMsPerSlice: nativeMs,
      ratio: ratioTo(msPerSlice, nativeMs),
      ...(E.isLeft(native) ? { nativeUnavailable: native.left } : {}),
      results: [...web.right, ...(E.isRight(native) ? native.right : [])],
    })
  }

/** One row per runtime and thread count, each against the fastest onnxruntime-node run. */
export const inferRows = (r: InferResult): Row[] =>
  r.results.map((run) => ({
    bench: 'infer',
    setting: `${run.runtime}, ${run.threads} thread${run.threads === 1 ? '' : 's'}, ${r.size} px slice, ${r.model}${r.trained ? '' : ' (random weights)'}`,
    result: `${run.msPerSlice} ms/slice`,
    floor:
      r.nativeMsPerSlice === null
        ? `none: ${r.nativeUnavailable ?? 'onnxruntime-node did not run'}`
        : `${r.nativeMsPerSlice} ms (onnxruntime-node, fastest)`,
    ratio: ratioTo(run.msPerSlice, r.nativeMsPerSlice),
  }))
