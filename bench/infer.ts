/**
 * Benchmark: milliseconds per 256 x 256 slice through onnxruntime-web against
 * onnxruntime-node, 1 and 2 threads, each in a process of its own (src/bench/infer.ts;
 * `maco bench infer` runs the same). The model is models/acdc-maco.onnx when shipped,
 * else the default UNet with seeded random weights. Prints one JSON line; progress on stderr.
 *
 * @example
 * node --import tsx bench/infer.ts   // {"runtime":"onnxruntime-web","size":256,"msPerSlice":...,"nativeMsPerSlice":...,"results":[...]}
 */
import * as E from 'fp-ts/lib/Either.js'
import { inferBench } from '../src/bench/infer.ts'

const result = await inferBench(
  { model: undefined, size: 256, warmup: 3, runs: 10, threads: [1, 2] },
  (line) => console.error(line),
)()
if (E.isLeft(result)) {
  console.error(result.left)
  process.exitCode = 1
} else console.log(JSON.stringify(result.right))
