/**
 * Serving speed: the segment endpoint over HTTP against the same inference without it (the
 * floor). A Node server (src/serve/node.ts) on loopback serves the benchmark model
 * (model.ts) on onnxruntime `auto` with 1 thread, as `maco serve` does by default. Clients
 * POST an ACDC-like volume (a phantom, uint16 .nii.gz, 216 x 256 at 1.5625 mm); with 1 and
 * 8 clients each sending back to back: requests/s and p50/p99 latency. The floor is
 * `segmentVolume` on the decoded volume in this process; the ratios say what HTTP, decoding
 * and encoding add. The session runs one volume at a time, so 8 clients should see about
 * the same requests/s as 1 and 8 times the latency.
 *
 * @example
 * await serveBench({ model: undefined, size: 256, slices: 10, requests: 16 }, log)()
 * // Right({ model: 'random-unet', runtime: 'onnxruntime-node', direct: { p50Ms: ... }, http: [...], ratio: {...} })
 */
import * as E from 'fp-ts/lib/Either.js'
import type * as TE from 'fp-ts/lib/TaskEither.js'
import { phantomCase } from '../data/phantom.ts'
import { createApp } from '../serve/app.ts'
import { loadRegistry } from '../serve/models.ts'
import { listen } from '../serve/node.ts'
import { createSession } from '../serve/runtime.ts'
import { segmentVolume } from '../serve/segment.ts'
import { encodeNifti } from '../volume/nifti.ts'
import { withData, type Volume } from '../volume/volume.ts'
import { benchModel } from './model.ts'
import type { Row } from './report.ts'
import { quantile, ratioTo, rounded } from './stats.ts'

const WARMUP = 2
const CLIENTS = [1, 8] as const

export interface ServeSettings {
  /** An `.onnx` file, `random`, or undefined for the shipped model else random (model.ts). */
  readonly model: string | undefined
  /** The random model's input size (a trained model's card gives its own). */
  readonly size: number
  /** Slices of the posted volume. */
  readonly slices: number
  /** Calls in the direct and the 1-client run; the 8-client run makes 2.5 times as many. */
  readonly requests: number
}

export interface Timing {
  readonly count: number
  readonly seconds: number
  readonly perSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
}

export interface ServeResult {
  readonly model: string
  readonly trained: boolean
  readonly runtime: string
  readonly threads: number
  readonly volume: { readonly dims: readonly number[]; readonly bytes: number }
  readonly direct: Timing
  readonly http: readonly (Timing & { readonly clients: number })[]
  readonly ratio: {
    /** HTTP p50 latency over the direct one, 1 client: what a request adds around inference. */
    readonly latency1: number | null
    /** Direct volumes/s over HTTP requests/s, 1 and 8 clients. */
    readonly throughput1: number | null
    readonly throughput8: number | null
  }
}

const timing = (latencies: readonly number[], seconds: number): Timing => {
  const sorted = [...latencies].sort((a, b) => a - b)
  return {
    count: sorted.length,
    seconds: rounded(seconds, 1),
    perSecond: rounded(sorted.length / seconds, 2),
    p50Ms: rounded(quantile(sorted, 0.5), 1),
    p99Ms: rounded(quantile(sorted, 0.99), 1),
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

/** A phantom stored as ACDC stores its images: uint16 with a scl_slope, 1.5625 mm, 10 mm slices. */
export const acdcLikeVolume = (slices: number): Volume<Uint16Array> => {
  const image = phantomCase(0, {
    size: [216, 256],
    slices,
    spacing: [1.5625, 1.5625, 10],
  }).image
  const top = image.data.reduce((a, b) => Math.max(a, b), 0) || 1
  const stored = Uint16Array.from(image.data, (v) => Math.round((Math.max(v, 0) / top) * 65535))
  return { ...withData(image, stored), scaling: { slope: top / 65535, inter: 0 } }
}

export const serveBench =
  (s: ServeSettings, log: (line: string) => void): TE.TaskEither<string, ServeResult> =>
  async () => {
    const model = await benchModel(s.model, s.size)()
    if (E.isLeft(model)) return model
    const { store, base, trained } = model.right
    const registry = await loadRegistry(store, (b) =>
      createSession(b, { runtime: 'auto', threads: 1 }),
    )()
    if (E.isLeft(registry)) return registry
    const served = registry.right.cards[0]
    const entry = registry.right.find(served.name)!
    try {
      const session = await entry.session()
      const volume = acdcLikeVolume(s.slices)
      const body = encodeNifti(volume, { gzip: true })
      log(
        `bench serve: ${base}${trained ? '' : ' (random weights)'} on ${session.runtimeName}, ${session.threads} thread, ${volume.dims.join('x')} .nii.gz (${body.length} bytes)`,
      )
      const server = await listen(createApp({ models: registry.right, log: () => {} }), {
        port: 0,
      })
      try {
        const post = async () => {
          const res = await fetch(`${server.url}/v1/models/${served.name}/segment`, {
            method: 'POST',
            body: body as BodyInit,
          })
          if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`)
          await res.arrayBuffer()
        }
        for (let i = 0; i < WARMUP; i++) await post()
        log(`  direct: segmentVolume x ${s.requests}`)
        const direct = await load(
          async () => void (await segmentVolume({ card: served, session }, volume)),
          1,
          s.requests,
        )
        const http: (Timing & { clients: number })[] = []
        for (const clients of CLIENTS) {
          const total = clients === 1 ? s.requests : Math.ceil(2.5 * s.requests)
          log(`  HTTP: ${clients} client(s), ${total} requests`)
          http.push({ clients, ...(await load(post, clients, total)) })
        }
        const [one, eight] = http
        return E.right({
          model: served.name,
          trained,
          runtime: session.runtimeName,
          threads: session.threads,
          volume: { dims: volume.dims, bytes: body.length },
          direct,
          http,
          ratio: {
            latency1: ratioTo(one.p50Ms, direct.p50Ms),
            throughput1: ratioTo(direct.perSecond, one.perSecond),
            throughput8: ratioTo(direct.perSecond, eight.perSecond),
          },
        })
      } finally {
        await server.close()
      }
    } finally {
      await registry.right.release()
    }
  }

export const serveRows = (r: ServeResult): Row[] => {
  const setting = (clients: number) =>
    `HTTP, ${clients} client${clients > 1 ? 's' : ''}, ${r.volume.dims.join('x')}, ${r.runtime}`
  const floor = `${r.direct.perSecond}/s, p50 ${r.direct.p50Ms} ms (segmentVolume, no HTTP)`
  return r.http.map((h) => ({
    bench: 'serve',
    setting: setting(h.clients),
    result: `${h.perSecond} req/s, p50 ${h.p50Ms} ms, p99 ${h.p99Ms} ms`,
    floor,
    ratio: h.clients === 1 ? r.ratio.throughput1 : r.ratio.throughput8,
  }))
}
