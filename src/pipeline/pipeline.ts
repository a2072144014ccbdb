/**
 * Pipelines: stages chained with `pipe`, like MONAI's `Compose`, except that the record type
 * is tracked from stage to stage. `then(s)` only accepts a pipeline whose records already
 * have what `s` needs, so a mis-ordered pipeline does not compile; the result type says what
 * each record holds at the end.
 *
 * @example
 * const prep = pipe(
 *   start<{ case: string; image: string; scribble: string }>(),
 *   then(loadNifti('image', 'scribble')),     // paths -> Volumes
 *   then(slices('image', 'scribble')),        // Volumes -> one record per slice
 *   then(mapField('zscore', 'image', zScore)),
 * )
 * prep.stages // ['load image, scribble', 'slices', 'zscore']
 */
import * as A from 'fp-ts/lib/Array.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as RTE from 'fp-ts/lib/ReaderTaskEither.js'
import { stageError, type CaseRecord, type Stage, type StageError } from './stage.ts'

/** `T` with its intersections flattened, so editors show the record as one object. */
export type Simplify<T> = { [K in keyof T]: T[K] } & {}

/** `A` with the keys of `B` added or replaced. */
export type Merge<A, B> = Simplify<Omit<A, keyof B> & B>

export interface Pipeline<R, In, Out> {
  /** The stage names, in order (for logs and run configs). */
  readonly stages: readonly string[]
  /** One input record to its output records (a stage may split or drop records). */
  readonly run: (rec: In) => RTE.ReaderTaskEither<R, StageError, readonly Out[]>
}

/** The empty pipeline over records of type `In`. */
export const start = <In extends CaseRecord>(): Pipeline<unknown, In, In> => ({
  stages: [],
  run: (rec) => RTE.right([rec]),
})

/** Appends a step that maps each record to whole new records (the primitive under `then`). */
const step = <R, In, Mid, R2, Out>(
  p: Pipeline<R, In, Mid>,
  name: string,
  needs: readonly string[],
  f: (rec: Mid) => RTE.ReaderTaskEither<R2, StageError, readonly Out[]>,
): Pipeline<R & R2, In, Out> => {
  const checked = (rec: Mid): RTE.ReaderTaskEither<R2, StageError, readonly Out[]> => {
    const missing = needs.filter((k) => (rec as Record<string, unknown>)[k] === undefined)
    if (missing.length === 0) return f(rec)
    const has = Object.keys(rec as object).join(', ')
    const what = missing.map((k) => `'${k}'`).join(', ')
    return RTE.left(
      stageError(name, rec as CaseRecord, `needs ${what}, which the record lacks (it has ${has})`),
    )
  }
  return {
    stages: [...p.stages, name],
    run: (rec) =>
      pipe(
        p.run(rec),
        RTE.chainW(RTE.traverseSeqArray(checked)),
        RTE.map((outs) => A.flatten(outs.map((o) => [...o]))),
      ),
  }
}

/** Runs `s` on every record of the pipeline and merges what it adds into the record. */
export const then =
  <R2, Need, Add>(s: Stage<R2, Need, Add>) =>
  <R, In, Out extends Need & CaseRecord>(
    p: Pipeline<R, In, Out>,
  ): Pipeline<R & R2, In, Merge<Out, Add>> =>
    step(p, s.name, s.needs, (rec: Out) =>
      pipe(
        s.run(rec),
        RTE.map((adds) => adds.map((add) => ({ ...rec, ...add }) as Merge<Out, Add>)),
      ),
    )

/** Continues with another pipeline (a shared sub-pipeline such as "preprocess"). */
export const compose =
  <R2, Need, Out2>(q: Pipeline<R2, Need, Out2>) =>
  <R, In, Out extends Need>(p: Pipeline<R, In, Out>): Pipeline<R & R2, In, Out2> => ({
    stages: [...p.stages, ...q.stages],
    run: (rec) =>
      pipe(
        p.run(rec),
        RTE.chainW(RTE.traverseSeqArray(q.run)),
        RTE.map((outs) => A.flatten(outs.map((o) => [...o]))),
      ),
  })

type Kept<Out, K extends PropertyKey> = Simplify<
  Pick<Out, Extract<keyof Out, K | keyof CaseRecord>>
>

/** Keeps only `keys` (and the case and slice), e.g. to drop full volumes once sliced. */
export const pick =
  <K extends string>(...keys: readonly K[]) =>
  <R, In, Out extends CaseRecord & { readonly [k in K]: unknown }>(
    p: Pipeline<R, In, Out>,
  ): Pipeline<R, In, Kept<Out, K>> =>
    step(p, `pick ${keys.join(', ')}`, keys, (rec: Out) => {
      const out: Record<string, unknown> = { case: rec.case }
      if (rec.slice !== undefined) out.slice = rec.slice
      for (const k of keys) out[k] = rec[k]
      return RTE.right([out as Kept<Out, K>])
    }) as Pipeline<R, In, Kept<Out, K>>

type Renamed<Out, F extends keyof Out, T extends string> = Merge<
  Omit<Out, F>,
  { readonly [k in T]: Out[F] }
>

/** Moves the value of `from` to `to` (e.g. `label` to `target` for a fully supervised run). */
export const rename =
  <F extends string, T extends string>(from: F, to: T) =>
  <R, In, Out extends CaseRecord & { readonly [k in F]: unknown }>(
    p: Pipeline<R, In, Out>,
  ): Pipeline<R, In, Renamed<Out, F, T>> =>
    step(p, `rename ${from} -> ${to}`, [from], (rec: Out) => {
      const { [from]: value, ...rest } = rec as Record<string, unknown>
      return RTE.right([{ ...rest, [to]: value } as unknown as Renamed<Out, F, T>])
    }) as Pipeline<R, In, Renamed<Out, F, T>>
