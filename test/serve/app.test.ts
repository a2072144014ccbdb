/**
 * The service in-process (`app.request`), with a threshold "model" whose answer is known,
 * plus the pieces the app is made of: sniffing, the PNG codec (checked against pngjs and
 * against files built by hand), the model card codec and the registry.
 */
import * as E from 'fp-ts/lib/Either.js'
import { gunzipSync, gzipSync, zlibSync } from 'fflate'
import { crc32 } from 'node:zlib'
import pngjs from 'pngjs'
import t, { type Test } from 'tap'
import { createApp, type AppOptions } from '../../src/serve/app.ts'
import { decodeModelCard, parseModelCard, type ModelCard } from '../../src/serve/model-card.ts'
import { loadRegistry, queued, sha256Hex, type ModelStore } from '../../src/serve/models.ts'
import { decodePng, encodePng, peekPng } from '../../src/serve/png.ts'
import type { Session } from '../../src/serve/runtime.ts'
import { pngVolume, segmentVolume } from '../../src/serve/segment.ts'
import { sniff } from '../../src/serve/sniff.ts'
import { decodeNifti, encodeNifti } from '../../src/volume/nifti.ts'
import { volumeOf, type Volume } from '../../src/volume/volume.ts'
import { cardFor, diskVolume, thresholdSession } from '../helpers/serve-fixtures.ts'

const { PNG } = pngjs

const FAKE_ONNX = new TextEncoder().encode('not really onnx: the session is a threshold')

const memoryStore = (files: Record<string, Uint8Array | string>): ModelStore => ({
  where: 'memory',
  list: async () => Object.keys(files),
  read: async (f) => {
    const v = files[f]
    return typeof v === 'string' ? new TextEncoder().encode(v) : v
  },
})

const thresholdCard = async (): Promise<ModelCard> => ({
  ...cardFor('thr', await sha256Hex(FAKE_ONNX), { spacing: [1.5, 1.5], size: [64, 64] }),
  classes: [
    { name: 'background', value: 0 },
    { name: 'LV', value: 3 },
  ],
})

const setup = async (options: Partial<AppOptions> = {}) => {
  const card = await thresholdCard()
  const sessions: Session[] = []
  const registry = await loadRegistry(
    memoryStore({
      'thr.json': JSON.stringify(card),
      'thr.onnx': FAKE_ONNX,
      'notes.txt': 'ignored',
    }),
    async () => {
      const s = thresholdSession()
      sessions.push(s)
      return s
    },
  )()
  if (E.isLeft(registry)) throw new Error(registry.left)
  const lines: string[] = []
  const app = createApp({ models: registry.right, log: (l) => lines.push(l), ...options })
  return { app, card, lines, sessions }
}

const post = (body: Uint8Array | string, headers: Record<string, string> = {}, model = 'thr') =>
  new Request(`http://x/v1/models/${model}/segment`, {
    method: 'POST',
    body: body as BodyInit,
    headers,
  })

/** The mask the segment function itself gives: what the app must send back, encoded. */
const directMask = async (card: ModelCard, v: Volume) =>
  segmentVolume({ card, session: thresholdSession() }, v)

const oneLineError = async (t: Test, res: Response, status: number, pattern: RegExp) => {
  t.equal(res.status, status, `status ${status}`)
  t.match(res.headers.get('content-type'), /application\/json/)
  const { error } = (await res.json()) as { error: string }
  t.match(error, pattern)
  t.notMatch(error, /\n/, 'one line')
  t.notMatch(error, /    at /, 'no stack trace')
}

t.test('health, request ids and one log line per request', async (t) => {
  const { app, lines } = await setup()
  const res = await app.request('/healthz')
  t.equal(res.status, 200)
  t.same(await res.json(), { status: 'ok' })
  const id = res.headers.get('x-request-id') ?? ''
  t.match(id, /^[0-9a-f-]{36}$/, 'a fresh id when none is sent')
  const mine = await app.request('/healthz', { headers: { 'x-request-id': 'abc-123' } })
  t.equal(mine.headers.get('x-request-id'), 'abc-123', 'the client id is kept')
  const evil = await app.request('/healthz', { headers: { 'x-request-id': 'a b\tc' } })
  t.not(evil.headers.get('x-request-id'), 'a b\tc', 'an odd id is replaced')
  t.equal(lines.length, 3)
  const log = JSON.parse(lines[1]) as Record<string, unknown>
  t.match(log, { requestId: 'abc-123', method: 'GET', path: '/healthz', status: 200, ms: Number })
})

t.test('model cards', async (t) => {
  const { app, card } = await setup()
  const list = await app.request('/v1/models')
  t.same(await list.json(), { models: [card] })
  t.same(await (await app.request('/v1/models/thr')).json(), card)
  await oneLineError(
    t,
    await app.request('/v1/models/nope'),
    404,
    /unknown model 'nope' \(available: thr\)/,
  )
  await oneLineError(t, await app.request('/v2/things'), 404, /no route GET \/v2\/things/)
})

t.test(
  'a route asked with a method it does not serve: 405 naming the methods it does',
  async (t) => {
    const { app, lines } = await setup()
    const cases: [string, string, string][] = [
      ['GET', '/v1/models/thr/segment', 'POST'],
      ['PUT', '/v1/models/thr/segment', 'POST'],
      ['DELETE', '/healthz', 'GET, HEAD'],
      ['POST', '/v1/models', 'GET, HEAD'],
      ['PATCH', '/v1/models/anything', 'GET, HEAD'],
    ]
    for (const [method, path, allow] of cases) {
      const res = await app.request(path, { method })
      t.equal(res.headers.get('allow'), allow, `${method} ${path}: Allow`)
      await oneLineError(
        t,
        res,
        405,
        new RegExp(`^${method} is not allowed on ${path} \\(allowed: ${allow}\\)$`),
      )
    }
    t.match(JSON.parse(lines[0]) as object, { method: 'GET', status: 405, error: /not allowed/ })
    const head = await app.request('/healthz', { method: 'HEAD' })
    t.equal(head.status, 200, 'HEAD where GET is served')
    const nowhere = await app.request('/v1/models/thr/segment/more', { method: 'POST' })
    t.equal(nowhere.status, 404, 'a path no route has stays a 404')
    t.equal(nowhere.headers.get('allow'), null)
    const withoutTrainer = await app.request('/v1/jobs', { method: 'DELETE' })
    t.equal(
      withoutTrainer.headers.get('allow'),
      'GET, HEAD',
      'the trainer routes have their methods',
    )
    await oneLineError(t, withoutTrainer, 405, /^DELETE is not allowed on \/v1\/jobs/)
  },
)

t.test(
  '?tta= asks for test-time augmentation for one request; an unknown one is a 400',
  async (t) => {
    const { app, sessions } = await setup()
    const volume = diskVolume([40, 40, 3], [2, 2, 8])
    const plain = await app.request(post(encodeNifti(volume)))
    t.equal(plain.status, 200)
    const flipped = await app.request(
      new Request('http://x/v1/models/thr/segment?tta=flip', {
        method: 'POST',
        body: encodeNifti(volume) as BodyInit,
      }),
    )
    t.equal(flipped.status, 200)
    // The threshold model is pixel-wise: TTA cannot change its mask, only the work done.
    t.same(new Uint8Array(await flipped.arrayBuffer()), new Uint8Array(await plain.arrayBuffer()))
    const slicesRun = sessions.flatMap((s) => (s as ReturnType<typeof thresholdSession>).runs)
    t.same(
      slicesRun.map((dims) => dims[0]),
      [3, 12],
      'one run of 3 slices, then one of 4 views of each',
    )
    await oneLineError(
      t,
      await app.request(
        new Request('http://x/v1/models/thr/segment?tta=rotate', {
          method: 'POST',
          body: encodeNifti(volume) as BodyInit,
        }),
      ),
      400,
      /^tta must be one of none, flip, dihedral, got 'rotate'$/,
    )
  },
)

t.test('a NIfTI volume gives a NIfTI mask with its geometry, gzipped like the input', async (t) => {
  const { app, card, lines } = await setup()
  const volume = diskVolume()
  const expected = await directMask(card, volume)
  for (const gzip of [true, false]) {
    const res = await app.request(post(encodeNifti(volume, { gzip })))
    t.equal(res.status, 200)
    t.equal(res.headers.get('content-type'), gzip ? 'application/gzip' : 'application/octet-stream')
    t.match(res.headers.get('content-disposition'), gzip ? /mask\.nii\.gz/ : /mask\.nii"/)
    t.match(
      res.headers.get('server-timing'),
      /decode;dur=[\d.]+, segment;dur=[\d.]+, encode;dur=[\d.]+/,
    )
    const bytes = new Uint8Array(await res.arrayBuffer())
    t.equal(bytes[0] === 0x1f && bytes[1] === 0x8b, gzip, gzip ? 'gzipped' : 'raw')
    const mask = decodeNifti(bytes)
    if (E.isLeft(mask)) return t.fail(mask.left)
    t.equal(mask.right.datatype, 'uint8')
    t.same(mask.right.dims, volume.dims)
    t.same(mask.right.data, expected.data, 'the mask segment gives')
    const input = decodeNifti(encodeNifti(volume))
    if (E.isLeft(input)) return t.fail(input.left)
    t.same(
      mask.right.geometry,
      input.right.geometry,
      'spacing, affine, qform/sform and codes as the input',
    )
  }
  t.match(JSON.parse(lines[0]), { model: 'thr', status: 200 })
})

t.test(
  'Accept: application/json gives the summary and the mask as base64 gzip uint8',
  async (t) => {
    const { app, card } = await setup()
    const volume = diskVolume()
    const expected = await directMask(card, volume)
    const res = await app.request(
      post(encodeNifti(volume, { gzip: true }), { accept: 'application/json' }),
    )
    t.equal(res.status, 200)
    const body = (await res.json()) as {
      model: string
      shape: number[]
      spacing: number[]
      classes: { name: string; value: number; voxels: number; volumeMl: number }[]
      mask: { encoding: string; data: string }
    }
    t.equal(body.model, 'thr')
    t.same(body.shape, volume.dims)
    t.same(body.spacing, [1.5, 1.5, 8])
    t.equal(body.mask.encoding, 'base64-gzip-uint8')
    const gzipped = new Uint8Array(Buffer.from(body.mask.data, 'base64'))
    // The gzip header's mtime (bytes 4-7) is zero, so the same input always gives the same answer.
    t.same([...gzipped.subarray(4, 8)], [0, 0, 0, 0], 'no timestamp in the gzip header')
    const mask = gunzipSync(gzipped)
    t.same(mask, expected.data)
    const lv = expected.data.filter((v) => v === 3).length
    const counts = [expected.data.length - lv, lv]
    t.same(
      body.classes.map(({ name, value, voxels }) => ({ name, value, voxels })),
      [
        { name: 'background', value: 0, voxels: counts[0] },
        { name: 'LV', value: 3, voxels: counts[1] },
      ],
    )
    // 1.5 x 1.5 x 8 mm = 18 mm^3 = 0.018 mL a voxel (to rounding).
    body.classes.forEach((c, i) =>
      t.ok(Math.abs(c.volumeMl - counts[i] * 0.018) < 1e-9, `${c.name} mL`),
    )
  },
)

t.test('a PNG gives a PNG mask of its size, pHYs kept', async (t) => {
  const { app, card } = await setup()
  const [w, h] = [50, 40]
  const grey = Buffer.alloc(w * h)
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) grey[x + w * y] = Math.hypot(x - 30, y - 20) < 12 ? 220 : 20 + x
  const png = new PNG({ width: w, height: h, colorType: 0, inputColorType: 0, bitDepth: 8 })
  png.data = grey
  const bytes = new Uint8Array(PNG.sync.write(png, { colorType: 0, inputColorType: 0 }))
  const res = await app.request(post(bytes))
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'image/png')
  const out = PNG.sync.read(Buffer.from(await res.arrayBuffer()))
  t.same([out.width, out.height], [w, h])
  const expected = await directMask(
    card,
    pngVolume({ width: w, height: h, grey: Float32Array.from(grey) }, card),
  )
  t.same(
    Uint8Array.from({ length: w * h }, (_, i) => out.data[4 * i]),
    expected.data,
    'the mask, read by pngjs',
  )
  t.ok(expected.data.includes(3) && expected.data.includes(0), 'both classes present')

  const withPhys = encodePng({
    width: w,
    height: h,
    data: new Uint8Array(grey),
    spacing: [0.5, 0.5],
  })
  const res2 = await app.request(post(withPhys, { accept: 'application/json' }))
  const json = (await res2.json()) as {
    spacing: number[]
    shape: number[]
    classes: { volumeMl: unknown }[]
  }
  t.same(json.spacing, [0.5, 0.5])
  t.same(json.shape, [w, h])
  t.equal(json.classes[0].volumeMl, null, 'no volume for a 2D image')
  const phys = await app.request(post(withPhys))
  t.same(
    E.map((i: { spacing?: readonly number[] }) => i.spacing)(
      decodePng(new Uint8Array(await phys.arrayBuffer())),
    ),
    E.right([0.5, 0.5]),
  )
})

/** A raw NIfTI header claiming `dims` (int16 each), voxel data absent. */
const claimingHeader = (dims: readonly number[]): Uint8Array => {
  const file = encodeNifti(
    volumeOf({ dims: [2, 2, 1], data: new Uint8Array(4), spacing: [1, 1, 1] }),
  )
  const view = new DataView(file.buffer)
  view.setInt16(40, dims.length, true)
  dims.forEach((d, i) => view.setInt16(42 + 2 * i, d, true))
  return file
}

t.test('bad input gets a 4xx with a one-line reason, and the app keeps serving', async (t) => {
  const { app, lines } = await setup({ limits: { maxBytes: 64 * 1024, maxVoxels: 100_000 } })
  const good = encodeNifti(diskVolume(), { gzip: true })
  const random = new Uint8Array(5000).map((_, i) => (i * 7919 + 13) % 251)
  await oneLineError(t, await app.request(post(new Uint8Array(0))), 400, /^empty body/)
  await oneLineError(
    t,
    await app.request(post(random)),
    415,
    /^unsupported body: expected a NIfTI-1 volume/,
  )
  await oneLineError(
    t,
    await app.request(post(good.subarray(0, good.length >> 1))),
    400,
    /truncated/,
  )
  await oneLineError(t, await app.request(post(good.subarray(0, 20))), 400, /truncated|gzip/)
  await oneLineError(
    t,
    await app.request(post(encodeNifti(diskVolume()).subarray(0, 200))),
    400,
    /not a NIfTI-1 file/,
  )
  await oneLineError(
    t,
    await app.request(post(gzipSync(claimingHeader([10000, 10000, 10000])))),
    413,
    /1\.00e\+12 voxels .* over the limit of 100000/,
  )
  await oneLineError(
    t,
    await app.request(post(claimingHeader([10, 10, 5, 12]))),
    400,
    /4D volume with 12 frames/,
  )
  const nifti2 = new Uint8Array(600)
  nifti2.set([0x1c, 0x02, 0, 0], 0)
  nifti2.set(
    [...'n+2\0'].map((c) => c.charCodeAt(0)),
    4,
  )
  await oneLineError(t, await app.request(post(nifti2)), 415, /NIfTI-2/)
  const big = new Uint8Array(100_000)
  await oneLineError(
    t,
    await app.request(post(big, { 'content-length': String(big.length) })),
    413,
    /97\.7 KiB.*exceeds the limit of 64\.0 KiB/,
  )
  await oneLineError(t, await app.request(post(big)), 413, /more than 64\.0 KiB/)
  const hugePng = encodePng({ width: 400, height: 400, data: new Uint8Array(160_000) })
  await oneLineError(t, await app.request(post(hugePng)), 413, /1\.60e\+5 voxels \(dims 400x400\)/)
  const badCrc = encodePng({ width: 4, height: 4, data: new Uint8Array(16) })
  badCrc[badCrc.length - 20] ^= 0xff
  await oneLineError(
    t,
    await app.request(post(badCrc)),
    400,
    /corrupt PNG: CRC mismatch in chunk IDAT/,
  )
  await oneLineError(t, await app.request(post(good, {}, 'nope')), 404, /unknown model 'nope'/)
  t.equal((await app.request('/healthz')).status, 200, 'still serving')
  t.equal((await app.request(post(good))).status, 200, 'still segmenting')
  t.ok(
    lines.some((l) => /"status":413.*"error":"the body/.test(l)),
    'the reason is in the log line too',
  )
})

t.test('API key: Bearer or x-api-key on /v1, health and the description stay open', async (t) => {
  const { app } = await setup({ apiKey: 's3cret' })
  await oneLineError(t, await app.request('/v1/models'), 401, /an API key is required/)
  t.equal((await app.request('/v1/models')).headers.get('www-authenticate'), 'Bearer')
  await oneLineError(
    t,
    await app.request('/v1/models', { headers: { authorization: 'Bearer s3cre' } }),
    401,
    /^wrong API key$/,
  )
  await oneLineError(
    t,
    await app.request('/v1/models', { headers: { 'x-api-key': 's3cret!' } }),
    401,
    /^wrong API key$/,
  )
  await oneLineError(t, await app.request(post(encodeNifti(diskVolume()))), 401, /API key/)
  t.equal(
    (await app.request('/v1/models', { headers: { authorization: 'Bearer s3cret' } })).status,
    200,
  )
  t.equal((await app.request('/v1/models', { headers: { 'x-api-key': 's3cret' } })).status, 200)
  t.equal((await app.request('/healthz')).status, 200)
  t.equal((await app.request('/openapi.json')).status, 200)
})

t.test('CORS when asked for: preflight answered before the key check, id exposed', async (t) => {
  const { app } = await setup({ cors: 'https://viewer.example', apiKey: 'k' })
  const pre = await app.request('/v1/models/thr/segment', {
    method: 'OPTIONS',
    headers: { origin: 'https://viewer.example', 'access-control-request-method': 'POST' },
  })
  t.equal(pre.status, 204)
  t.equal(pre.headers.get('access-control-allow-origin'), 'https://viewer.example')
  const res = await app.request('/healthz', { headers: { origin: 'https://viewer.example' } })
  t.match(res.headers.get('access-control-expose-headers'), /x-request-id/)
  const { app: closed } = await setup()
  t.equal(
    (await closed.request('/healthz', { headers: { origin: 'https://x' } })).headers.get(
      'access-control-allow-origin',
    ),
    null,
  )
})

t.test('the OpenAPI description parses and states the contract', async (t) => {
  const { app } = await setup({ limits: { maxBytes: 1000, maxVoxels: 2000 }, apiKey: 'k' })
  const doc = (await (await app.request('/openapi.json')).json()) as {
    openapi: string
    paths: Record<
      string,
      Record<string, { responses: Record<string, unknown>; description?: string }>
    >
    components: { schemas: Record<string, unknown> }
  }
  t.equal(doc.openapi, '3.1.0')
  // That the paths are those the app serves: test/serve/openapi.test.ts.
  const segment = doc.paths['/v1/models/{name}/segment'].post
  t.same(Object.keys(segment.responses).sort(), ['200', '400', '401', '404', '413', '415'])
  t.match(segment.description, /at most 1000 bytes and 2000 voxels/)
  // Every $ref points at something that exists.
  const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? []
  for (const ref of refs) {
    const path = ref.slice(8, -1).replace('#/', '').split('/')
    t.ok(
      path.reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], doc),
      `${ref} resolves`,
    )
  }
})

t.test(
  'a model whose ONNX bytes differ from its card is a server error, not a crash',
  async (t) => {
    const card = await thresholdCard()
    const registry = await loadRegistry(
      memoryStore({ 'thr.json': JSON.stringify(card), 'thr.onnx': 'other bytes' }),
      async () => thresholdSession(),
    )()
    if (E.isLeft(registry)) return t.fail(registry.left)
    const app = createApp({ models: registry.right, log: () => undefined })
    await oneLineError(
      t,
      await app.request(post(encodeNifti(diskVolume()))),
      500,
      /model 'thr' could not be opened: the ONNX file's SHA-256 .* differs from its card's/,
    )
    t.equal((await app.request('/healthz')).status, 200)
  },
)

t.test('the registry: cards checked at load, sessions opened once, runs queued', async (t) => {
  const card = await thresholdCard()
  const broken = await loadRegistry(
    memoryStore({ 'a.json': '{"name":"a"}', 'a.onnx': FAKE_ONNX }),
    async () => thresholdSession(),
  )()
  t.same(
    broken,
    E.left(
      'memory/a.json: invalid model card: classes: expected Array<{ name: string, value: a label value 0..255 }>, got nothing',
    ),
  )
  const twice = await loadRegistry(
    memoryStore({
      'a.json': JSON.stringify(card),
      'a.onnx': FAKE_ONNX,
      'b.json': JSON.stringify(card),
      'b.onnx': FAKE_ONNX,
    }),
    async () => thresholdSession(),
  )()
  t.same(twice, E.left("two model cards in memory are named 'thr'"))
  const lonely = await loadRegistry(memoryStore({ 'a.json': JSON.stringify(card) }), async () =>
    thresholdSession(),
  )()
  t.same(
    E.map((r: { cards: readonly unknown[] }) => r.cards.length)(lonely),
    E.right(0),
    'a card without its .onnx is not a model',
  )

  let opened = 0
  const registry = await loadRegistry(
    memoryStore({ 'a.json': JSON.stringify(card), 'a.onnx': FAKE_ONNX }),
    async () => {
      opened++
      return thresholdSession()
    },
  )()
  if (E.isLeft(registry)) return t.fail(registry.left)
  const model = registry.right.find('thr')
  if (model === undefined) return t.fail('thr not found')
  const [s1, s2] = await Promise.all([model.session(), model.session()])
  t.equal(s1, s2)
  t.equal(opened, 1, 'one session for concurrent first uses')
  await registry.right.release()

  let active = 0
  let most = 0
  const slow: Session = {
    ...thresholdSession(),
    run: async (input, dims) => {
      most = Math.max(most, ++active)
      await new Promise((r) => setTimeout(r, 5))
      active--
      if (input[0] < 0) throw new Error('boom')
      return { probabilities: input, dims }
    },
  }
  const q = queued(slow)
  const results = await Promise.allSettled(
    [1, -1, 2, 3].map((x) => q.run(new Float32Array([x]), [1, 1, 1, 1])),
  )
  t.equal(most, 1, 'never two runs at once')
  t.same(
    results.map((r) => r.status),
    ['fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
    'a failed run does not block the next',
  )
})

t.test('model card codec: a full card decodes; an error names the field', async (t) => {
  const card = {
    ...cardFor('acdc-maco', 'ab'.repeat(32), { spacing: [1.37, 1.37], size: [256, 256] }),
    validation: { dice: { RV: 0.87, MYO: 0.84, LV: 0.91 }, hd95: { RV: 5.2 }, data: 'acdc val' },
    parent: 'acdc-base',
  }
  t.same(decodeModelCard(card), E.right(card))
  // A fine-tune without labelled volumes says why it has no Dice.
  const unscored = { ...card, validation: { data: 'none: no labelled volumes' } }
  t.same(decodeModelCard(unscored), E.right(unscored))
  t.same(
    decodeModelCard({ ...card, validation: { dice: { RV: 'high' } } }),
    E.left('invalid model card: validation.dice.RV: expected number, got "high"'),
  )
  t.match(E.swap(parseModelCard('{')), E.right(/^invalid model card: not JSON/))
  t.same(
    decodeModelCard({ ...card, input: { spacing: [-1, 1.37], size: [256, 256] } }),
    E.left('invalid model card: input.spacing.0: expected a positive number, got -1'),
  )
  t.same(
    decodeModelCard({ ...card, normalisation: 'minmax' }),
    E.left('invalid model card: normalisation: expected "zscore-slice", got "minmax"'),
  )
  t.same(
    decodeModelCard({ ...card, onnx: { sha256: 'XYZ' } }),
    E.left('invalid model card: onnx.sha256: expected a SHA-256 in lowercase hex, got "XYZ"'),
  )
  t.same(
    decodeModelCard({ ...card, name: '../etc' }),
    E.left(
      'invalid model card: name: expected a model name (letters, digits, . _ -), got "../etc"',
    ),
  )
  t.same(
    decodeModelCard({
      ...card,
      classes: [
        { name: 'a', value: 1 },
        { name: 'b', value: 1 },
      ],
    }),
    E.left('invalid model card: classes: values must be distinct'),
  )
  t.same(
    decodeModelCard({ ...card, classes: [{ name: 'a', value: 0 }] }),
    E.left('invalid model card: classes: at least 2 classes are needed'),
  )
})

t.test('sniffing by magic bytes', async (t) => {
  const nii = encodeNifti(diskVolume())
  t.equal(sniff(new Uint8Array(0)), 'empty')
  t.equal(sniff(encodeNifti(diskVolume(), { gzip: true })), 'gzip')
  t.equal(sniff(nii), 'nifti')
  t.equal(
    sniff(nii.subarray(0, 100)),
    'nifti',
    'a header cut before its magic is still a NIfTI (sizeof_hdr 348)',
  )
  const be = nii.slice(0, 400)
  be.set([0, 0, 1, 0x5c], 0)
  be.fill(0, 344, 348)
  t.equal(sniff(be), 'nifti', 'big-endian sizeof_hdr')
  t.equal(sniff(encodePng({ width: 1, height: 1, data: new Uint8Array(1) })), 'png')
  t.equal(sniff(new TextEncoder().encode('hello, world')), 'unknown')
})

/** A PNG from filtered scanlines built by hand (CRC by node:zlib). */
const handPng = (
  ihdr: { width: number; height: number; depth: number; colour: number; interlace?: number },
  scanlines: Uint8Array,
  extra: [string, Uint8Array][] = [],
) => {
  const chunk = (type: string, data: Uint8Array) => {
    const b = Buffer.alloc(12 + data.length)
    b.writeUInt32BE(data.length, 0)
    b.write(type, 4, 'latin1')
    Buffer.from(data).copy(b, 8)
    b.writeUInt32BE(crc32(b.subarray(4, 8 + data.length)), 8 + data.length)
    return b
  }
  const head = Buffer.alloc(13)
  head.writeUInt32BE(ihdr.width, 0)
  head.writeUInt32BE(ihdr.height, 4)
  head[8] = ihdr.depth
  head[9] = ihdr.colour
  head[12] = ihdr.interlace ?? 0
  return new Uint8Array(
    Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', head),
      ...extra.map(([type, data]) => chunk(type, data)),
      chunk('IDAT', zlibSync(scanlines)),
      chunk('IEND', new Uint8Array(0)),
    ]),
  )
}

t.test('PNG decoding agrees with pngjs on every colour type it writes', async (t) => {
  const [w, h] = [13, 7]
  const luma = (r: number, g: number, b: number) => 0.299 * r + 0.587 * g + 0.114 * b
  for (const [colorType, channels] of [
    [0, 1],
    [2, 3],
    [4, 2],
    [6, 4],
  ] as const)
    for (const bitDepth of [8, 16] as const) {
      const max = bitDepth === 8 ? 255 : 65535
      const samples = Array.from(
        { length: w * h * channels },
        (_, i) => (i * 2654435761) % (max + 1),
      )
      const png = new PNG({
        width: w,
        height: h,
        colorType,
        inputColorType: colorType,
        bitDepth,
        inputHasAlpha: channels % 2 === 0,
      })
      png.data = (bitDepth === 8 ? Buffer.from(samples) : new Uint16Array(samples)) as Buffer
      const bytes = new Uint8Array(
        PNG.sync.write(png, {
          colorType,
          inputColorType: colorType,
          bitDepth,
          inputHasAlpha: channels % 2 === 0,
        }),
      )
      const decoded = decodePng(bytes)
      if (E.isLeft(decoded)) return t.fail(decoded.left)
      const expected = Array.from({ length: w * h }, (_, p) => {
        const s = samples.slice(p * channels, (p + 1) * channels)
        return channels >= 3 ? luma(s[0], s[1], s[2]) : s[0]
      })
      const worst = expected.reduce(
        (m, e, i) => Math.max(m, Math.abs(e - decoded.right.grey[i])),
        0,
      )
      t.ok(worst <= max * 1e-6, `colour type ${colorType}, ${bitDepth} bit: max error ${worst}`)
      t.same([decoded.right.width, decoded.right.height], [w, h])
    }
})

t.test('PNG decoding: palette, sub-byte grey, Adam7 interlacing, all row filters', async (t) => {
  // Palette, 2 bits per pixel, 5 x 2: indices 0 1 2 3 0 / 3 2 1 0 3; filter 0.
  const palette = new Uint8Array([0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30])
  const pal = handPng(
    { width: 5, height: 2, depth: 2, colour: 3 },
    new Uint8Array([0, 0b00011011, 0b00000000, 0, 0b11100100, 0b11000000]),
    [['PLTE', palette]],
  )
  const lumaOf = (i: number) =>
    0.299 * palette[3 * i] + 0.587 * palette[3 * i + 1] + 0.114 * palette[3 * i + 2]
  t.same(
    E.map((p: { grey: Float32Array }) => Array.from(p.grey))(decodePng(pal)),
    E.right([0, 1, 2, 3, 0, 3, 2, 1, 0, 3].map((i) => Math.fround(lumaOf(i)))),
  )
  // 1-bit grey, 10 x 1: 1011001110.
  const bits = handPng(
    { width: 10, height: 1, depth: 1, colour: 0 },
    new Uint8Array([0, 0b10110011, 0b10000000]),
  )
  t.same(
    E.map((p: { grey: Float32Array }) => Array.from(p.grey))(decodePng(bits)),
    E.right([1, 0, 1, 1, 0, 0, 1, 1, 1, 0]),
  )
  // Adam7, 8-bit grey, 11 x 9, pixel value x + 16 y: passes built by the spec's table, filter 0.
  const [w, h] = [11, 9]
  const passes = [
    [0, 0, 8, 8],
    [4, 0, 8, 8],
    [0, 4, 4, 8],
    [2, 0, 4, 4],
    [0, 2, 2, 4],
    [1, 0, 2, 2],
    [0, 1, 1, 2],
  ]
  const bytes: number[] = []
  for (const [x0, y0, dx, dy] of passes)
    for (let y = y0; y < h; y += dy) {
      const row: number[] = []
      for (let x = x0; x < w; x += dx) row.push(x + 16 * y)
      if (row.length > 0) bytes.push(0, ...row)
    }
  const adam7 = handPng(
    { width: w, height: h, depth: 8, colour: 0, interlace: 1 },
    new Uint8Array(bytes),
  )
  t.same(
    E.map((p: { grey: Float32Array }) => Array.from(p.grey))(decodePng(adam7)),
    E.right(Array.from({ length: w * h }, (_, i) => (i % w) + 16 * Math.floor(i / w))),
  )
  // Filters 1..4 on a 4 x 4 RGB image, encoded the way the spec defines them.
  const [fw, fh, bpp] = [4, 4, 3]
  const raw = Array.from({ length: fh }, (_, y) =>
    Array.from({ length: fw * bpp }, (_, i) => (y * 53 + i * 29) % 256),
  )
  const paeth = (a: number, b: number, c: number) => {
    const p = a + b - c
    const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)]
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
  }
  const filtered: number[] = []
  raw.forEach((row, y) => {
    const f = (y % 4) + 1
    filtered.push(f)
    row.forEach((v, i) => {
      const a = i >= bpp ? row[i - bpp] : 0
      const b = y > 0 ? raw[y - 1][i] : 0
      const c = y > 0 && i >= bpp ? raw[y - 1][i - bpp] : 0
      const pred = f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : paeth(a, b, c)
      filtered.push((v - pred + 256) % 256)
    })
  })
  const rgb = handPng({ width: fw, height: fh, depth: 8, colour: 2 }, new Uint8Array(filtered))
  const expected = raw.flatMap((row) =>
    Array.from({ length: fw }, (_, x) =>
      Math.fround(0.299 * row[3 * x] + 0.587 * row[3 * x + 1] + 0.114 * row[3 * x + 2]),
    ),
  )
  t.same(
    E.map((p: { grey: Float32Array }) => Array.from(p.grey))(decodePng(rgb)),
    E.right(expected),
  )
})

t.test('PNG errors are words, and the inflate stops where the header says', async (t) => {
  const good = encodePng({ width: 3, height: 2, data: new Uint8Array([0, 1, 2, 3, 4, 5]) })
  t.same(
    E.map((p: { grey: Float32Array }) => Array.from(p.grey))(decodePng(good)),
    E.right([0, 1, 2, 3, 4, 5]),
  )
  t.same(
    peekPng(good),
    E.right({ width: 3, height: 2, bitDepth: 8, colorType: 0, interlaced: false }),
  )
  t.same(
    decodePng(good.subarray(0, good.length - 5)),
    E.left('truncated PNG: the file ends before its IEND chunk'),
  )
  t.same(decodePng(new Uint8Array(20)), E.left('not a PNG file (bad signature)'))
  // A 2 x 2 header with 1 MB of zeros behind it: a small file that inflates far too long.
  const bomb = handPng({ width: 2, height: 2, depth: 8, colour: 0 }, new Uint8Array(1 << 20))
  t.ok(bomb.length < 5000)
  t.same(decodePng(bomb), E.left('corrupt PNG: the image data is longer than its header says'))
  t.same(
    decodePng(handPng({ width: 2, height: 2, depth: 8, colour: 0 }, new Uint8Array(5))),
    E.left('truncated PNG: the image data is shorter than its header says'),
  )
  t.same(
    decodePng(handPng({ width: 2, height: 1, depth: 8, colour: 0 }, new Uint8Array([7, 1, 2]))),
    E.left('corrupt PNG: unknown row filter 7'),
  )
  t.same(
    decodePng(handPng({ width: 2, height: 1, depth: 3, colour: 0 }, new Uint8Array([0, 1]))),
    E.left('corrupt PNG: colour type 0 with bit depth 3 is not valid'),
  )
  t.same(
    decodePng(handPng({ width: 2, height: 1, depth: 8, colour: 3 }, new Uint8Array([0, 0, 1]))),
    E.left('corrupt PNG: palette image without a valid PLTE chunk'),
  )
  t.throws(
    () => encodePng({ width: 2, height: 2, data: new Uint8Array(3) }),
    /needs 4 pixels, got 3/,
  )
})
