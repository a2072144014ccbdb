import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import tap from 'tap'
import { pipelineFromConfig, stageKind, type Registry } from '../../src/pipeline/config.ts'
import { decodeStrict, decodeTagged, positive } from '../../src/pipeline/decode.ts'
import { fieldKinds } from '../../src/pipeline/fields.ts'
import { runPipeline } from '../../src/pipeline/run.ts'
import { mapField, stage } from '../../src/pipeline/stage.ts'

// A toy "resample": scales a number, with parameters decoded like a real stage's.
const Resample = t.intersection([
  t.type({ spacing: positive }),
  t.partial({ mode: t.keyof({ bilinear: null, nearest: null }), size: t.array(positive) }),
])
const registry: Registry = {
  ...fieldKinds,
  resample: stageKind(Resample, (p) => mapField('resample', 'value', (v: number) => v / p.spacing)),
  square: stageKind(t.type({}), () =>
    stage('square', (r: { value: number }) => ({ sq: r.value ** 2 })),
  ),
}
const config = (...stages: unknown[]) => pipelineFromConfig({ stages }, registry)
const problem = (e: E.Either<string, unknown>) => (E.isLeft(e) ? e.left : 'no error')

tap.test('a config lists stages by kind, with their parameters', async (t) => {
  const p = config(
    { kind: 'resample', spacing: 2, mode: 'nearest' },
    { kind: 'square' },
    { kind: 'rename', from: 'sq', to: 'squared' },
    { kind: 'pick', keys: ['squared'] },
  )
  t.ok(E.isRight(p))
  if (E.isLeft(p)) return
  t.same(p.right.stages, ['resample', 'square', 'rename sq -> squared', 'pick squared'])
  t.same(
    await runPipeline(p.right, [{ case: 'c1', value: 6 }], {})(),
    E.right([{ case: 'c1', squared: 9 }]),
  )
})

tap.test('parameter errors name the stage by position and kind, in words', async (t) => {
  t.equal(
    problem(config({ kind: 'square' }, { kind: 'resample', spacing: -1 })),
    "stage 2 'resample': spacing must be a positive number, got -1",
  )
  t.equal(
    problem(config({ kind: 'resample' })),
    "stage 1 'resample': spacing is missing (expected a positive number)",
  )
  t.equal(
    problem(config({ kind: 'resample', spacing: 1, mode: 'cubic' })),
    `stage 1 'resample': mode must be one of "bilinear", "nearest", got "cubic"`,
  )
  t.equal(
    problem(config({ kind: 'resample', spacing: 1, size: [256, 0] })),
    "stage 1 'resample': size[1] must be a positive number, got 0",
  )
  t.equal(
    problem(config({ kind: 'resample', spacng: 1.37 })),
    "stage 1 'resample': unknown option 'spacng' (options: spacing, mode, size)",
  )
  t.equal(
    problem(config({ kind: 'square', power: 3 })),
    "stage 1 'square': unknown option 'power' (it takes none)",
  )
  t.equal(
    problem(config({ kind: 'pick', keys: [] })),
    "stage 1 'pick': keys must be a non-empty list of non-empty strings, got []",
  )
})

tap.test('unknown kinds and malformed configs are reported, not thrown', async (t) => {
  t.match(
    problem(config({ kind: 'resampel', spacing: 1 })),
    /^stage 1: unknown kind 'resampel' \(known: load, slices, pick, rename, resample, square\)$/,
  )
  t.match(problem(config('resample')), /^stage 1: expected an object with a "kind"/)
  t.equal(
    problem(pipelineFromConfig([], registry)),
    'a pipeline config is an object with a "stages" list',
  )
  t.equal(
    problem(pipelineFromConfig({ stages: { kind: 'square' } }, registry)),
    'a pipeline config is an object with a "stages" list',
  )
})

tap.test('a mis-ordered config fails at run time, naming the stage, case and key', async (t) => {
  const q = config({ kind: 'resample', spacing: 1 })
  if (E.isLeft(q)) return t.fail(q.left)
  t.same(
    await runPipeline(q.right, [{ case: 'c1', val: 3 }], {})(),
    E.left({
      stage: 'resample',
      case: 'c1',
      message: "needs 'value', which the record lacks (it has case, val)",
    }),
  )
})

const Dataset = decodeTagged('kind', {
  acdc: t.type({ root: t.string }),
  folder: t.type({ root: t.string, patterns: t.type({ image: t.string }) }),
})
const Flags = decodeStrict(t.type({ n: t.number, flag: t.boolean }))

tap.test('tagged and strict decoding outside pipelines', async (t) => {
  t.same(Dataset({ kind: 'acdc', root: 'data' }), E.right({ kind: 'acdc', root: 'data' }))
  t.equal(problem(Dataset({ kind: 'nifti' })), 'unknown kind "nifti" (one of acdc, folder)')
  t.equal(problem(Dataset({ root: 'x' })), "'kind' is missing (one of acdc, folder)")
  t.equal(problem(Dataset(3)), "expected an object with a 'kind' (one of acdc, folder), got 3")
  t.equal(
    problem(Dataset({ kind: 'folder', root: 'x', patterns: { image: 7 } })),
    'patterns.image must be a string, got 7',
  )
  t.equal(
    problem(Dataset({ kind: 'folder', root: 'x', patterns: { image: 'a', labels: 'b' } })),
    "patterns: unknown option 'labels' (options: image)",
  )
  t.equal(
    problem(Flags({ n: 'x', flag: 1 })),
    'n must be a number, got "x"; flag must be true or false, got 1',
  )
})
