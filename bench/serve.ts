/**
 * Benchmark: the segment endpoint over HTTP against the same inference without it. A Node
 * server (src/serve/node.ts `listen`) on loopback serves the default-size UNet (the trained
 * `models/acdc-maco` when it exists, else random weights) on onnxruntime `auto`, 1 thread,
 * as `maco serve` does by default. Clients POST a 10-slice .nii.gz volume (256 x 216 at
 * 1.5625 mm, ACDC-like); with 1 and 8 clients each sending back to back, requests/s and
 * p50/p99 latency. The floor is `segmentVolume` on the decoded volume in this process; the
 * ratios say what HTTP, decoding and encoding add. The session runs one volume at a time,
 * so 8 clients should see about the same requests/s and 8 times the latency.
 *
 * Human table on stdout, or one JSON document with `--json`; progress on stderr.
 *
 * @example
 * node --import tsx bench/serve.ts --json
 * // {"runtime":"onnxruntime-node","direct":{"p50Ms":...},"http":[{"clients":1,"requestsPerSecond":...}],...}
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import * as E from 'fp-ts/lib/Either.js'
import { exportOnnx } from '../src/model/onnx-export.ts'
import { unetSpec } from '../src/model/unet.ts'
import { createApp } from '../src/serve/app.ts'
import { loadRegistry, sha256Hex, type ModelStore } from '../src/serve/models.ts'
import { directoryStore, listen } from '../src/serve/node.ts'
import { createSession } from '../src/serve/runtime.ts'
import { segmentVolume } from '../src/serve/segment.ts'
import { encodeNifti } from '../src/volume/nifti.ts'
import { cardFor, diskVolume } from '../test/helpers/serve-fixtures.ts'
import { randomWeights } from '../test/helpers/unet-weights.ts'

const TRAINED = join(import.meta.dirname, '../models')
const WARMUP = 2
/** Requests per run: the 1-client run, then the 8-client run (enough for a p99 of sorts). */
const REQUESTS = { 1: 16, 8: 40 } as const
const DIRECT_RUNS = 16

const { values } = parseArgs({ options: { json: { type: 'boolean', default: false } } })
const say = (line: string) => process.stderr.write(`${line}\n`)

/** The trained model when shipped, else the default UNet with random weights, as a store. */
const modelStore = async (): Promise<{ store: ModelStore; name: string; trained: boolean }> => {
  if (existsSync(join(TRAINED, 'acdc-maco.onnx')) && existsSync(join(TRAINED, 'acdc-maco.json')))
    return { store: directoryStore(TRAINED), name: 'acdc-maco', trained: true }
  const spec = unetSpec()
  const onnx = exportOnnx(spec, randomWeights(spec, 1))
  const card = cardFor('random-unet', await sha256Hex(onnx), {
    spacing: [1.37, 1.37],
    size: [256, 256],
  })
  const files: Record<string, Uint8Array> = {
    'random-unet.onnx': onnx,
    'random-unet.json': new TextEncoder().encode(JSON.stringify(card)),
  }
  return {
    store: {
      where: 'memory',
      list: async () => Object.keys(files),
      read: async (f) => files[f],
    },
    name: 'random-unet',
    trained: false,
  }
}

const quantile = (sorted: readonly number[], q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]

interface Timing {
  readonly count: number
  readonly seconds: number
  readonly perSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
}

const timing = (latencies: readonly number[], seconds: number): Timing => {
  const sorted = [...latencies].sort((a, b) => a - b)
  const round = (x: number) => Math.round(x * 10) / 10
  return {
    count: sorted.length,
    seconds: round(seconds),
    perSecond: Math.round((sorted.length / seconds) * 100) / 100,
    p50Ms: round(quantile(sorted, 0.5)),
    p99Ms: round(quantile(sorted, 0.99)),
  }
}

/** `total` calls of `once`, `clients` at a time, each client starting its next when one ends. */
const load = async (once: () => Promise<void>, clients: number, total: number): Promise<Timing> => {
  const latencies: number[] = []
  let started = 0
  const client = async () => {
    while (started < total) {
      started++
      const t0 = performance.now()
      await once()
      latencies.push(performance.now() - t0)
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: clients }, client))
  return timing(latencies, (performance.now() - t0) / 1000)
}

const { store, name, trained } = await modelStore()
const registry = await loadRegistry(store, (b) =>
  createSession(b, { runtime: 'auto', threads: 1 }),
)()
if (E.isLeft(registry)) throw new Error(registry.left)
const model = registry.right.find(name)!
const session = await model.session()
const volume = diskVolume([256, 216, 10], [1.5625, 1.5625, 10], 30)
const body = encodeNifti(volume, { gzip: true })
say(
  `${name}${trained ? '' : ' (random weights)'} on ${session.runtimeName}, ${session.threads} thread`,
)

const server = await listen(createApp({ models: registry.right, log: () => {} }), { port: 0 })
const post = async () => {
  const res = await fetch(`${server.url}/v1/models/${name}/segment`, {
    method: 'POST',
    body: body as BodyInit,
  })
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`)
  await res.arrayBuffer()
}

const direct = async () => {
  await segmentVolume({ card: model.card, session }, volume)
}
for (let i = 0; i < WARMUP; i++) await post()
say(`direct: segmentVolume x ${DIRECT_RUNS}`)
const floor = await load(direct, 1, DIRECT_RUNS)
const http: (Timing & { clients: number })[] = []
for (const clients of [1, 8] as const) {
  say(`HTTP: ${clients} client(s), ${REQUESTS[clients]} requests`)
  http.push({ clients, ...(await load(post, clients, REQUESTS[clients])) })
}
await server.close()
await registry.right.release()

const [one, eight] = http
const result = {
  model: name,
  trained,
  runtime: session.runtimeName,
  threads: session.threads,
  volume: { dims: volume.dims, bytes: body.length },
  direct: floor,
  http,
  ratio: {
    /** HTTP latency over the direct one, 1 client: what a request adds around inference. */
    latency1: Math.round((one.p50Ms / floor.p50Ms) * 1000) / 1000,
    /** Direct volumes/s over HTTP requests/s. */
    throughput1: Math.round((floor.perSecond / one.perSecond) * 1000) / 1000,
    throughput8: Math.round((floor.perSecond / eight.perSecond) * 1000) / 1000,
  },
}
if (values.json) console.log(JSON.stringify(result))
else {
  const row = (what: string, t: Timing) =>
    `${what.padEnd(16)} ${String(t.count).padStart(4)} ${t.perSecond.toFixed(2).padStart(8)} ${t.p50Ms.toFixed(0).padStart(8)} ${t.p99Ms.toFixed(0).padStart(8)}`
  console.log(
    [
      `${name}${trained ? '' : ' (random weights)'}, ${session.runtimeName}, ${session.threads} thread, ${volume.dims.join('x')} .nii.gz (${body.length} bytes)`,
      `${'run'.padEnd(16)} ${'n'.padStart(4)} ${'per s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)}`,
      row('direct', floor),
      ...http.map((h) => row(`HTTP ${h.clients} client${h.clients > 1 ? 's' : ''}`, h)),
      `HTTP / direct: latency x${result.ratio.latency1} (1 client), throughput x${result.ratio.throughput1} (1), x${result.ratio.throughput8} (8)`,
    ].join('\n'),
  )
}
