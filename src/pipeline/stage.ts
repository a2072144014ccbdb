/**
 * A stage: one named step of a pipeline that reads some keys of a record and adds or replaces
 * others, like a MONAI dictionary transform, but typed: `Stage<R, In, Add>` needs a record
 * with at least `In` (and an environment `R`) and adds `Add`. A stage may also turn one record
 * into several (a volume into its slices) or none.
 *
 * Failures are values: a stage returns `Left(message)` or throws, and the pipeline reports
 * `stage 'zscore' failed on patient003_frame01 (slice 4): <message>`. Wrapping a pure function
 * is one line, so preprocessing, CPL or masking code stays free of pipeline concerns.
 *
 * @example
 * const norm = mapField('zscore', 'image', zScore)               // (Slice) => Slice
 * const cpl = stage('cpl', (r: { scribble: Slice }) => ({ cpl: pseudoLabels(r.scribble) }))
 * const mask = stageRandom('mask', (r: { image: Slice }, rng) => ({ masked: maskImage(r.image, rng) }))
 */
import * as E from 'fp-ts/lib/Either.js'
import type { ReaderTaskEither } from 'fp-ts/lib/ReaderTaskEither.js'
import { seeded, type Rng } from '../util/rng.ts'

/** Every record names its case (and its slice, once split), so errors can say which failed. */
export interface CaseRecord {
  readonly case: string
  readonly slice?: number
}

export interface StageError {
  readonly stage: string
  readonly case: string
  readonly slice?: number
  readonly message: string
}

export const formatStageError = (e: StageError): string =>
  `stage '${e.stage}' failed on ${e.case}${e.slice === undefined ? '' : ` (slice ${e.slice})`}: ${e.message}`

export const stageError = (stage: string, rec: CaseRecord, message: string): StageError => ({
  stage,
  case: rec.case,
  ...(rec.slice === undefined ? {} : { slice: rec.slice }),
  message,
})

export interface Stage<R, In, Add> {
  readonly name: string
  /**
   * Keys checked before the stage runs. The compiler checks typed pipelines; this check is
   * for pipelines loaded from JSON, so a mis-ordered config fails with words, not a TypeError.
   */
  readonly needs: readonly string[]
  /** What to add to the record: one element per output record (several to split, none to drop). */
  readonly run: (rec: In & CaseRecord) => ReaderTaskEither<R, StageError, readonly Add[]>
}

/** The environment of stages that draw random numbers: one seed for the whole run. */
export interface SeedEnv {
  readonly seed: number
}

type Outcome<A> = A | E.Either<string, A>

const isEither = (u: unknown): u is E.Either<string, unknown> =>
  typeof u === 'object' &&
  u !== null &&
  (((u as { _tag?: unknown })._tag === 'Left' && 'left' in u) ||
    ((u as { _tag?: unknown })._tag === 'Right' && 'right' in u))

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** The one place a stage body runs: thrown errors and `Left`s become `StageError`s. */
const guarded = <R, In, Add>(
  name: string,
  needs: readonly string[],
  body: (
    rec: In & CaseRecord,
    env: R,
  ) => Promise<Outcome<readonly Add[]>> | Outcome<readonly Add[]>,
): Stage<R, In, Add> => ({
  name,
  needs,
  run: (rec) => (env) => async () => {
    try {
      const out = await body(rec, env)
      if (!isEither(out)) return E.right(out)
      return E.isLeft(out)
        ? E.left(stageError(name, rec, out.left))
        : E.right(out.right as readonly Add[])
    } catch (e) {
      return E.left(stageError(name, rec, messageOf(e)))
    }
  },
})

const one = <A>(out: Outcome<A>): Outcome<readonly A[]> =>
  isEither(out)
    ? (E.map((a: A) => [a])(out as E.Either<string, A>) as Outcome<readonly A[]>)
    : [out]

export interface StageOptions<In> {
  readonly needs?: readonly (keyof In & string)[]
}

/** A pure stage: `f` returns the keys to add, or `Left(reason)`. */
export const stage = <In, Add extends object>(
  name: string,
  f: (rec: In) => Outcome<Add>,
  opts: StageOptions<In> = {},
): Stage<unknown, In, Add> => guarded(name, opts.needs ?? [], (rec: In) => one(f(rec)))

/** A pure stage that turns one record into several (or none): e.g. a volume into its slices. */
export const expandStage = <In, Add extends object>(
  name: string,
  f: (rec: In) => Outcome<readonly Add[]>,
  opts: StageOptions<In> = {},
): Stage<unknown, In, Add> => guarded(name, opts.needs ?? [], (rec: In) => f(rec))

/** A stage that does I/O or reads its environment (an engine, a data root). */
export const stageRTE = <R, In, Add extends object>(
  name: string,
  f: (rec: In) => ReaderTaskEither<R, string, Add>,
  opts: StageOptions<In> = {},
): Stage<R, In, Add> =>
  guarded(name, opts.needs ?? [], async (rec: In, env: R) => one(await f(rec)(env)()))

/**
 * A stage that draws random numbers. Its generator is seeded from the run's seed, the stage
 * name, the case and the slice, so a record gets the same draws whatever order records run in.
 */
export const stageRandom = <In, Add extends object>(
  name: string,
  f: (rec: In, rng: Rng) => Outcome<Add>,
  opts: StageOptions<In> = {},
): Stage<SeedEnv, In, Add> =>
  guarded(name, opts.needs ?? [], (rec: In & CaseRecord, env: SeedEnv) =>
    one(f(rec, seeded(env.seed, name, rec.case, rec.slice ?? -1))),
  )

/**
 * Replace one or more fields by `f` of their value: the way to wrap a `(Slice) => Slice`.
 * With several keys, each is mapped on its own (e.g. scribble and label, both nearest).
 */
export const mapField = <K extends string, A, B>(
  name: string,
  keys: K | readonly K[],
  f: (value: A) => Outcome<B>,
): Stage<unknown, { readonly [k in K]: A }, { readonly [k in K]: B }> => {
  const list: readonly K[] = typeof keys === 'string' ? [keys] : keys
  return stage(
    name,
    (rec: { readonly [k in K]: A }) => {
      const out: Partial<Record<K, B>> = {}
      for (const k of list) {
        const v = f(rec[k])
        if (!isEither(v)) out[k] = v
        else if (E.isLeft(v)) return E.left(list.length > 1 ? `${k}: ${v.left}` : v.left)
        else out[k] = v.right as B
      }
      return E.right(out as { readonly [k in K]: B })
    },
    { needs: list },
  )
}
