/**
 * The Worker on workerd: `wrangler dev` (functions/dev.ts) on a free loopback port, its local
 * R2 bucket seeded with a small random-weight UNet, answering every request exactly as the
 * Node server does for the same model and input (onnxruntime-web, one thread, on both).
 * Skipped, with the reason, where workerd cannot run.
 */
import { spawnSync } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { seedBucket, startLocalWorker, workerdVersion } from '../../functions/dev.ts'
import { createApp } from '../../src/serve/app.ts'
import { loadRegistry } from '../../src/serve/models.ts'
import { directoryStore, listen } from '../../src/serve/node.ts'
import { encodePng } from '../../src/serve/png.ts'
import { createSession } from '../../src/serve/runtime.ts'
import { decodeNifti, encodeNifti } from '../../src/volume/nifti.ts'
import { diskVolume, tinyModelDir } from '../helpers/serve-fixtures.ts'

const KEY = 'worker-test-key'
const workerd = await workerdVersion()

t.test('on workerd', { skip: E.isLeft(workerd) && workerd.left }, async (t) => {
  const base = t.testdir()
  const models = join(base, 'models')
  await mkdir(models)
  await tinyModelDir(models, { name: 'tiny', input: { spacing: [2.74, 2.74], size: [128, 128] } })

  const registry = await loadRegistry(directoryStore(models), (b) =>
    createSession(b, { runtime: 'web', threads: 1 }),
  )()
  if (E.isLeft(registry)) throw new Error(registry.left)
  const node = await listen(createApp({ models: registry.right, apiKey: KEY, log: () => {} }), {
    port: 0,
  })
  const started = await startLocalWorker({
    models,
    state: join(base, 'state'),
    port: 0,
    vars: { API_KEY: KEY },
  })()
  t.teardown(async () => {
    if (E.isRight(started)) await started.right.stop()
    await node.close()
    await registry.right.release()
  })
  if (E.isLeft(started)) throw new Error(started.left)
  const worker = started.right

  /** The same request to both servers: status, content type and body bytes of each. */
  const both = (
    path: string,
    init: { method?: string; body?: Uint8Array | string; headers?: Record<string, string> } = {},
  ) =>
    Promise.all(
      [worker.url, node.url].map(async (origin) => {
        const res = await fetch(origin + path, {
          ...init,
          body: init.body as BodyInit | undefined,
          headers: { authorization: `Bearer ${KEY}`, ...init.headers },
        })
        return {
          status: res.status,
          type: res.headers.get('content-type'),
          body: new Uint8Array(await res.arrayBuffer()),
        }
      }),
    )

  t.test('health and model cards as the Node server gives them', async (t) => {
    t.same(worker.models, ['tiny'], 'seeded from the folder')
    const [health] = await both('/healthz')
    t.same(JSON.parse(new TextDecoder().decode(health.body)), { status: 'ok' })
    const [onWorker, onNode] = await both('/v1/models')
    t.equal(onWorker.status, 200)
    t.same(
      JSON.parse(new TextDecoder().decode(onWorker.body)),
      JSON.parse(new TextDecoder().decode(onNode.body)),
    )
  })

  t.test('a NIfTI volume gives the Node server mask, byte for byte', async (t) => {
    const volume = diskVolume([70, 64, 5], [1.4, 1.4, 7])
    for (const gzip of [true, false]) {
      const body = encodeNifti(volume, { gzip })
      const [onWorker, onNode] = await both('/v1/models/tiny/segment', { method: 'POST', body })
      t.equal(
        onWorker.status,
        200,
        onWorker.status === 200 ? 'status' : new TextDecoder().decode(onWorker.body),
      )
      t.equal(onWorker.type, onNode.type)
      t.same(onWorker.body, onNode.body, gzip ? '.nii.gz' : '.nii')
      const mask = decodeNifti(onWorker.body)
      const image = decodeNifti(body)
      if (E.isLeft(mask) || E.isLeft(image)) throw new Error('undecodable NIfTI')
      t.same(mask.right.dims, image.right.dims, 'dims of the input')
      t.same(mask.right.geometry.affine, image.right.geometry.affine, 'affine of the input')
      t.ok(
        new Set(mask.right.data).size > 1,
        'more than one class, so the comparison says something',
      )
    }
  })

  t.test('JSON and PNG answers match too', async (t) => {
    const body = encodeNifti(diskVolume([50, 40, 3], [1.6, 1.6, 9]), { gzip: true })
    const [json, jsonNode] = await both('/v1/models/tiny/segment', {
      method: 'POST',
      body,
      headers: { accept: 'application/json' },
    })
    for (const r of [json, jsonNode])
      t.equal(r.status, 200, r.status === 200 ? 'status' : new TextDecoder().decode(r.body))
    t.same(
      JSON.parse(new TextDecoder().decode(json.body)),
      JSON.parse(new TextDecoder().decode(jsonNode.body)),
    )
    const grey = new Uint8Array(60 * 45).map((_, i) => (i % 60 > 25 ? 200 : 30))
    const [png, pngNode] = await both('/v1/models/tiny/segment', {
      method: 'POST',
      body: encodePng({ width: 60, height: 45, data: grey }),
    })
    t.equal(png.type, 'image/png')
    t.same(png.body, pngNode.body)
  })

  t.test('refusals: the same status and one-line reason as on Node', async (t) => {
    const good = encodeNifti(diskVolume(), { gzip: true })
    const cases: [string, string, Parameters<typeof both>[1]][] = [
      [
        'truncated gzip',
        '/v1/models/tiny/segment',
        { method: 'POST', body: good.subarray(0, 900) },
      ],
      ['unknown model', '/v1/models/nope/segment', { method: 'POST', body: good }],
      ['wrong key', '/v1/models', { headers: { authorization: 'Bearer nope' } }],
      ['unsupported body', '/v1/models/tiny/segment', { method: 'POST', body: 'hello' }],
    ]
    for (const [what, path, init] of cases) {
      const [onWorker, onNode] = await both(path, init)
      t.equal(onWorker.status, onNode.status, `${what}: ${onWorker.status}`)
      t.ok(onWorker.status >= 400 && onWorker.status < 500, `${what}: a 4xx`)
      t.same(new TextDecoder().decode(onWorker.body), new TextDecoder().decode(onNode.body), what)
    }
  })
})

t.test('seeding refuses a folder without a model, or with a broken card, in words', async (t) => {
  const empty = t.testdir({ 'notes.txt': 'no model here' })
  const state = join(empty, 'state')
  t.same(await seedBucket(empty, state), E.left(`no model in ${empty} (NAME.onnx + NAME.json)`))
  const broken = t.testdir({ 'a.json': '{"name": "a"}', 'a.onnx': 'not onnx' })
  const seeded = await seedBucket(broken, state)
  t.ok(E.isLeft(seeded))
  t.match(E.isLeft(seeded) && seeded.left, /a\.json: .*classes/, 'names the file and the field')
})

t.test('npm run worker: a bad option is a one-line error, exit 2', async (t) => {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'functions/dev.ts', '--port', '99999'],
    { cwd: join(import.meta.dirname, '../..'), encoding: 'utf8' },
  )
  t.equal(run.status, 2)
  t.equal(run.stderr, "worker: --port must be a port number, got '99999'\n")
})
