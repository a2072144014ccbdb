/**
 * Fine-tune jobs over real HTTP: queueing, progress as server-sent events, registration of
 * the new model (listed, and used by segment), failures, what a restart finds, and every bad
 * request refused with a 4xx and its reason. A gated stand-in runner makes the queue's
 * states observable; one job runs the real fine-tune on a worker thread.
 */
import * as E from 'fp-ts/lib/Either.js'
import { cp, mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { createApp } from '../../src/serve/app.ts'
import type { Job } from '../../src/serve/jobs.ts'
import { parseModelCard } from '../../src/serve/model-card.ts'
import { encodeNifti } from '../../src/volume/nifti.ts'
import { withData } from '../../src/volume/volume.ts'
import {
  base64,
  gatedRunner,
  getJob,
  jobEvents,
  phantomUpload,
  postFinetune,
  serveJobs,
  until,
} from '../helpers/jobs-server.ts'
import { smallPhantom } from '../helpers/scans.ts'

/** The folders in the jobs folder: the uploads of the jobs that still have them. */
const folders = async (dir: string) =>
  (await readdir(dir, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort()

const multipart = (
  volumes: readonly { image: Uint8Array; scribble: Uint8Array }[],
  fields: Record<string, string> = {},
) => {
  const form = new FormData()
  volumes.forEach((v, i) => {
    form.append('image', new Blob([v.image as Uint8Array<ArrayBuffer>]), `scan${i}.nii.gz`)
    form.append(
      'scribble',
      new Blob([v.scribble as Uint8Array<ArrayBuffer>]),
      `scan${i}_scribble.nii`,
    )
  })
  for (const [k, v] of Object.entries(fields)) form.append(k, v)
  return form
}

t.test('queued, running, done: the new model is listed and segments', async (t) => {
  const gate = gatedRunner()
  const { server, modelsDir, jobsDir } = await serveJobs(t, { runner: gate.runner })
  const v = phantomUpload(10)
  const a = await postFinetune(server.url, {
    volumes: [{ image: base64(v.image), scribble: base64(v.scribble) }],
    epochs: 3,
    name: 'tiny-lge',
  })
  t.equal(a.status, 202)
  const first = (await a.json()) as Job & { job: string }
  t.equal(a.headers.get('location'), `/v1/jobs/${first.job}`)
  t.match(first, {
    model: 'tiny',
    name: 'tiny-lge',
    state: 'queued',
    volumes: 1,
    options: { epochs: 3, freeze: 'none' },
  })
  const b = await postFinetune(
    server.url,
    multipart([phantomUpload(11), phantomUpload(12)], { epochs: '2', freeze: 'encoder' }),
  )
  t.equal(b.status, 202)
  const second = (await b.json()) as Job
  t.match(second.name, /^tiny-ft-[0-9a-f]{12}$/)
  t.match(second.options, { epochs: 2, freeze: 'encoder' })

  await until(
    async () => (await getJob(server.url, first.id)).state === 'running',
    'the first job to run',
  )
  t.match(await getJob(server.url, first.id), {
    state: 'running',
    progress: { stage: 'training', step: 1, steps: 4 },
  })
  t.equal((await getJob(server.url, second.id)).state, 'queued', 'one job at a time')
  t.same(
    await readdir(join(jobsDir, first.id)),
    ['volume1_image.nii.gz', 'volume1_scribble.nii'],
    'the uploads wait in the job folder',
  )
  t.same(await folders(jobsDir), [first.id, second.id].sort())
  const list = (await (await fetch(`${server.url}/v1/jobs`)).json()) as { jobs: Job[] }
  t.same(
    list.jobs.map((j) => j.id),
    [second.id, first.id],
    'newest first',
  )

  // A client that leaves the event stream does not stop the job.
  const aborted = new AbortController()
  const stream = await fetch(`${server.url}/v1/jobs/${first.id}/events`, { signal: aborted.signal })
  t.equal(stream.headers.get('content-type'), 'text/event-stream')
  const reader = stream.body!.getReader()
  t.match(
    new TextDecoder().decode((await reader.read()).value),
    /^event: progress\ndata: \{.*"state":"running".*\nid: 0\n/,
  )
  aborted.abort()
  await gate.release(first.id)
  const seen = await jobEvents(server.url, first.id)
  t.equal(seen.at(-1)?.[0], 'done')
  t.match(seen.at(-1)?.[1], { state: 'done', progress: { stage: 'finished' }, error: null })
  t.same(await folders(jobsDir), [second.id], 'a done job leaves no uploads')

  const models = (await (await fetch(`${server.url}/v1/models`)).json()) as {
    models: { name: string; parent?: string }[]
  }
  t.same(
    models.models.map((m) => [m.name, m.parent]),
    [
      ['tiny', undefined],
      ['tiny-lge', 'tiny'],
    ],
  )
  t.ok((await readdir(modelsDir)).includes('tiny-lge.json'), 'the card is in the models folder')
  const segmented = await fetch(`${server.url}/v1/models/tiny-lge/segment`, {
    method: 'POST',
    body: v.image as Uint8Array<ArrayBuffer>,
    headers: { accept: 'application/json' },
  })
  t.equal(segmented.status, 200)
  t.match(await segmented.json(), { model: 'tiny-lge', shape: [40, 40, 3] })

  await until(
    async () => (await getJob(server.url, second.id)).state === 'running',
    'the second job',
  )
  await gate.release(second.id, 'the trainer ran out of memory')
  await until(async () => (await getJob(server.url, second.id)).state === 'failed', 'the failure')
  t.match(await getJob(server.url, second.id), {
    error: 'the trainer ran out of memory',
    finishedAt: String,
  })
  t.same(await folders(jobsDir), [], 'a failed job leaves no uploads')
  t.same(
    (await readdir(jobsDir)).filter((f) => f.endsWith('.json')).sort(),
    [`${first.id}.json`, `${second.id}.json`].sort(),
    'the job files stay',
  )
})

t.test('a real fine-tune on a worker thread; bad scribble values fail the job', async (t) => {
  const { server, jobsDir, lines } = await serveJobs(t)
  const r = await postFinetune(
    server.url,
    multipart([phantomUpload(10), phantomUpload(11)], { epochs: '1', name: 'tiny-real' }),
  )
  t.equal(r.status, 202)
  const { id } = (await r.json()) as Job
  const seen = await jobEvents(server.url, id)
  const last = seen.at(-1)!
  t.equal(last[0], 'done', JSON.stringify(last[1].error))
  t.ok(
    seen.some(
      ([e, j]) => e === 'progress' && j.progress.stage === 'training' && j.progress.step > 0,
    ),
    'training steps streamed',
  )
  t.match(last[1].progress, { epoch: 1, epochs: 1, steps: 1 })
  const card = (await (await fetch(`${server.url}/v1/models/tiny-real`)).json()) as object
  t.ok(E.isRight(parseModelCard(JSON.stringify(card))))
  t.match(card, {
    name: 'tiny-real',
    parent: 'tiny',
    training: { recipe: /^finetune of tiny \(job [0-9a-f]{12}\), 1 epochs, 1 steps$/ },
  })
  const segmented = await fetch(`${server.url}/v1/models/tiny-real/segment`, {
    method: 'POST',
    body: phantomUpload(12).image as Uint8Array<ArrayBuffer>,
  })
  t.equal(segmented.status, 200)
  t.same(await folders(jobsDir), [], 'no uploads or checkpoints left')

  const bad = await postFinetune(
    server.url,
    multipart([phantomUpload(10, (v) => (v === 2 ? 9 : v))], { epochs: '1' }),
  )
  t.equal(bad.status, 202, 'the request is well formed; its scribble values are checked by the job')
  const failed = (await jobEvents(server.url, ((await bad.json()) as Job).id)).at(-1)!
  t.equal(failed[0], 'failed')
  t.equal(
    failed[1].error,
    "stage 'scribble values' failed on volume1: the scribble holds the value 9: neither a class (0..3) nor unlabelled (4)",
  )
  t.match(lines.join('\n'), /"state":"failed"/)
  t.same(await folders(jobsDir), [], 'a failed job leaves no uploads')
})

t.test(
  'a restart marks running jobs failed, never half-registered, and runs the queued',
  async (t) => {
    const first = gatedRunner()
    const before = await serveJobs(t, { runner: first.runner })
    const { modelsDir, root } = before
    const submitted: Job[] = []
    for (const name of ['cut-short', 'written', 'waiting']) {
      const r = await postFinetune(before.server.url, multipart([phantomUpload(10)], { name }))
      submitted.push((await r.json()) as Job)
    }
    await until(
      async () => (await getJob(before.server.url, submitted[0].id)).state === 'running',
      'a job to run',
    )
    // The server stops here, as its jobs folder says: the first job running, the others
    // queued. Say the second had run too, and its model was all written (ONNX and card)
    // before its state could say done; the first had written only part of its ONNX file.
    const after = join(root, 'after')
    await cp(join(modelsDir, '.jobs'), after, { recursive: true })
    await writeFile(
      join(after, `${submitted[1].id}.json`),
      JSON.stringify({ ...submitted[1], state: 'running' }),
    )
    const tinyCard = JSON.parse(await readFile(join(modelsDir, 'tiny.json'), 'utf8')) as object
    await writeFile(join(modelsDir, 'written.onnx'), await readFile(join(modelsDir, 'tiny.onnx')))
    await writeFile(
      join(modelsDir, 'written.json'),
      JSON.stringify({ ...tinyCard, name: 'written', parent: 'tiny' }),
    )
    await writeFile(join(modelsDir, 'cut-short.onnx'), 'half a model')
    t.same(await folders(after), submitted.map((j) => j.id).sort(), 'every job has its uploads')
    // Uploads of a request that never became a job (stopped before its file was written),
    // and a folder that is not a job's.
    await mkdir(join(after, '0123456789ab'))
    await writeFile(join(after, '0123456789ab', 'volume1_image.nii'), 'uploaded')
    await mkdir(join(after, 'notes'))
    for (const j of submitted) await first.release(j.id, 'stopped')
    await before.jobs.idle()

    const second = gatedRunner()
    const restarted = await serveJobs(t, { runner: second.runner, root, jobsDir: after })
    const states = () =>
      Promise.all(submitted.map(async (j) => (await getJob(restarted.server.url, j.id)).state))
    t.same((await states()).slice(0, 2), ['failed', 'done'])
    await until(async () => (await states())[2] === 'running', 'the queued job to run again')
    t.equal(
      (await getJob(restarted.server.url, submitted[0].id)).error,
      'the server stopped while the job ran; send it again',
    )
    t.notOk((await readdir(modelsDir)).includes('cut-short.onnx'), 'no orphan ONNX file is left')
    t.same(
      await folders(after),
      [submitted[2].id, 'notes'].sort(),
      'only the job still to run keeps its uploads',
    )
    await second.release(submitted[2].id)
    await until(async () => (await states())[2] === 'done', 'the queued job')
    t.same(await folders(after), ['notes'])
    const segmented = await fetch(`${restarted.server.url}/v1/models/waiting/segment`, {
      method: 'POST',
      body: phantomUpload(12).image as Uint8Array<ArrayBuffer>,
    })
    t.equal(segmented.status, 200, 'the new model segments without its job folder')
    const listed = (await (await fetch(`${restarted.server.url}/v1/models`)).json()) as {
      models: { name: string }[]
    }
    t.same(listed.models.map((m) => m.name).sort(), ['tiny', 'waiting', 'written'])
  },
)

t.test('every bad request is a 4xx with a reason', async (t) => {
  const gate = gatedRunner()
  const { server, jobs, models } = await serveJobs(t, {
    runner: gate.runner,
    limits: { maxPending: 1, maxEpochs: 50 },
  })
  const v = phantomUpload(10)
  const json = (o: object) => postFinetune(server.url, o)
  const ok = { volumes: [{ image: base64(v.image), scribble: base64(v.scribble) }] }
  const other = smallPhantom(11)
  const wide = encodeNifti(withData({ ...other.scribble, dims: [20, 80, 3] }, other.scribble.data))
  const cases: [string, Promise<Response>, number, RegExp][] = [
    [
      'unknown model',
      fetch(`${server.url}/v1/models/nope/finetune`, { method: 'POST' }),
      404,
      /^unknown model 'nope' \(available: tiny\)$/,
    ],
    [
      'plain text',
      fetch(`${server.url}/v1/models/tiny/finetune`, { method: 'POST', body: 'hi' }),
      415,
      /multipart\/form-data or as application\/json/,
    ],
    [
      'not JSON',
      fetch(`${server.url}/v1/models/tiny/finetune`, {
        method: 'POST',
        body: '{',
        headers: { 'content-type': 'application/json' },
      }),
      400,
      /^the body is not JSON/,
    ],
    ['no volumes', json({}), 400, /^bad request: volumes/],
    [
      'empty volumes',
      json({ volumes: [] }),
      400,
      /^no volumes: send at least one image with its scribble$/,
    ],
    ['unknown option', json({ ...ok, epoch: 3 }), 400, /^bad request: unknown option 'epoch'/],
    [
      'bad base64',
      json({ volumes: [{ image: '%%%', scribble: 'AAAA' }] }),
      400,
      /^volumes\.0\.image is not base64$/,
    ],
    [
      'not NIfTI',
      json({
        volumes: [
          { image: base64(new TextEncoder().encode('hello world!')), scribble: base64(v.scribble) },
        ],
      }),
      415,
      /^volume 1 image: expected a NIfTI-1 volume/,
    ],
    [
      'truncated',
      json({
        volumes: [{ image: base64(v.image), scribble: base64(v.scribble.subarray(0, 600)) }],
      }),
      400,
      /^volume 1 scribble: /,
    ],
    [
      'dims differ',
      json({ volumes: [{ image: base64(v.image), scribble: base64(wide) }] }),
      400,
      /^volume 1 scribble: dims 20x80x3 differ from the image's 40x40x3$/,
    ],
    [
      'unpaired',
      postFinetune(
        server.url,
        (() => {
          const f = multipart([v])
          f.append('image', new Blob([v.image as Uint8Array<ArrayBuffer>]))
          return f
        })(),
      ),
      400,
      /^2 image file\(s\) but 1 scribble file\(s\): send them in pairs$/,
    ],
    [
      'text for a file',
      postFinetune(
        server.url,
        (() => {
          const f = new FormData()
          f.append('image', 'abc')
          return f
        })(),
      ),
      400,
      /^the 'image' field must be a file$/,
    ],
    [
      'epochs 0',
      json({ ...ok, epochs: 0 }),
      400,
      /^epochs must be a whole number from 1 to 50, got 0$/,
    ],
    [
      'epochs text',
      postFinetune(server.url, multipart([v], { epochs: 'many' })),
      400,
      /^bad request: epochs/,
    ],
    [
      'freeze',
      json({ ...ok, freeze: 'decoder' }),
      400,
      /^bad request: freeze must be one of "encoder", "none"/,
    ],
    ['lr', json({ ...ok, lr: -1 }), 400, /^lr must be in \(0, 1\], got -1$/],
    ['classes', json({ ...ok, classes: ['background'] }), 400, /^classes: at least 2 are needed/],
    [
      'unlabelled',
      json({ ...ok, unlabelled: 2 }),
      400,
      /^unlabelled must be a whole number from 4 to 255, got 2$/,
    ],
    ['bad name', json({ ...ok, name: '../evil' }), 400, /^name '\.\.\/evil' is not a model name/],
    [
      'taken name',
      json({ ...ok, name: 'tiny' }),
      409,
      /^a model named 'tiny' exists or is being made$/,
    ],
    ['unknown job', fetch(`${server.url}/v1/jobs/0123456789ab`), 404, /^no job '0123456789ab'$/],
    ['odd job id', fetch(`${server.url}/v1/jobs/..%2Fx/events`), 404, /^no job/],
    [
      'jobs are made on a model',
      fetch(`${server.url}/v1/jobs`, { method: 'POST', body: '{}' }),
      405,
      /^POST is not allowed on \/v1\/jobs \(allowed: GET, HEAD\)$/,
    ],
    [
      'a job is not deleted',
      fetch(`${server.url}/v1/jobs/0123456789ab`, { method: 'DELETE' }),
      405,
      /^DELETE is not allowed on \/v1\/jobs\/0123456789ab \(allowed: GET, HEAD\)$/,
    ],
    [
      'fine-tuning is a POST',
      fetch(`${server.url}/v1/models/tiny/finetune`),
      405,
      /^GET is not allowed on \/v1\/models\/tiny\/finetune \(allowed: POST\)$/,
    ],
  ]
  for (const [what, response, status, reason] of cases) {
    const r = await response
    t.equal(r.status, status, what)
    if (status === 405) t.match(r.headers.get('allow'), /^(GET, HEAD|POST)$/, `${what}: Allow`)
    t.match(((await r.json()) as { error: string }).error, reason, what)
  }
  const accepted = await json(ok)
  t.equal(accepted.status, 202)
  const full = await json(ok)
  t.equal(full.status, 429)
  t.match(
    ((await full.json()) as { error: string }).error,
    /^1 jobs are queued or running, the limit: try again later$/,
  )
  await gate.release(((await accepted.json()) as Job).id)
  await jobs.idle()

  // The API key and the size limit as for segment; Workers (no trainer) answer 501.
  const keyed = createApp({ models, extend: jobs.routes, apiKey: 'k', log: () => {} })
  const noKey = await keyed.request('/v1/models/tiny/finetune', { method: 'POST' })
  t.equal(noKey.status, 401)
  const tooBig = await keyed.request('/v1/models/tiny/finetune', {
    method: 'POST',
    body: JSON.stringify(ok),
    headers: {
      'content-type': 'application/json',
      'x-api-key': 'k',
      'content-length': String(10 ** 9),
    },
  })
  t.equal(tooBig.status, 413)
  t.match(
    ((await tooBig.json()) as { error: string }).error,
    /^the body \(953\.7 MiB\) exceeds the limit of 128\.0 MiB$/,
  )
  const worker = createApp({
    models: { cards: [], find: () => undefined, release: async () => {} },
    log: () => {},
  })
  const refused = await worker.request('/v1/models/tiny/finetune', { method: 'POST' })
  t.equal(refused.status, 501)
  t.match(
    ((await refused.json()) as { error: string }).error,
    /^fine-tuning runs only on the Node server \(maco serve\)/,
  )
  t.equal((await worker.request('/v1/jobs/abc')).status, 501)
  t.equal((await worker.request('/v1/jobs/abc/events')).status, 501)
  const wrongMethod = await worker.request('/v1/jobs', { method: 'POST' })
  t.equal(wrongMethod.status, 405, 'a wrong method is a 405 there too, not a 501')
  t.equal(wrongMethod.headers.get('allow'), 'GET, HEAD')
})
