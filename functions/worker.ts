/**
 * The segmentation service as a Cloudflare Worker: the same Hono app as `maco serve`
 * (src/serve/app.ts), with onnxruntime-web (WebAssembly, one thread) underneath.
 *
 * Models are not bundled (a model plus the ORT wasm would pass the Worker size limit):
 * they come from an R2 bucket bound as `MODELS` (`NAME.onnx` + `NAME.json`, under
 * `MODELS_PREFIX` if set) or from static assets bound as `ASSETS` (the folder given in
 * wrangler.toml, with an `index.json` listing its files, since assets cannot be listed).
 * The registry is loaded on the first request of an isolate and kept; a model's session is
 * opened on its first use.
 *
 * Workers may not compile WebAssembly from bytes at run time, so the ORT wasm is imported
 * as a module (wrangler's CompiledWasm rule) and handed to onnxruntime-web when it asks to
 * instantiate its binary.
 *
 * Settings (wrangler.toml [vars], or secrets): API_KEY, CORS_ORIGIN (comma-separated or
 * *), MAX_MB, MAX_VOXELS, BATCH (slices per session run: activations for 8 slices of the
 * default UNet take about 190 MB of wasm memory, over the 128 MB a Worker has, so 1).
 *
 * @example
 * // wrangler r2 object put maco-models/acdc.onnx --file models/acdc.onnx
 * // wrangler r2 object put maco-models/acdc.json --file models/acdc.json
 * // npm run worker   (wrangler dev)
 */
import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import * as ort from 'onnxruntime-web'
import ortWasm from 'onnxruntime-web/ort-wasm-simd-threaded.wasm'
import { createApp, DEFAULT_SERVE_LIMITS, type App } from '../src/serve/app.ts'
import { loadRegistry, type ModelStore } from '../src/serve/models.ts'
import { createSession } from '../src/serve/runtime.ts'

/** The parts of Workers' R2 and Fetcher bindings used here. */
interface R2BucketLike {
  get(key: string): Promise<{ arrayBuffer(): Promise<ArrayBuffer> } | null>
  list(options?: { prefix?: string; cursor?: string }): Promise<{
    objects: { key: string }[]
    truncated: boolean
    cursor?: string
  }>
}

interface FetcherLike {
  fetch(input: Request | string): Promise<Response>
}

export interface Env {
  readonly MODELS?: R2BucketLike
  readonly MODELS_PREFIX?: string
  readonly ASSETS?: FetcherLike
  readonly API_KEY?: string
  readonly CORS_ORIGIN?: string
  readonly MAX_MB?: string
  readonly MAX_VOXELS?: string
  readonly BATCH?: string
}

const r2Store = (bucket: R2BucketLike, prefix: string): ModelStore => ({
  where: `r2:${prefix || '/'}`,
  list: async () => {
    const keys: string[] = []
    let cursor: string | undefined
    do {
      const page = await bucket.list({ prefix, ...(cursor ? { cursor } : {}) })
      keys.push(
        ...page.objects.map((o) => o.key.slice(prefix.length)).filter((k) => !k.includes('/')),
      )
      cursor = page.truncated ? page.cursor : undefined
    } while (cursor)
    return keys
  },
  read: async (file) => {
    const object = await bucket.get(prefix + file)
    return object === null ? undefined : new Uint8Array(await object.arrayBuffer())
  },
})

const ASSET_ORIGIN = 'https://assets.local/'

const assetStore = (assets: FetcherLike): ModelStore => ({
  where: 'assets',
  list: async () => {
    const res = await assets.fetch(`${ASSET_ORIGIN}index.json`)
    if (!res.ok)
      throw new Error(
        `index.json: HTTP ${res.status} (static assets need an index.json listing the model files)`,
      )
    const files = t.array(t.string).decode(await res.json())
    if (E.isLeft(files)) throw new Error('index.json must be a JSON array of file names')
    return files.right
  },
  read: async (file) => {
    const res = await assets.fetch(`${ASSET_ORIGIN}${encodeURIComponent(file)}`)
    return res.ok ? new Uint8Array(await res.arrayBuffer()) : undefined
  },
})

/** Stands for the ORT wasm in `env.wasm.wasmBinary`; swapped for the imported module when instantiated. */
const ORT_WASM_STAND_IN = new Uint8Array([0])

/** onnxruntime-web compiles its wasm from bytes, which Workers forbid: give it the imported module. */
const useImportedWasm = (): void => {
  const instantiate = WebAssembly.instantiate.bind(WebAssembly) as (
    source: unknown,
    imports?: WebAssembly.Imports,
  ) => Promise<unknown>
  WebAssembly.instantiate = (async (source: unknown, imports?: WebAssembly.Imports) => {
    // Emscripten hands on a copy of wasmBinary, so the stand-in is known by its one byte.
    if (!(source instanceof Uint8Array && source.length === 1 && source[0] === 0))
      return instantiate(source, imports)
    return { module: ortWasm, instance: await instantiate(ortWasm, imports) }
  }) as typeof WebAssembly.instantiate
  ort.env.wasm.wasmBinary = ORT_WASM_STAND_IN
  ort.env.wasm.numThreads = 1
}

const positive = (
  raw: string | undefined,
  name: string,
  fallback: number,
  whole = false,
): number => {
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!(n > 0) || (whole && !Number.isInteger(n)))
    throw new Error(`${name} must be a positive ${whole ? 'integer' : 'number'}, got '${raw}'`)
  return n
}

const appFor = async (env: Env): Promise<App> => {
  const store = env.MODELS
    ? r2Store(env.MODELS, env.MODELS_PREFIX ?? '')
    : env.ASSETS
      ? assetStore(env.ASSETS)
      : undefined
  if (store === undefined)
    throw new Error(
      'no model source: bind an R2 bucket as MODELS or static assets as ASSETS (see wrangler.toml)',
    )
  useImportedWasm()
  const registry = await loadRegistry(store, (bytes) =>
    createSession(bytes, { runtime: 'web', threads: 1 }),
  )()
  if (E.isLeft(registry)) throw new Error(registry.left)
  const cors = env.CORS_ORIGIN?.split(',').map((s) => s.trim())
  return createApp({
    models: registry.right,
    ...(env.API_KEY ? { apiKey: env.API_KEY } : {}),
    ...(cors ? { cors: cors.length === 1 ? cors[0] : cors } : {}),
    batch: positive(env.BATCH, 'BATCH', 1, true),
    limits: {
      maxBytes: positive(env.MAX_MB, 'MAX_MB', DEFAULT_SERVE_LIMITS.maxBytes / 2 ** 20) * 2 ** 20,
      maxVoxels: positive(env.MAX_VOXELS, 'MAX_VOXELS', DEFAULT_SERVE_LIMITS.maxVoxels, true),
    },
  })
}

let app: Promise<App> | undefined

export default {
  fetch: async (request: Request, env: Env): Promise<Response> => {
    app ??= appFor(env).catch((e: unknown) => {
      app = undefined // try again on the next request
      throw e
    })
    try {
      return (await app).fetch(request)
    } catch (e) {
      const message = (e instanceof Error ? e.message : String(e)).split('\n')[0]
      console.log(
        JSON.stringify({
          time: new Date().toISOString(),
          path: new URL(request.url).pathname,
          status: 500,
          error: message,
        }),
      )
      return Response.json({ error: `the service is not configured: ${message}` }, { status: 500 })
    }
  },
}
