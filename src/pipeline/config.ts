/**
 * Pipelines from JSON: a registry maps a stage kind to an io-ts codec for its parameters and
 * a function that makes the stage, so the same stages can be written in code or listed in a
 * config file. Errors name the stage by position and kind:
 * "stage 2 'resample': spacing must be a positive number, got -1".
 *
 * A config-made pipeline is not typed record by record (the compiler never sees the JSON);
 * each stage's `needs` are checked when it runs instead.
 *
 * @example
 * const registry = { ...fieldKinds, zscore: stageKind(t.type({}), () => mapField('zscore', 'image', zScore)) }
 * pipelineFromConfig({ stages: [{ kind: 'load', keys: ['image'] }, { kind: 'zscore' }] }, registry)
 * // Right(pipeline) with stages ['load image', 'zscore']
 */
import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import { decodeStrict, isObject } from './decode.ts'
import { start, then, type Pipeline } from './pipeline.ts'
import type { CaseRecord, Stage } from './stage.ts'

/** A record of a config-made pipeline: its keys are known only at run time. */
export type AnyRecord = CaseRecord & Readonly<Record<string, unknown>>

// `any` here is the boundary between JSON and types: a kind's stage is typed where it is made.
export type AnyPipeline = Pipeline<any, any, any>
export type Operator = (p: AnyPipeline) => AnyPipeline
export type AnyStage = Stage<any, any, any>

export interface StageKind<P> {
  readonly params: t.Decoder<unknown, P>
  readonly make: (params: P) => Operator
}

export type Registry = Readonly<Record<string, StageKind<any>>>

/**
 * A registry entry. `make` returns a stage (appended with `then`) or a pipeline operator
 * such as `pick(...)`.
 */
export const stageKind = <P>(
  params: t.Decoder<unknown, P>,
  make: (params: P) => AnyStage | Operator,
): StageKind<P> => ({
  params,
  make: (p) => {
    const made = make(p)
    return typeof made === 'function' ? made : then(made)
  },
})

/**
 * `{ "stages": [{ "kind": "load", "keys": ["image"] }, ...] }` to a pipeline whose stages
 * come from `registry`, or the first problem in words.
 */
export const pipelineFromConfig = <R = unknown>(
  config: unknown,
  registry: Registry,
): E.Either<string, Pipeline<R, AnyRecord, AnyRecord>> => {
  if (!isObject(config) || !Array.isArray(config.stages))
    return E.left('a pipeline config is an object with a "stages" list')
  const kinds = Object.keys(registry).join(', ')
  let p: AnyPipeline = start<AnyRecord>()
  for (let i = 0; i < config.stages.length; i++) {
    const entry: unknown = config.stages[i]
    const where = `stage ${i + 1}`
    if (!isObject(entry) || typeof entry.kind !== 'string')
      return E.left(`${where}: expected an object with a "kind" (one of ${kinds})`)
    const kind = entry.kind
    if (!Object.hasOwn(registry, kind))
      return E.left(`${where}: unknown kind '${kind}' (known: ${kinds})`)
    const params = decodeStrict(registry[kind].params, ['kind'])(entry)
    if (E.isLeft(params)) return E.left(`${where} '${kind}': ${params.left}`)
    p = registry[kind].make(params.right)(p)
  }
  return E.right(p)
}
