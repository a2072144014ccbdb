/**
 * Benchmark: the segment endpoint over HTTP (1 and 8 clients posting a 10-slice .nii.gz)
 * against the same inference without it (src/bench/serve.ts; `maco bench serve` runs the
 * same). The model is models/acdc-maco when shipped, else the default UNet with random
 * weights, on onnxruntime `auto` with 1 thread as `maco serve` runs it.
 *
 * Human table on stdout, or one JSON document with `--json`; progress on stderr.
 *
 * @example
 * node --import tsx bench/serve.ts --json
 * // {"runtime":"onnxruntime-node","direct":{"p50Ms":...},"http":[{"clients":1,"perSecond":...}],...}
 */
import { parseArgs } from 'node:util'
import * as E from 'fp-ts/lib/Either.js'
import { table } from '../src/bench/report.ts'
import { serveBench, serveRows } from '../src/bench/serve.ts'

const { values } = parseArgs({ options: { json: { type: 'boolean', default: false } } })
const result = await serveBench({ model: undefined, size: 256, slices: 10, requests: 16 }, (line) =>
  console.error(line),
)()
if (E.isLeft(result)) {
  console.error(result.left)
  process.exitCode = 1
} else if (values.json) console.log(JSON.stringify(result.right))
else process.stdout.write(table(serveRows(result.right)))
