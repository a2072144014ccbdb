/**
 * Running a pipeline over a dataset: records one after another (the work is CPU-bound and
 * the machine small), progress reported after each input record through a callback that the
 * CLI connects to its progress bar. `runPipeline` stops at the first failure;
 * `runPipelineCollect` goes on and returns the failures beside the results.
 *
 * @example
 * const bar = progress({ label: 'preprocess', total: cases.length, io })
 * const out = await runPipeline(prep, cases, { seed: 1 }, { onProgress: (p) => bar.tick(p.case) })()
 * if (E.isLeft(out)) io.err(formatStageError(out.left))
 */
import * as E from 'fp-ts/lib/Either.js'
import type { Task } from 'fp-ts/lib/Task.js'
import type { TaskEither } from 'fp-ts/lib/TaskEither.js'
import type { Pipeline } from './pipeline.ts'
import type { CaseRecord, StageError } from './stage.ts'

export interface RunProgress {
  /** Input records finished so far (including failed ones). */
  readonly done: number
  readonly total: number
  /** The case just finished. */
  readonly case: string
  readonly failed: boolean
}

export interface RunOptions {
  readonly onProgress?: (p: RunProgress) => void
  /**
   * Polled before each input record: once it says true the run ends there with the records
   * so far (the caller asked for the stop, so it knows they are partial).
   */
  readonly stopRequested?: () => boolean
}

export interface RunReport<Out> {
  readonly records: readonly Out[]
  readonly errors: readonly StageError[]
}

const runAll = async <R, In extends CaseRecord, Out>(
  p: Pipeline<R, In, Out>,
  inputs: readonly In[],
  env: R,
  opts: RunOptions,
  stopAtFirstError: boolean,
): Promise<RunReport<Out>> => {
  const records: Out[] = []
  const errors: StageError[] = []
  for (let i = 0; i < inputs.length && !opts.stopRequested?.(); i++) {
    const out = await p.run(inputs[i])(env)()
    if (E.isRight(out)) for (const r of out.right) records.push(r)
    else errors.push(out.left)
    opts.onProgress?.({
      done: i + 1,
      total: inputs.length,
      case: inputs[i].case,
      failed: E.isLeft(out),
    })
    if (stopAtFirstError && errors.length > 0) break
  }
  return { records, errors }
}

/** All output records, or the first stage error. */
export const runPipeline =
  <R, In extends CaseRecord, Out>(
    p: Pipeline<R, In, Out>,
    inputs: readonly In[],
    env: R,
    opts: RunOptions = {},
  ): TaskEither<StageError, readonly Out[]> =>
  async () => {
    const report = await runAll(p, inputs, env, opts, true)
    return report.errors.length > 0 ? E.left(report.errors[0]) : E.right(report.records)
  }

/** The output records of the cases that succeeded, and an error per case that failed. */
export const runPipelineCollect =
  <R, In extends CaseRecord, Out>(
    p: Pipeline<R, In, Out>,
    inputs: readonly In[],
    env: R,
    opts: RunOptions = {},
  ): Task<RunReport<Out>> =>
  () =>
    runAll(p, inputs, env, opts, false)
