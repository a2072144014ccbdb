import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import t from 'tap'
import { compose, pick, rename, start, then } from '../../src/pipeline/pipeline.ts'
import { runPipeline, runPipelineCollect, type RunProgress } from '../../src/pipeline/run.ts'
import {
  expandStage,
  formatStageError,
  mapField,
  stage,
  stageRandom,
  stageRTE,
} from '../../src/pipeline/stage.ts'

interface Raw {
  readonly case: string
  readonly values: readonly number[]
}

const cases: Raw[] = [
  { case: 'a', values: [1, 2, 3] },
  { case: 'b', values: [4, 6] },
]

const total = stage('total', (r: { values: readonly number[] }) => ({
  total: r.values.reduce((s, v) => s + v, 0),
}))
const mean = stage('mean', (r: { total: number; values: readonly number[] }) => ({
  mean: r.total / r.values.length,
}))
const double = mapField('double', 'mean', (m: number) => 2 * m)

t.test('stages chain with pipe, and each adds its keys to the record', async (t) => {
  const p = pipe(start<Raw>(), then(total), then(mean), then(double))
  t.same(p.stages, ['total', 'mean', 'double'])
  const out = await runPipeline(p, cases, {})()
  t.same(
    out,
    E.right([
      { case: 'a', values: [1, 2, 3], total: 6, mean: 4 },
      { case: 'b', values: [4, 6], total: 10, mean: 10 },
    ]),
  )
})

t.test('a mis-ordered pipeline does not compile', async (t) => {
  // `mean` needs `total`, which only `total` adds.
  // @ts-expect-error: the record lacks 'total'
  pipe(start<Raw>(), then(mean))
  const upper = mapField('upper', 'mean', (s: string) => s.toUpperCase())
  // @ts-expect-error: 'mean' is a number, and `upper` takes a string
  pipe(start<Raw>(), then(total), then(mean), then(upper))
  // @ts-expect-error: `pick` drops 'values', which `mean` needs afterwards
  pipe(start<Raw>(), then(total), pick('total'), then(mean))
  // @ts-expect-error: after `rename`, the record has 'sum', not 'total'
  pipe(start<Raw>(), then(total), rename('total', 'sum'), then(mean))
  // The same stages in a working order compile; the result type is checked too.
  const ok = pipe(
    start<Raw>(),
    then(total),
    rename('total', 'sum'),
    rename('sum', 'total'),
    then(mean),
  )
  const out = await runPipeline(ok, cases, {})()
  const means: number[] = E.isRight(out) ? out.right.map((r) => r.mean) : []
  t.same(means, [2, 5])
})

t.test('a stage that fails gives an error value naming the stage and the case', async (t) => {
  const check = stage('check', (r: { total: number }) =>
    r.total > 8 ? E.left(`total ${r.total} is too large`) : E.right({ ok: true }),
  )
  const out = await runPipeline(pipe(start<Raw>(), then(total), then(check)), cases, {})()
  t.ok(E.isLeft(out))
  if (E.isLeft(out)) {
    t.same(out.left, { stage: 'check', case: 'b', message: 'total 10 is too large' })
    t.equal(formatStageError(out.left), "stage 'check' failed on b: total 10 is too large")
  }
})

t.test('a thrown error and a failed task become error values too', async (t) => {
  const boom = stage('boom', (r: { values: readonly number[] }): { x: number } => {
    if (r.values.length < 3) throw new RangeError('needs three values')
    return { x: 1 }
  })
  const thrown = await runPipeline(pipe(start<Raw>(), then(boom)), cases, {})()
  t.same(thrown, E.left({ stage: 'boom', case: 'b', message: 'needs three values' }))

  const io = stageRTE(
    'fetch',
    (r: { case: string }) => (env: { missing: string }) => async () =>
      r.case === env.missing ? E.left('not found') : E.right({ fetched: r.case }),
  )
  const failed = await runPipeline(pipe(start<Raw>(), then(io)), cases, { missing: 'a' })()
  t.same(failed, E.left({ stage: 'fetch', case: 'a', message: 'not found' }))
})

t.test('splitting records, and errors that name the slice', async (t) => {
  const split = expandStage('split', (r: { values: readonly number[] }) =>
    r.values.map((v, i) => ({ slice: i, value: v })),
  )
  const odd = stage('even only', (r: { value: number }) =>
    r.value % 2 === 0 ? E.right({ half: r.value / 2 }) : E.left(`${r.value} is odd`),
  )
  const p = pipe(start<Raw>(), then(split), pick('value'))
  t.same(
    await runPipeline(p, cases, {})(),
    E.right([
      { case: 'a', slice: 0, value: 1 },
      { case: 'a', slice: 1, value: 2 },
      { case: 'a', slice: 2, value: 3 },
      { case: 'b', slice: 0, value: 4 },
      { case: 'b', slice: 1, value: 6 },
    ]),
  )
  const failed = await runPipeline(pipe(p, then(odd)), cases, {})()
  t.ok(E.isLeft(failed))
  if (E.isLeft(failed))
    t.equal(formatStageError(failed.left), "stage 'even only' failed on a (slice 0): 1 is odd")
  const dropOdd = expandStage('drop odd', (r: { value: number }) => (r.value % 2 ? [] : [{}]))
  const evens = await runPipeline(pipe(p, then(dropOdd)), cases, {})()
  t.same(
    E.map((rs: readonly { value: number }[]) => rs.map((r) => r.value))(evens),
    E.right([2, 4, 6]),
  )
})

t.test('a sub-pipeline composes into a longer one', async (t) => {
  const stats = pipe(start<Raw>(), then(total), then(mean))
  const p = pipe(start<Raw>(), compose(stats), then(double))
  t.same(p.stages, ['total', 'mean', 'double'])
  const out = await runPipeline(p, cases, {})()
  t.same(E.map((rs: readonly { mean: number }[]) => rs.map((r) => r.mean))(out), E.right([4, 10]))
})

t.test('random stages draw per case, whatever order the cases run in', async (t) => {
  const jitter = stageRandom('jitter', (_: { case: string }, rng) => ({ draw: rng.uniform() }))
  const p = pipe(start<Raw>(), then(jitter))
  const draws = async (inputs: Raw[], seed: number) => {
    const out = await runPipeline(p, inputs, { seed })()
    return E.isRight(out) ? Object.fromEntries(out.right.map((r) => [r.case, r.draw])) : {}
  }
  const forward = await draws(cases, 7)
  t.same(await draws([...cases].reverse(), 7), forward)
  t.not(forward.a, forward.b)
  t.not((await draws(cases, 8)).a, forward.a)
  // @ts-expect-error: a pipeline with a random stage needs an environment with a seed
  runPipeline(p, cases, {})
})

t.test('progress is reported after every case, failures included', async (t) => {
  const boom = stage('boom', (r: { case: string }) =>
    r.case === 'a' ? E.left('bad') : E.right({}),
  )
  const seen: RunProgress[] = []
  const report = await runPipelineCollect(
    pipe(start<Raw>(), then(boom)),
    cases,
    {},
    {
      onProgress: (p) => seen.push(p),
    },
  )()
  t.same(seen, [
    { done: 1, total: 2, case: 'a', failed: true },
    { done: 2, total: 2, case: 'b', failed: false },
  ])
  t.same(
    report.records.map((r) => r.case),
    ['b'],
  )
  t.same(report.errors, [{ stage: 'boom', case: 'a', message: 'bad' }])

  const stopped: RunProgress[] = []
  await runPipeline(
    pipe(start<Raw>(), then(boom)),
    cases,
    {},
    { onProgress: (p) => stopped.push(p) },
  )()
  t.equal(stopped.length, 1, 'runPipeline stops at the first failure')
})

t.test('a stop asked for during a run ends it before the next case', async (t) => {
  let stop = false
  const ran: string[] = []
  const out = await runPipeline(
    pipe(start<Raw>(), then(total)),
    cases,
    {},
    {
      onProgress: (p) => {
        ran.push(p.case)
        stop = true
      },
      stopRequested: () => stop,
    },
  )()
  t.same(ran, ['a'], 'case b never ran')
  t.same(
    pipe(
      out,
      E.map((rs) => rs.map((r) => r.total)),
    ),
    E.right([6]),
    'the records so far',
  )
})

t.test('declared needs are checked when the stage runs', async (t) => {
  const needy = stage('needy', (r: { total: number }) => ({ twice: r.total * 2 }), {
    needs: ['total'],
  })
  // A cast stands for a config-made pipeline, which the compiler cannot check.
  const p = pipe(start<Raw & { total: number }>(), then(needy))
  const out = await runPipeline(p, [cases[0] as Raw & { total: number }], {})()
  t.same(
    out,
    E.left({
      stage: 'needy',
      case: 'a',
      message: "needs 'total', which the record lacks (it has case, values)",
    }),
  )
})
