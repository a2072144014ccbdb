/**
 * Benchmark: milliseconds per 256 x 256 slice of the default UNet (random weights) through
 * the runtime interface, onnxruntime-web and onnxruntime-node, 1 and 2 threads each; the
 * median of the timed runs after warm-up. onnxruntime-web fixes its thread count when its
 * wasm starts, so every configuration runs in its own child process.
 * `msPerSlice` / `nativeMsPerSlice` are the web / native medians of the faster thread count
 * (on a busy 2-core machine 2 threads can lose to 1, so the summary does not assume).
 *
 * @example
 * node --import tsx bench/infer.ts   // {"runtime":"onnxruntime-web","size":256,"msPerSlice":...,"results":[...]}
 * node --import tsx bench/infer.ts --one web 2   // one configuration, in this process
 */
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { exportOnnx } from '../src/model/onnx-export.ts'
import { unetSpec } from '../src/model/unet.ts'
import { createSession } from '../src/serve/runtime.ts'
import { seeded } from '../src/util/rng.ts'
import { randomWeights } from '../test/helpers/unet-weights.ts'

const SIZE = 256
const WARMUP = 3
const RUNS = 10
const THREADS = [1, 2]

interface Result {
  readonly runtime: string
  readonly threads: number
  readonly msPerSlice: number
  readonly minMsPerSlice: number
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

const measure = async (runtime: 'web' | 'node', threads: number): Promise<Result> => {
  const spec = unetSpec()
  const session = await createSession(exportOnnx(spec, randomWeights(spec, 1)), {
    runtime,
    threads,
  })
  const rng = seeded(2, 'bench-infer')
  const slice = Float32Array.from({ length: SIZE * SIZE }, () => rng.normal())
  const times: number[] = []
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t0 = performance.now()
    await session.run(slice, [1, 1, SIZE, SIZE])
    if (i >= WARMUP) times.push(performance.now() - t0)
  }
  await session.release()
  const round = (x: number) => Number(x.toFixed(1))
  return {
    runtime: session.runtimeName,
    threads: session.threads,
    msPerSlice: round(median(times)),
    minMsPerSlice: round(Math.min(...times)),
  }
}

const args = process.argv.slice(2)
if (args[0] === '--one') {
  const runtime = args[1] === 'node' ? 'node' : 'web'
  console.log(JSON.stringify(await measure(runtime, Number(args[2] ?? 1))))
} else {
  const self = fileURLToPath(import.meta.url)
  const results: Result[] = (['web', 'node'] as const).flatMap((runtime) =>
    THREADS.map(
      (threads) =>
        JSON.parse(
          execFileSync(
            process.execPath,
            ['--import', 'tsx', self, '--one', runtime, String(threads)],
            {
              encoding: 'utf8',
              stdio: ['ignore', 'pipe', 'inherit'],
            },
          ),
        ) as Result,
    ),
  )
  const fastest = (name: string) =>
    Math.min(...results.filter((r) => r.runtime === name).map((r) => r.msPerSlice))
  console.log(
    JSON.stringify({
      runtime: 'onnxruntime-web',
      size: SIZE,
      runs: RUNS,
      msPerSlice: fastest('onnxruntime-web'),
      nativeMsPerSlice: fastest('onnxruntime-node'),
      results,
    }),
  )
}
