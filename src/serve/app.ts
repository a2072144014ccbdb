/**
 * The segmentation service as a Hono app, the same on Node (`node.ts`) and on Workers
 * (`functions/worker.ts`): health, the model cards, an OpenAPI description, and
 * `POST /v1/models/{name}/segment`, which takes a NIfTI volume or a PNG and answers with a
 * mask of the same geometry (or JSON on `Accept: application/json`).
 *
 * Untrusted input is refused early and in words, never with a 500: the body size from
 * Content-Length and again while reading, the voxel count from the header before anything
 * is inflated, the type from magic bytes. Every request gets an `x-request-id` (the
 * client's, when it sends a sane one) and one JSON log line with its status and timing.
 *
 * @example
 * const app = createApp({ models: registry, apiKey: process.env.MACO_API_KEY, cors: '*' })
 * await app.request('/healthz') // 200 {"status":"ok"}
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { gzipSync } from 'fflate'
import { Hono, type Context } from 'hono'
import { cors as corsMiddleware } from 'hono/cors'
import { requestId } from 'hono/request-id'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { BYTES_PER_VOXEL, decodeNifti, encodeNifti, peekNiftiHeader } from '../volume/nifti.ts'
import type { Volume } from '../volume/volume.ts'
import { TTA_NAMES, type Tta } from './model-card.ts'
import type { Model, ModelRegistry } from './models.ts'
import { openApiDocument } from './openapi.ts'
import { decodePng, encodePng, peekPng, type PngImage } from './png.ts'
import { checkDims, classSummary, pngVolume, segmentVolume } from './segment.ts'
import { sniff } from './sniff.ts'
import { errorLine } from '../util/error-line.ts'

export interface Limits {
  /** Most bytes a request body may have (as sent, compressed or not). */
  readonly maxBytes: number
  /** Most voxels (pixels for a PNG) an input may have. */
  readonly maxVoxels: number
}

export const DEFAULT_SERVE_LIMITS: Limits = { maxBytes: 128 * 2 ** 20, maxVoxels: 2 ** 26 }

export interface AppOptions {
  readonly models: ModelRegistry
  /** When set, `/v1` routes need `Authorization: Bearer KEY` or `x-api-key: KEY`. */
  readonly apiKey?: string
  readonly limits?: Partial<Limits>
  /** Allowed origins for CORS ('*' for any); no CORS headers when absent. */
  readonly cors?: string | readonly string[]
  /** Receives one JSON line per request (default: console.log). */
  readonly log?: (line: string) => void
  /** Slices per session run. */
  readonly batch?: number
  /** More routes (in Node: fine-tune jobs, the web page), added before the fallbacks. */
  readonly extend?: (app: Hono<Env>, helpers: RouteHelpers) => void
}

/** What the app lends the routes of `extend`: its limits, its refusals and its input checks. */
export interface RouteHelpers {
  readonly limits: Limits
  /** The JSON error response (and the log line's reason). */
  readonly failure: (c: Context<Env>, f: Failure) => Response
  /** The model the `:name` parameter names, or a 404 naming the models there are. */
  readonly model: (c: Context<Env>) => E.Either<Failure, Model>
  /** The body within `limits.maxBytes` (413 beyond). */
  readonly body: (c: Context<Env>) => TE.TaskEither<Failure, Uint8Array>
  /** A NIfTI-1 volume within the limits, checked as segment checks it (400, 413, 415). */
  readonly volume: (bytes: Uint8Array) => E.Either<Failure, Volume>
}

export interface Failure {
  readonly status: ContentfulStatusCode
  readonly message: string
}

export const fail = (status: ContentfulStatusCode, message: string): Failure => ({
  status,
  message,
})

export type Env = {
  Variables: { requestId: string; failure?: string; model?: string; bodyRead?: boolean }
}

type NiftiInput = { readonly kind: 'nifti'; readonly volume: Volume; readonly gzipped: boolean }
type Input = NiftiInput | { readonly kind: 'png'; readonly image: PngImage }

const bytesInWords = (n: number): string =>
  n >= 2 ** 20
    ? `${(n / 2 ** 20).toFixed(1)} MiB`
    : n >= 1024
      ? `${(n / 1024).toFixed(1)} KiB`
      : `${n} bytes`

const tooLarge = (bytes: number | string, max: number): Failure =>
  fail(
    413,
    `the body (${typeof bytes === 'number' ? bytesInWords(bytes) : bytes}) exceeds the limit of ${bytesInWords(max)}`,
  )

/** The body, refused once it passes `maxBytes` (announced or actually sent). */
const readBody =
  (request: Request, maxBytes: number): TE.TaskEither<Failure, Uint8Array> =>
  async () => {
    const announced = Number(request.headers.get('content-length') ?? NaN)
    if (announced > maxBytes) return E.left(tooLarge(announced, maxBytes))
    if (request.body === null) return E.right(new Uint8Array(0))
    const reader = request.body.getReader()
    const chunks: Uint8Array[] = []
    let total = 0
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        total += value.length
        if (total > maxBytes) {
          await reader.cancel().catch(() => undefined)
          return E.left(tooLarge(`more than ${bytesInWords(maxBytes)}`, maxBytes))
        }
        chunks.push(value)
      }
    } catch {
      return E.left(fail(400, 'the request body could not be read (the client stopped sending?)'))
    }
    const body = new Uint8Array(total)
    chunks.reduce((at, c) => (body.set(c, at), at + c.length), 0)
    return E.right(body)
  }

const tooManyVoxels = (voxels: number, dims: readonly number[], limits: Limits): Failure =>
  fail(
    413,
    `the image has ${voxels.toExponential(2)} voxels (dims ${dims.join('x')}), over the limit of ${limits.maxVoxels}`,
  )

const niftiInput = (body: Uint8Array, limits: Limits): E.Either<Failure, NiftiInput> =>
  pipe(
    // Read the header with no limits of its own: an oversized volume is a 413, not a 400.
    peekNiftiHeader(body, { maxVoxels: Infinity, maxBytes: Infinity }),
    E.mapLeft((why) => fail(400, why)),
    E.filterOrElse(
      (h) => h.voxelCount <= limits.maxVoxels,
      (h) => tooManyVoxels(h.voxelCount, h.dims, limits),
    ),
    E.chainFirst((h) =>
      pipe(
        checkDims(h.dims),
        E.mapLeft((why) => fail(400, why)),
      ),
    ),
    E.chain((h) =>
      pipe(
        // Extensions before the data may add a little; a huge vox_offset is refused.
        decodeNifti(body, {
          maxVoxels: limits.maxVoxels,
          maxBytes: h.voxelCount * BYTES_PER_VOXEL[h.datatype] + 2 ** 20,
        }),
        E.bimap(
          (why) => fail(400, why),
          (volume): NiftiInput => ({ kind: 'nifti', volume, gzipped: h.gzipped }),
        ),
      ),
    ),
  )

const pngInput = (body: Uint8Array, limits: Limits): E.Either<Failure, Input> =>
  pipe(
    peekPng(body),
    E.mapLeft((why) => fail(400, why)),
    E.filterOrElse(
      (h) => h.width * h.height <= limits.maxVoxels,
      (h) => tooManyVoxels(h.width * h.height, [h.width, h.height], limits),
    ),
    E.chain(() =>
      pipe(
        decodePng(body),
        E.mapLeft((why) => fail(400, why)),
      ),
    ),
    E.map((image): Input => ({ kind: 'png', image })),
  )

/** What the body is, by its magic bytes, decoded within the limits. */
const parseInput = (body: Uint8Array, limits: Limits): E.Either<Failure, Input> => {
  switch (sniff(body)) {
    case 'empty':
      return E.left(fail(400, 'empty body: send a NIfTI-1 volume (.nii or .nii.gz) or a PNG image'))
    case 'gzip':
    case 'nifti':
      return niftiInput(body, limits)
    case 'png':
      return pngInput(body, limits)
    case 'nifti2':
      return E.left(fail(415, 'NIfTI-2 files are not supported: send NIfTI-1 (.nii or .nii.gz)'))
    case 'unknown':
      return E.left(
        fail(
          415,
          'unsupported body: expected a NIfTI-1 volume (.nii or .nii.gz) or a PNG image (told by its first bytes)',
        ),
      )
  }
}

const base64 = (bytes: Uint8Array): string => {
  let binary = ''
  for (let at = 0; at < bytes.length; at += 0x8000)
    binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000))
  return btoa(binary)
}

/** Constant-time comparison, so the time taken does not tell how much of a key was right. */
const sameKey = (given: string, key: string): boolean => {
  const a = new TextEncoder().encode(given)
  const b = new TextEncoder().encode(key)
  let diff = a.length ^ b.length
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0)
  return diff === 0
}

const keyOf = (c: Context): string | undefined => {
  const bearer = /^Bearer\s+(.+)$/i.exec(c.req.header('authorization') ?? '')
  return bearer?.[1].trim() ?? c.req.header('x-api-key')
}

/** The fine-tune job routes (`jobs.ts` serves them in Node): the same contract everywhere. */
const TRAINER_ROUTES = [
  ['POST', '/v1/models/:name/finetune'],
  ['GET', '/v1/jobs'],
  ['GET', '/v1/jobs/:id'],
  ['GET', '/v1/jobs/:id/events'],
] as const

/**
 * The methods the routes of `app` serve `path` with, HEAD wherever GET (Hono answers it);
 * empty when no route has the path. Middleware (method ALL) serves no path of its own.
 */
const allowedMethods = (app: Hono<Env>, path: string): string[] => {
  const methods = [...new Set(app.routes.map((r) => r.method))].filter((m) => m !== 'ALL')
  const allowed = methods.filter((m) =>
    app.router.match(m, path)[0].some(([[, route]]) => route.method === m),
  )
  return allowed.includes('GET') ? [...allowed, 'HEAD'] : allowed
}

export const createApp = (options: AppOptions) => {
  const limits: Limits = { ...DEFAULT_SERVE_LIMITS, ...options.limits }
  const log = options.log ?? ((line: string) => console.log(line))
  const { models } = options
  const app = new Hono<Env>()

  const failure = (c: Context<Env>, f: Failure) => {
    c.set('failure', f.message)
    // A body left unread (refused early, or cut off at the limit) leaves the connection in
    // an unknown state: close it, so that no client sends its next request down it.
    if (c.req.raw.body !== null && c.get('bodyRead') !== true) c.header('connection', 'close')
    return c.json({ error: f.message }, f.status)
  }

  app.use(async (c, next) => {
    const start = performance.now()
    await next()
    log(
      JSON.stringify({
        time: new Date().toISOString(),
        requestId: c.get('requestId'),
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        ms: Math.round((performance.now() - start) * 10) / 10,
        ...(c.get('model') === undefined ? {} : { model: c.get('model') }),
        ...(c.get('failure') === undefined ? {} : { error: c.get('failure') }),
      }),
    )
  })
  app.use(requestId({ limitLength: 128 }))
  if (options.cors !== undefined)
    app.use(
      corsMiddleware({
        origin: typeof options.cors === 'string' ? options.cors : [...options.cors],
        allowMethods: ['GET', 'POST', 'OPTIONS'],
        allowHeaders: ['authorization', 'x-api-key', 'content-type', 'x-request-id'],
        exposeHeaders: ['x-request-id', 'content-disposition', 'server-timing'],
      }),
    )
  if (options.apiKey !== undefined) {
    const key = options.apiKey
    app.use('/v1/*', async (c, next) => {
      const given = keyOf(c)
      if (given === undefined || !sameKey(given, key)) {
        c.header('www-authenticate', 'Bearer')
        return failure(
          c,
          fail(
            401,
            given === undefined
              ? 'an API key is required (Authorization: Bearer KEY or x-api-key: KEY)'
              : 'wrong API key',
          ),
        )
      }
      await next()
    })
  }

  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/openapi.json', (c) =>
    c.json(openApiDocument({ ...limits, apiKey: options.apiKey !== undefined })),
  )
  app.get('/v1/models', (c) => c.json({ models: models.cards }))

  const modelOr404 = (c: Context<Env>): E.Either<Failure, Model> => {
    const name = c.req.param('name') ?? ''
    c.set('model', name)
    const model = models.find(name)
    return model === undefined
      ? E.left(
          fail(
            404,
            `unknown model '${name}' (available: ${models.cards.map((m) => m.name).join(', ') || 'none'})`,
          ),
        )
      : E.right(model)
  }

  app.get('/v1/models/:name', (c) => {
    const model = modelOr404(c)
    return E.isLeft(model) ? failure(c, model.left) : c.json(model.right.card as object)
  })

  // The model itself, for clients that run it (the web page's in-browser mode).
  app.get('/v1/models/:name/onnx', async (c) => {
    const model = modelOr404(c)
    if (E.isLeft(model)) return failure(c, model.left)
    return c.body((await model.right.onnx()) as Uint8Array<ArrayBuffer>, 200, {
      'content-type': 'application/octet-stream',
      'content-disposition': `attachment; filename="${model.right.card.name}.onnx"`,
    })
  })

  app.post('/v1/models/:name/segment', async (c) => {
    const timing: string[] = []
    const timed = async <A>(name: string, f: () => Promise<A>): Promise<A> => {
      const start = performance.now()
      const a = await f()
      timing.push(`${name};dur=${(performance.now() - start).toFixed(1)}`)
      return a
    }
    const model = modelOr404(c)
    if (E.isLeft(model)) return failure(c, model.left)
    const { card } = model.right
    const tta = c.req.query('tta')
    if (tta !== undefined && !(TTA_NAMES as readonly string[]).includes(tta))
      return failure(c, fail(400, `tta must be one of ${TTA_NAMES.join(', ')}, got '${tta}'`))
    const input = await timed('decode', async () => {
      const body = await readBody(c.req.raw, limits.maxBytes)()
      if (E.isRight(body)) c.set('bodyRead', true)
      return pipe(
        body,
        E.chain((b) => parseInput(b, limits)),
      )
    })
    if (E.isLeft(input)) return failure(c, input.left)
    const session = await model.right.session()
    const volume =
      input.right.kind === 'nifti' ? input.right.volume : pngVolume(input.right.image, card)
    const mask = await timed('segment', () =>
      segmentVolume({ card, session }, volume, {
        batch: options.batch,
        ...(tta === undefined ? {} : { tta: tta as Tta }),
      }),
    )
    const wantsJson = (c.req.header('accept') ?? '').includes('application/json')
    const body = await timed('encode', async () =>
      wantsJson
        ? JSON.stringify({
            model: card.name,
            shape: mask.dims,
            spacing:
              input.right.kind === 'nifti'
                ? mask.geometry.spacing
                : mask.geometry.spacing.slice(0, 2),
            classes: classSummary(
              card,
              mask.data,
              input.right.kind === 'nifti' ? mask.geometry.spacing : null,
            ),
            mask: {
              encoding: 'base64-gzip-uint8',
              data: base64(gzipSync(mask.data, { mtime: 0 })),
            },
          })
        : input.right.kind === 'png'
          ? encodePng({
              width: input.right.image.width,
              height: input.right.image.height,
              data: mask.data,
              ...(input.right.image.spacing ? { spacing: input.right.image.spacing } : {}),
            })
          : encodeNifti(mask, {
              gzip: input.right.gzipped,
              description: `maco mask: ${card.name}`,
            }),
    )
    c.header('server-timing', timing.join(', '))
    if (typeof body === 'string') return c.body(body, 200, { 'content-type': 'application/json' })
    const [type, name] =
      input.right.kind === 'png'
        ? ['image/png', 'mask.png']
        : input.right.gzipped
          ? ['application/gzip', 'mask.nii.gz']
          : ['application/octet-stream', 'mask.nii']
    return c.body(body as Uint8Array<ArrayBuffer>, 200, {
      'content-type': type,
      'content-disposition': `attachment; filename="${name}"`,
    })
  })

  const body = (c: Context<Env>) =>
    pipe(
      readBody(c.req.raw, limits.maxBytes),
      TE.chainFirstIOK(() => () => c.set('bodyRead', true)),
    )
  const volume = (bytes: Uint8Array): E.Either<Failure, Volume> => {
    const kind = sniff(bytes)
    if (kind !== 'gzip' && kind !== 'nifti')
      return E.left(
        fail(415, 'expected a NIfTI-1 volume (.nii or .nii.gz), told by its first bytes'),
      )
    return pipe(
      niftiInput(bytes, limits),
      E.map((input) => input.volume),
    )
  }
  options.extend?.(app, { limits, failure, model: modelOr404, body, volume })
  // Where nothing adds the trainer (Workers), its routes exist and refuse in one line.
  const noTrainer = (c: Context<Env>) =>
    failure(
      c,
      fail(
        501,
        'fine-tuning runs only on the Node server (maco serve): this deployment has no trainer',
      ),
    )
  for (const [method, path] of TRAINER_ROUTES)
    if (!app.routes.some((r) => r.method === method && r.path === path))
      app.on(method, path, noTrainer)

  app.notFound((c) => {
    const allowed = allowedMethods(app, c.req.path)
    if (allowed.length === 0) return failure(c, fail(404, `no route ${c.req.method} ${c.req.path}`))
    c.header('allow', allowed.join(', '))
    return failure(
      c,
      fail(405, `${c.req.method} is not allowed on ${c.req.path} (allowed: ${allowed.join(', ')})`),
    )
  })
  app.onError((e, c) => failure(c, fail(500, `internal error: ${errorLine(e)}`)))
  return app
}

export type App = ReturnType<typeof createApp>
