/**
 * One inference configuration of infer.ts, run as its own process (onnxruntime-web fixes
 * its thread count per process). Takes the job as one JSON argument, prints the timing as
 * one JSON line; on failure a one-line reason on stderr and exit status 1.
 *
 * @example
 * node --import tsx src/bench/infer-child.ts '{"model":"random","runtime":"web","threads":2,"size":256,"warmup":3,"runs":10}'
 * // {"runtime":"onnxruntime-web","threads":2,"msPerSlice":167.2,"minMsPerSlice":160.1}
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import { benchModel } from './model.ts'
import { timeSlices } from './infer.ts'

const count = t.refinement(t.number, (n) => Number.isInteger(n) && n >= 0, 'a count')
const Job = t.type({
  model: t.string,
  runtime: t.keyof({ web: null, node: null }),
  threads: count,
  size: count,
  warmup: count,
  runs: count,
})

const fail = (why: string) => {
  process.stderr.write(`${why.split('\n')[0]}\n`)
  process.exitCode = 1
}

const job = pipe(
  E.tryCatch(() => JSON.parse(process.argv[2] ?? '') as unknown, String),
  E.chainW(Job.decode),
)
if (E.isLeft(job)) fail('infer-child: expected one JSON job argument (see infer.ts)')
else {
  const j = job.right
  const model = await benchModel(j.model, j.size)()
  if (E.isLeft(model)) fail(model.left)
  else
    await timeSlices(model.right, j.runtime, j.threads, j).then(
      (run) => process.stdout.write(`${JSON.stringify(run)}\n`),
      (e: unknown) => fail(e instanceof Error ? e.message : String(e)),
    )
}
