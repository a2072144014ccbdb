/**
 * `/openapi.json` against the app that serves it: every route the app answers (read from the
 * running app, jobs included) is described, every described operation answers with one of
 * its described statuses, and the JSON it answers with fits the described schema. Without a
 * trainer (Workers) the job routes are still described, and answer 501 as described. A
 * described path asked with another method answers 405 naming the described methods.
 */
import { inspectRoutes } from 'hono/dev'
import t, { type Test } from 'tap'
import { createApp, type App } from '../../src/serve/app.ts'
import type { Job } from '../../src/serve/jobs.ts'
import type { ModelCard } from '../../src/serve/model-card.ts'
import { sha256Hex } from '../../src/serve/models.ts'
import { openApiDocument } from '../../src/serve/openapi.ts'
import { base64, gatedRunner, phantomUpload, serveJobs } from '../helpers/jobs-server.ts'

type Schema = Record<string, unknown>
interface Operation {
  readonly parameters?: readonly Schema[]
  readonly responses: Record<string, { content?: Record<string, { schema?: Schema }> }>
}
interface Document {
  readonly paths: Record<string, Record<string, Operation>>
  readonly components: { readonly schemas: Record<string, Schema> }
}

const typeOf = (v: unknown): string =>
  v === null
    ? 'null'
    : Array.isArray(v)
      ? 'array'
      : typeof v === 'number' && Number.isInteger(v)
        ? 'integer'
        : typeof v

/**
 * Where `value` breaks `schema` (empty: it fits), for the JSON Schema words the description
 * uses: $ref, type, const, enum, required, properties, additionalProperties, items, minItems,
 * maxItems, minimum, maximum, exclusiveMinimum, pattern, minLength.
 */
const misfits = (doc: Document, schema: Schema, value: unknown, at = '$'): string[] => {
  if (typeof schema.$ref === 'string') {
    const target = schema.$ref
      .slice(2)
      .split('/')
      .reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], doc) as Schema
    return misfits(doc, target, value, at)
  }
  const types = schema.type === undefined ? [] : [schema.type].flat()
  const type = typeOf(value)
  if (types.length > 0 && !types.some((t) => t === type || (t === 'number' && type === 'integer')))
    return [`${at}: ${type}, not ${types.join(' or ')}`]
  const out: string[] = []
  const fail = (why: string) => out.push(`${at}: ${why}`)
  if ('const' in schema && value !== schema.const) fail(`not ${JSON.stringify(schema.const)}`)
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) fail(`not one of ${schema.enum}`)
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) fail('below the minimum')
    if (typeof schema.maximum === 'number' && value > schema.maximum) fail('above the maximum')
    if (typeof schema.exclusiveMinimum === 'number' && value <= schema.exclusiveMinimum)
      fail('not above the exclusive minimum')
  }
  if (typeof value === 'string') {
    if (typeof schema.pattern === 'string' && !new RegExp(schema.pattern).test(value))
      fail(`does not match ${schema.pattern}`)
    if (typeof schema.minLength === 'number' && value.length < schema.minLength) fail('too short')
  }
  if (Array.isArray(value)) {
    if (typeof schema.minItems === 'number' && value.length < schema.minItems) fail('too few')
    if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) fail('too many')
    if (schema.items !== undefined)
      value.forEach((v, i) => out.push(...misfits(doc, schema.items as Schema, v, `${at}[${i}]`)))
  }
  if (type === 'object') {
    const object = value as Record<string, unknown>
    const properties = (schema.properties ?? {}) as Record<string, Schema>
    for (const key of (schema.required ?? []) as string[])
      if (!(key in object)) fail(`'${key}' missing`)
    for (const [key, v] of Object.entries(object)) {
      const extra = schema.additionalProperties
      if (key in properties) out.push(...misfits(doc, properties[key], v, `${at}.${key}`))
      else if (extra === false) fail(`'${key}' not described`)
      else if (typeof extra === 'object')
        out.push(...misfits(doc, extra as Schema, v, `${at}.${key}`))
    }
  }
  return out
}

const description = async (app: App) =>
  (await (await app.request('/openapi.json')).json()) as Document

/** "METHOD /path/{param}" for every operation described. */
const described = (doc: Document) =>
  Object.entries(doc.paths)
    .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
    .sort()

/** "METHOD /path/{param}" for every route the app answers. */
const served = (app: App) =>
  inspectRoutes(app)
    .filter((r) => !r.isMiddleware)
    .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`)
    .sort()

/**
 * Calls every described operation with its path parameters filled in and no body, and checks
 * that the answer is a described status (not the not-found fallback) whose JSON fits the
 * described schema; server-sent events are checked event by event against the Job schema.
 */
const everyOperationAnswers = async (
  t: Test,
  app: App,
  doc: Document,
  params: Record<string, string>,
) => {
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops)) {
      const what = `${method.toUpperCase()} ${path}`
      const url = path.replace(/\{(\w+)\}/g, (_, p: string) => params[p])
      const response = await app.request(url, { method: method.toUpperCase() })
      const status = String(response.status)
      t.ok(status in op.responses, `${what}: ${status} is described`)
      const type = response.headers.get('content-type') ?? ''
      const content = op.responses[status]?.content ?? {}
      if (type.startsWith('application/json')) {
        const body = (await response.json()) as { error?: string }
        t.notMatch(body.error ?? '', /^no route/, `${what}: a route answers`)
        const schema = content['application/json']?.schema
        t.ok(schema, `${what}: the ${status} JSON is described`)
        if (schema) t.same(misfits(doc, schema, body), [], `${what}: ${status} fits its schema`)
      } else if (type.startsWith('text/event-stream')) {
        t.ok(content['text/event-stream'], `${what}: the event stream is described`)
        const events = (await response.text()).split('\n\n').filter((e) => e.trim() !== '')
        t.ok(events.length > 0, `${what}: events`)
        for (const e of events) {
          const data = JSON.parse(/^data: (.*)$/m.exec(e)?.[1] ?? 'null') as unknown
          t.same(misfits(doc, doc.components.schemas.Job, data), [], `${what}: an event's job`)
        }
      } else await response.arrayBuffer()
    }
}

/** Every described path asked with a method none describes: a 405 whose Allow is the doc's. */
const otherMethodsRefused = async (
  t: Test,
  app: App,
  doc: Document,
  params: Record<string, string>,
) => {
  for (const [path, ops] of Object.entries(doc.paths)) {
    const url = path.replace(/\{(\w+)\}/g, (_, p: string) => params[p])
    const response = await app.request(url, { method: 'DELETE' })
    const methods = Object.keys(ops).map((m) => m.toUpperCase())
    t.equal(response.status, 405, `DELETE ${path}: 405`)
    t.equal(
      response.headers.get('allow'),
      [...methods, ...(methods.includes('GET') ? ['HEAD'] : [])].join(', '),
      `DELETE ${path}: Allow names the described methods`,
    )
    await response.arrayBuffer()
  }
}

t.test('the schema check says where a value breaks its schema', async (t) => {
  const doc = openApiDocument({ maxBytes: 1, maxVoxels: 1, apiKey: false }) as unknown as Document
  const job = doc.components.schemas.Job
  const fits = {
    id: '0123456789ab',
    model: 'tiny',
    name: 'tiny-2',
    state: 'queued',
    createdAt: '2024-01-01T00:00:00.000Z',
    startedAt: null,
    finishedAt: null,
    volumes: 1,
    options: { epochs: 10, freeze: 'none', lr: 0.0005, classes: ['a', 'b'], unlabelled: 4 },
    progress: {
      stage: 'waiting',
      epoch: 0,
      epochs: 10,
      step: 0,
      steps: 0,
      loss: null,
      valDice: null,
    },
    error: null,
    validation: { RV: 0.5 },
  }
  t.same(misfits(doc, job, fits), [])
  const { error: _, ...noError } = fits
  t.same(
    misfits(doc, job, { ...noError, state: 'paused', volumes: 1.5, validation: { RV: 'x' } }),
    [
      "$: 'error' missing",
      '$.state: not one of queued,running,done,failed',
      '$.volumes: number, not integer',
      '$.validation.RV: string, not number',
    ],
  )
  t.same(misfits(doc, doc.components.schemas.FinetuneRequest, { volumes: [], epoch: 3 }), [
    '$.volumes: too few',
    "$: 'epoch' not described",
  ])
})

t.test('with jobs: every route is described, and every description answers', async (t) => {
  const gate = gatedRunner()
  const { app, jobs } = await serveJobs(t, { runner: gate.runner })
  const doc = await description(app)
  t.same(described(doc), served(app))

  // A job, so that its routes have one to show; the answer fits the description, and the
  // defaults it states are the ones a job gets.
  const v = phantomUpload(10)
  const accepted = await app.request('/v1/models/tiny/finetune', {
    method: 'POST',
    body: JSON.stringify({ volumes: [{ image: base64(v.image), scribble: base64(v.scribble) }] }),
    headers: { 'content-type': 'application/json' },
  })
  const finetune = doc.paths['/v1/models/{name}/finetune'].post
  t.equal(accepted.status, 202)
  t.ok(finetune.responses['202'], '202 described')
  const job = (await accepted.json()) as Job
  t.same(misfits(doc, { $ref: '#/components/schemas/JobAccepted' }, job), [])
  const options = (doc.components.schemas.FinetuneRequest.properties ?? {}) as Record<
    string,
    { default?: unknown }
  >
  t.same(
    { epochs: job.options.epochs, freeze: job.options.freeze, lr: job.options.lr },
    { epochs: options.epochs.default, freeze: options.freeze.default, lr: options.lr.default },
  )
  await gate.release(job.id)
  await jobs.idle()

  await everyOperationAnswers(t, app, doc, { name: 'tiny', id: job.id })
  await otherMethodsRefused(t, app, doc, { name: 'tiny', id: job.id })
  const segmented = await app.request('/v1/models/tiny/segment', {
    method: 'POST',
    body: v.image as Uint8Array<ArrayBuffer>,
    headers: { accept: 'application/json' },
  })
  t.equal(segmented.status, 200)
  t.same(misfits(doc, { $ref: '#/components/schemas/Segmentation' }, await segmented.json()), [])
  // The model route answers with the very bytes its card names.
  const onnx = await app.request('/v1/models/tiny/onnx')
  t.equal(onnx.headers.get('content-type'), 'application/octet-stream')
  const card = (await (await app.request('/v1/models/tiny')).json()) as ModelCard
  t.equal(await sha256Hex(new Uint8Array(await onnx.arrayBuffer())), card.onnx.sha256)
})

t.test('without a trainer (Workers) the job routes answer 501, as described', async (t) => {
  const { models } = await serveJobs(t, { runner: gatedRunner().runner })
  const app = createApp({ models, log: () => {} })
  const doc = await description(app)
  t.same(described(doc), served(app), 'the same routes, each refusing')
  await everyOperationAnswers(t, app, doc, { name: 'tiny', id: '0123456789ab' })
  await otherMethodsRefused(t, app, doc, { name: 'tiny', id: '0123456789ab' })
  const job = await app.request('/v1/jobs/0123456789ab')
  t.equal(job.status, 501)
})
