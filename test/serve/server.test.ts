/**
 * The service over real HTTP: @hono/node-server on a loopback port, a random-weight UNet
 * exported to ONNX and run by onnxruntime, real ACDC volumes (skipped when the shared data
 * is absent) and synthetic ones; and `maco serve` itself as a child process.
 */
import { spawn } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { gunzipSync, gzipSync } from 'fflate'
import t, { type Test } from 'tap'
import { createApp } from '../../src/serve/app.ts'
import { loadRegistry } from '../../src/serve/models.ts'
import { directoryStore, listen } from '../../src/serve/node.ts'
import { decodePng, encodePng } from '../../src/serve/png.ts'
import { createSession } from '../../src/serve/runtime.ts'
import { segmentVolume } from '../../src/serve/segment.ts'
import { decodeNifti, encodeNifti } from '../../src/volume/nifti.ts'
import { volumeOf, type Volume } from '../../src/volume/volume.ts'
import { childEnv, maco } from '../helpers/cli.ts'
import { sharedData } from '../helpers/data.ts'
import { diskVolume } from '../helpers/serve-fixtures.ts'
import { tinyModelDir } from '../helpers/serve-fixtures.ts'

const KEY = 'test-key-123'
const LIMITS = { maxBytes: 4 * 2 ** 20, maxVoxels: 4 * 2 ** 20 }
const acdc = sharedData('acdc/val')

const dir = await tinyModelDir(t.testdir(), {
  name: 'tiny',
  input: { spacing: [2.74, 2.74], size: [128, 128] },
})
const registry = await loadRegistry(directoryStore(dir), (b) =>
  createSession(b, { runtime: 'auto', threads: 1 }),
)()
if (E.isLeft(registry)) throw new Error(registry.left)
const lines: string[] = []
const server = await listen(
  createApp({ models: registry.right, apiKey: KEY, limits: LIMITS, log: (l) => lines.push(l) }),
  {
    port: 0,
  },
)
t.teardown(async () => {
  await server.close()
  await registry.right.release()
})

const auth = { authorization: `Bearer ${KEY}` }

const segment = (
  body: Uint8Array | ReadableStream,
  headers: Record<string, string> = {},
  model = 'tiny',
) =>
  fetch(`${server.url}/v1/models/${model}/segment`, {
    method: 'POST',
    body: body as BodyInit,
    headers: { ...auth, ...headers },
    // A stream body needs it (undici); harmless for bytes.
    duplex: 'half',
  } as RequestInit)

const decoded = (bytes: Uint8Array): Volume => {
  const v = decodeNifti(bytes)
  if (E.isLeft(v)) throw new Error(v.left)
  return v.right
}

/** A mask's geometry must be its image's: dims, pixdim, affine, qform/sform and their codes. */
const sameGeometry = (t: Test, mask: Volume, image: Volume) => {
  t.equal(mask.datatype, 'uint8')
  t.same(mask.dims, image.dims, 'dims')
  t.same(mask.geometry.spacing, image.geometry.spacing, 'pixdim')
  t.same(mask.geometry.affine, image.geometry.affine, 'affine')
  t.same(
    [mask.geometry.qformCode, mask.geometry.sformCode],
    [image.geometry.qformCode, image.geometry.sformCode],
  )
  t.same(mask.geometry.qform, image.geometry.qform, 'qform')
  t.same(mask.geometry.sform, image.geometry.sform, 'sform')
}

const acdcImages = async (): Promise<string[]> =>
  acdc.path === undefined
    ? []
    : (await readdir(acdc.path))
        .filter((f) => f.endsWith('_image.nii.gz'))
        .sort()
        .map((f) => join(acdc.path!, f))

t.test('a synthetic volume (oblique affine) gives a mask with its geometry', async (t) => {
  const volume = diskVolume([70, 64, 5], [1.4, 1.4, 7])
  for (const gzip of [true, false]) {
    const body = encodeNifti(volume, { gzip })
    const res = await segment(body)
    t.equal(res.status, 200)
    t.match(res.headers.get('x-request-id'), /^[0-9a-f-]{36}$/)
    const bytes = new Uint8Array(await res.arrayBuffer())
    t.equal(bytes[0] === 0x1f, gzip, gzip ? 'gzipped like the input' : 'raw like the input')
    const mask = decoded(bytes)
    sameGeometry(t, mask, decoded(body))
    t.ok(
      mask.data.every((v) => v <= 3),
      'class values of the card',
    )
  }
})

t.test(
  'real ACDC volumes: masks with the input geometry, as segment gives them',
  { skip: acdc.skip },
  async (t) => {
    const files = (await acdcImages()).slice(0, 2)
    const model = registry.right.find('tiny')!
    for (const file of files) {
      const body = new Uint8Array(await readFile(file))
      const res = await segment(body)
      t.equal(res.status, 200, file)
      const mask = decoded(new Uint8Array(await res.arrayBuffer()))
      const image = decoded(body)
      sameGeometry(t, mask, image)
      const direct = await segmentVolume(
        { card: model.card, session: await model.session() },
        image,
      )
      t.same(mask.data, direct.data, 'the same voxels as segmenting directly')
    }
  },
)

t.test('JSON and PNG answers', async (t) => {
  const volume = diskVolume([50, 40, 3], [1.6, 1.6, 9])
  const res = await segment(encodeNifti(volume, { gzip: true }), { accept: 'application/json' })
  t.equal(res.status, 200)
  const body = (await res.json()) as {
    shape: number[]
    classes: { voxels: number }[]
    mask: { data: string }
  }
  t.same(body.shape, [50, 40, 3])
  const mask = gunzipSync(new Uint8Array(Buffer.from(body.mask.data, 'base64')))
  t.equal(mask.length, 50 * 40 * 3)
  t.equal(
    body.classes.reduce((n, c) => n + c.voxels, 0),
    mask.length,
    'every voxel counted once',
  )
  const grey = new Uint8Array(60 * 45).map((_, i) => (i % 60 > 25 ? 200 : 30))
  const png = await segment(encodePng({ width: 60, height: 45, data: grey }))
  t.equal(png.status, 200)
  t.equal(png.headers.get('content-type'), 'image/png')
  const out = decodePng(new Uint8Array(await png.arrayBuffer()))
  t.same(
    E.map((p: { width: number; height: number }) => [p.width, p.height])(out),
    E.right([60, 45]),
  )
})

/** A raw NIfTI header claiming `dims`, voxel data absent. */
const claimingHeader = (dims: readonly number[]): Uint8Array => {
  const file = encodeNifti(
    volumeOf({ dims: [2, 2, 1], data: new Uint8Array(4), spacing: [1, 1, 1] }),
  )
  const view = new DataView(file.buffer)
  view.setInt16(40, dims.length, true)
  dims.forEach((d, i) => view.setInt16(42 + 2 * i, d, true))
  return file
}

t.test('bad input: a 4xx with a one-line reason each, and the server keeps serving', async (t) => {
  const good = encodeNifti(diskVolume(), { gzip: true })
  const big = new Uint8Array(LIMITS.maxBytes + 100_000)
  const cases: [string, () => Promise<Response>, number, RegExp][] = [
    ['empty body', () => segment(new Uint8Array(0)), 400, /^empty body/],
    [
      'random bytes',
      () => segment(new Uint8Array(3000).map((_, i) => (i * 31) % 256)),
      415,
      /^unsupported body/,
    ],
    ['truncated gzip', () => segment(good.subarray(0, good.length - 200)), 400, /truncated/],
    [
      '10^12 voxels claimed',
      () => segment(gzipSync(claimingHeader([10000, 10000, 10000]))),
      413,
      /voxels .* over the limit/,
    ],
    [
      'a 2D PNG too big',
      () => segment(encodePng({ width: 3000, height: 2000, data: new Uint8Array(6e6) })),
      413,
      /over the limit/,
    ],
    [
      'a cine series',
      () => segment(claimingHeader([8, 8, 2, 30])),
      400,
      /4D volume with 30 frames/,
    ],
    [
      'unknown model',
      () => segment(good, {}, 'nope'),
      404,
      /unknown model 'nope' \(available: tiny\)/,
    ],
    ['no API key', () => fetch(`${server.url}/v1/models`), 401, /API key is required/],
    [
      'wrong API key',
      () => fetch(`${server.url}/v1/models`, { headers: { 'x-api-key': 'nope' } }),
      401,
      /^wrong API key$/,
    ],
    ['over-size body', () => segment(big), 413, /exceeds the limit of 4\.0 MiB/],
    [
      'over-size body, streamed without a length',
      () =>
        segment(
          new ReadableStream({
            start(c) {
              for (let i = 0; i < 6; i++) c.enqueue(new Uint8Array(2 ** 20))
              c.close()
            },
          }),
        ),
      413,
      /more than 4\.0 MiB/,
    ],
  ]
  for (const [what, send, status, reason] of cases) {
    const res = await send()
    t.equal(res.status, status, what)
    const { error } = (await res.json()) as { error: string }
    t.match(error, reason, `${what}: ${error}`)
    t.notMatch(error, /\n|    at /, 'one line, no stack')
    t.equal((await fetch(`${server.url}/healthz`)).status, 200, `still healthy after ${what}`)
  }
  t.equal((await segment(good)).status, 200, 'and still segmenting')
  t.ok(
    lines.every((l) => !/"status":5\d\d/.test(l)),
    'no 5xx was logged',
  )
})

t.test('concurrent requests get the answers sequential ones get', async (t) => {
  const bodies = [
    encodeNifti(diskVolume([64, 60, 6], [1.5, 1.5, 8]), { gzip: true }),
    encodeNifti(diskVolume([80, 72, 4], [1.2, 1.3, 6], 25), { gzip: false }),
    ...(await acdcImages()).slice(0, 1).map((f) => readFile(f).then((b) => new Uint8Array(b))),
  ]
  const inputs = await Promise.all(bodies)
  const once = async (b: Uint8Array) => new Uint8Array(await (await segment(b)).arrayBuffer())
  const sequential: Uint8Array[] = []
  for (const b of inputs) sequential.push(await once(b))
  const concurrent = await Promise.all([...inputs, ...inputs, ...inputs].map(once))
  concurrent.forEach((c, i) => t.same(c, sequential[i % inputs.length], `request ${i}`))
})

t.test('the OpenAPI description over HTTP parses', async (t) => {
  const res = await fetch(`${server.url}/openapi.json`)
  t.equal(res.status, 200)
  const doc = JSON.parse(await res.text()) as { openapi: string; paths: Record<string, unknown> }
  t.equal(doc.openapi, '3.1.0')
  t.ok('/v1/models/{name}/segment' in doc.paths)
})

t.test('maco serve: listens, serves the folder, stops on SIGTERM', async (t) => {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--port', '0', '--models', dir, '--json'],
    {
      cwd: join(import.meta.dirname, '../..'),
      env: childEnv({ MACO_API_KEY: '' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const started = await new Promise<{ url: string; models: string[] }>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      if (out.includes('\n')) resolve(JSON.parse(out))
    })
    child.once('exit', (code) => reject(new Error(`serve exited (${code}): ${stderr}`)))
  })
  t.same(started.models, ['tiny'])
  t.same(await (await fetch(`${started.url}/healthz`)).json(), { status: 'ok' })
  const list = (await (await fetch(`${started.url}/v1/models`)).json()) as {
    models: { name: string }[]
  }
  t.same(
    list.models.map((m) => m.name),
    ['tiny'],
  )
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  t.equal(await exited, 0)
  t.match(stderr, /listening on http:\/\/127\.0\.0\.1:\d+ with 1 model \(tiny\)/)
  t.match(stderr, /"path":"\/v1\/models","status":200/, 'a log line per request')
})

t.test('maco serve: bad options and folders are one-line errors', async (t) => {
  const missing = await maco('serve', '--models', join(dir, 'nope'))
  t.equal(missing.code, 2)
  t.match(missing.err, /^maco serve: --models .*nope: no such folder\n$/)
  const port = await maco('serve', '--port', '99999')
  t.equal(port.code, 2)
  t.match(port.err, /--port must be a valid number/)
  const runtime = await maco('serve', '--runtime', 'gpu')
  t.match(runtime.err, /--runtime must be one of auto, web, node/)
  const help = await maco('serve', '--help')
  t.match(help.out, /--api-key K/)
})
