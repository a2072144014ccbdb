/**
 * Fine-tune jobs behind the Hono app (Node only): a client sends scribbled volumes, a job
 * fine-tunes the model on them (src/train/finetune.ts) and registers the result as a new
 * model version that `/v1/models` lists and `segment` uses.
 *
 *   POST /v1/models/{name}/finetune   multipart/form-data (files `image`, `scribble`, optional
 *                                     `label`, paired by order; fields `epochs`, `freeze`, `lr`,
 *                                     `name`, `classes`, `unlabelled`) or JSON
 *                                     `{"volumes": [{"image": base64, "scribble": base64}], ...}`
 *                                     -> 202 {job, state, ...}, Location: /v1/jobs/{id}
 *   GET  /v1/jobs                     every job, newest first
 *   GET  /v1/jobs/{id}                state (queued | running | done | failed) and progress
 *   GET  /v1/jobs/{id}/events         the same as server-sent events until the job ends
 *
 * The request is checked in full before a job exists (limits and API key as for segment; each
 * volume decoded; dims matched; options decoded): every problem is a 4xx with a reason. The
 * scribbles' values are checked when the job prepares its data, and a problem there fails
 * the job with the reason.
 *
 * Jobs run one at a time by default (more wait, queued, up to a limit), each in a worker
 * thread, so the server keeps answering while one trains, and a client that disconnects
 * changes nothing. State is a JSON file per job in the jobs folder, written atomically; a
 * job's uploads are in a folder beside it, removed when the job ends. A server that starts
 * finds a job it left `running` and marks it failed (or done, when its model was completely
 * written: card and ONNX file), removes every folder but those of the queued jobs, and runs
 * those. A finished model is written ONNX file first, card second (both atomically), then
 * registered: a registry reads only models with a card, so none is ever half there.
 *
 * @example
 * const models = growingRegistry(registry)
 * const jobs = await openJobs({ registry: models, modelsDir: 'models', jobsDir: 'models/.jobs', createSession })
 * const app = createApp({ models, extend: jobs.routes })
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import type { Context, Hono } from 'hono'
import { streamSSE } from 'hono/streaming'
import * as t from 'io-ts'
import { randomUUID } from 'node:crypto'
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { parentPort, workerData } from 'node:worker_threads'
import { CARDIAC_UNLABELLED } from '../data/dataset.ts'
import { decodeStrict, nonEmptyString } from '../pipeline/decode.ts'
import { loadEngine, type EngineChoice } from '../train/engine.ts'
import { stepsPerEpoch } from '../train/trainer.ts'
import {
  FINETUNE_DEFAULTS,
  casesRecipe,
  finetune,
  finetuneConfig,
  finetunedModel,
  fitBatch,
  loadParent,
} from '../train/finetune.ts'
import { prepareData } from '../train/recipe.ts'
import { writeFileAtomic } from '../util/atomic.ts'
import { tsWorker } from '../util/ts-worker.ts'
import { isGzip } from '../volume/nifti.ts'
import { spatialDims, type Volume } from '../volume/volume.ts'
import { fail, type Env, type Failure, type RouteHelpers } from './app.ts'
import { parseModelCard, type ModelCard } from './model-card.ts'
import { modelOf, type Model, type ModelRegistry, type SessionFactory } from './models.ts'
import { checkDims } from './segment.ts'
import { errorLine } from '../util/error-line.ts'

// ---- the registry that grows ----------------------------------------------------------

export interface GrowingRegistry extends ModelRegistry {
  /** Adds a model; `/v1/models` lists it and `segment` finds it from then on. */
  readonly add: (model: Model & { readonly opened?: () => unknown }) => void
}

/** `base` plus the models added since it was loaded. */
export const growingRegistry = (base: ModelRegistry): GrowingRegistry => {
  const added: (Model & { readonly opened?: () => unknown })[] = []
  return {
    get cards() {
      return [...base.cards, ...added.map((m) => m.card)]
    },
    find: (name) => base.find(name) ?? added.find((m) => m.card.name === name),
    add: (model) => void added.push(model),
    release: async () => {
      await base.release()
      const opened = added.flatMap((m) => {
        const s = m.opened?.() as Promise<{ release: () => Promise<void> }> | undefined
        return s === undefined ? [] : [s]
      })
      await Promise.all(opened.map((s) => s.then((x) => x.release()).catch(() => undefined)))
    },
  }
}

// ---- jobs as data ---------------------------------------------------------------------

const nullable = <C extends t.Mixed>(c: C) => t.union([c, t.null])

export const JobState = t.keyof({ queued: null, running: null, done: null, failed: null })
export type JobState = t.TypeOf<typeof JobState>

export const JobProgress = t.type({
  /** What the job is doing: waiting, preparing, training, saving, finished. */
  stage: t.string,
  epoch: t.number,
  epochs: t.number,
  step: t.number,
  steps: t.number,
  loss: nullable(t.number),
  valDice: nullable(t.number),
})
export type JobProgress = t.TypeOf<typeof JobProgress>

const JobOptions = t.type({
  epochs: t.number,
  freeze: t.keyof({ encoder: null, none: null }),
  lr: t.number,
  classes: t.array(t.string),
  unlabelled: t.number,
})
type JobOptions = t.TypeOf<typeof JobOptions>

/** A job as its JSON file holds it and `GET /v1/jobs/{id}` shows it. */
export const Job = t.type({
  id: t.string,
  /** The model it fine-tunes. */
  model: t.string,
  /** The model it makes. */
  name: t.string,
  state: JobState,
  createdAt: t.string,
  startedAt: nullable(t.string),
  finishedAt: nullable(t.string),
  volumes: t.number,
  options: JobOptions,
  progress: JobProgress,
  error: nullable(t.string),
  /** The new model's validation Dice per class, when labelled volumes came with the job. */
  validation: nullable(t.record(t.string, t.number)),
})
export type Job = t.TypeOf<typeof Job>

const TERMINAL: readonly JobState[] = ['done', 'failed']

/** What a runner needs to fine-tune: files on disk, no HTTP. */
export interface JobWork {
  readonly id: string
  /** The job's folder: its volumes, and a `run` folder for the trainer (removed at the end). */
  readonly dir: string
  readonly parent: { readonly onnx: string; readonly card: ModelCard }
  readonly name: string
  readonly options: JobOptions
  readonly cases: readonly {
    readonly case: string
    readonly image: string
    readonly scribble: string
    readonly label?: string
  }[]
}

/** Runs a job's fine-tune, reporting progress; resolves to the new model or rejects with why not. */
export type JobRunner = (
  work: JobWork,
  report: (p: Partial<JobProgress>) => void,
) => Promise<{ readonly onnx: Uint8Array; readonly card: ModelCard }>

// ---- the fine-tune a job runs ---------------------------------------------------------

const orThrow = <A>(e: E.Either<string, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left)
  return e.right
}

/** A job's fine-tune on this thread's engine (`workerRunner` runs it on a worker thread). */
export const finetuneJob = async (
  work: JobWork,
  engine: EngineChoice,
  report: (p: Partial<JobProgress>) => void,
): Promise<{ readonly onnx: Uint8Array; readonly card: ModelCard }> => {
  orThrow(await loadEngine(engine)())
  // The card beside the file, checked against its bytes.
  const parent = orThrow(await loadParent(work.parent.onnx)())
  const { options } = work
  const config = orThrow(
    finetuneConfig(parent, options, { epochs: options.epochs, lr: options.lr }),
  )
  const labelled = work.cases.filter((c) => c.label !== undefined)
  const cases = {
    train: work.cases.map(({ label: _, ...c }) => c),
    val: labelled.map(({ scribble: _, ...c }) => c),
    data: `${work.cases.length} volume${work.cases.length === 1 ? '' : 's'} with scribbles sent with job ${work.id}`,
  }
  report({ stage: 'preparing' })
  const data = orThrow(await prepareData(casesRecipe(cases), config)())
  const batch = fitBatch(config, data.train.length).batch
  report({ stage: 'training', steps: stepsPerEpoch(data.train.length, batch) * config.epochs })
  const result = orThrow(
    await finetune({
      parent,
      config,
      ...data,
      runDir: join(work.dir, 'run'),
      freeze: options.freeze,
      origin: {
        recipe: `finetune of ${parent.name}${options.freeze === 'encoder' ? ', encoder frozen' : ''}`,
        pipeline: `job ${work.id}`,
        data: data.data,
      },
      onStep: (step, epoch) => report({ step, epoch }),
      onEpoch: (line) =>
        report({
          epoch: line.epoch,
          loss: line.loss,
          valDice: labelled.length > 0 ? line.valDice : null,
        }),
    })(),
  )
  report({ stage: 'saving' })
  return orThrow(await finetunedModel(work.name, result)())
}

type FromJobWorker =
  | { readonly type: 'progress'; readonly progress: Partial<JobProgress> }
  | { readonly type: 'done'; readonly onnx: Uint8Array; readonly card: ModelCard }
  | { readonly type: 'failed'; readonly message: string }

/** The body of a job's worker thread (see `workerRunner`). */
export const jobWorkerMain = async (): Promise<void> => {
  const port = parentPort
  if (!port) throw new Error('jobWorkerMain runs only in a worker thread')
  const { work, engine } = workerData as { work: JobWork; engine: EngineChoice }
  const send = (m: FromJobWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer)
  try {
    const model = await finetuneJob(work, engine, (progress) =>
      send({ type: 'progress', progress }),
    )
    send({ type: 'done', ...model }, [model.onnx.buffer as ArrayBuffer])
  } catch (e) {
    send({ type: 'failed', message: errorLine(e) })
  }
}

/**
 * Each job on its own worker thread with its own engine: the server's event loop stays free,
 * and a crash takes down the job, not the server.
 */
export const workerRunner =
  (engine: EngineChoice = 'auto'): JobRunner =>
  (work, report) =>
    new Promise((resolve, reject) => {
      const worker = tsWorker(import.meta.url, {
        main: 'jobWorkerMain',
        workerData: { work, engine },
      })
      let settled = false
      worker.on('message', (m: FromJobWorker) => {
        if (m.type === 'progress') return report(m.progress)
        settled = true
        if (m.type === 'done') resolve({ onnx: new Uint8Array(m.onnx), card: m.card })
        else reject(new Error(m.message))
        void worker.terminate()
      })
      worker.on('error', (e) => {
        if (!settled) reject(new Error(`the training worker failed: ${errorLine(e)}`))
        settled = true
      })
      worker.on('exit', (code) => {
        if (!settled) reject(new Error(`the training worker stopped (exit code ${code})`))
        settled = true
      })
    })

// ---- requests -------------------------------------------------------------------------

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

const VolumeFiles = t.intersection([
  t.type({ image: nonEmptyString, scribble: nonEmptyString }),
  t.partial({ label: nonEmptyString }),
])

/** The options of a request, as JSON gives them (multipart fields are converted first). */
const RequestOptions = t.partial({
  epochs: t.number,
  freeze: t.keyof({ encoder: null, none: null }),
  lr: t.number,
  name: t.string,
  classes: t.array(nonEmptyString),
  unlabelled: t.number,
})

const JsonRequest = t.intersection([t.type({ volumes: t.array(VolumeFiles) }), RequestOptions])

interface Upload {
  readonly image: Uint8Array
  readonly scribble: Uint8Array
  readonly label?: Uint8Array
}

interface Request {
  readonly uploads: readonly Upload[]
  readonly options: t.TypeOf<typeof RequestOptions>
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

const fromBase64 = (s: string, what: string): E.Either<Failure, Uint8Array> => {
  const clean = s.replace(/\s+/g, '')
  if (clean.length % 4 !== 0 || !BASE64.test(clean))
    return E.left(fail(400, `${what} is not base64`))
  return E.right(new Uint8Array(Buffer.from(clean, 'base64')))
}

const jsonRequest = (body: Uint8Array): E.Either<Failure, Request> => {
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder().decode(body))
  } catch (e) {
    return E.left(fail(400, `the body is not JSON (${errorLine(e)})`))
  }
  return pipe(
    decodeStrict(JsonRequest)(json),
    E.mapLeft((why) => fail(400, `bad request: ${why}`)),
    E.chain(({ volumes, ...options }) =>
      pipe(
        volumes,
        E.traverseArrayWithIndex((i, v) =>
          pipe(
            E.Do,
            E.apS('image', fromBase64(v.image, `volumes.${i}.image`)),
            E.apS('scribble', fromBase64(v.scribble, `volumes.${i}.scribble`)),
            E.apS(
              'label',
              v.label === undefined
                ? E.right(undefined)
                : fromBase64(v.label, `volumes.${i}.label`),
            ),
            E.map(({ label, ...u }): Upload => (label === undefined ? u : { ...u, label })),
          ),
        ),
        E.map((uploads) => ({ uploads, options })),
      ),
    ),
  )
}

const NUMERIC_FIELDS = ['epochs', 'lr', 'unlabelled']

const multipartRequest = async (
  body: Uint8Array,
  contentType: string,
): Promise<E.Either<Failure, Request>> => {
  let form: FormData
  try {
    form = await new Response(body as Uint8Array<ArrayBuffer>, {
      headers: { 'content-type': contentType },
    }).formData()
  } catch (e) {
    return E.left(fail(400, `malformed multipart body (${errorLine(e)})`))
  }
  const files = async (field: string): Promise<E.Either<Failure, Uint8Array[]>> => {
    const all = form.getAll(field)
    if (all.some((v) => typeof v === 'string'))
      return E.left(fail(400, `the '${field}' field must be a file`))
    return E.right(
      await Promise.all(all.map(async (f) => new Uint8Array(await (f as Blob).arrayBuffer()))),
    )
  }
  const images = await files('image')
  const scribbles = await files('scribble')
  const labels = await files('label')
  if (E.isLeft(images)) return images
  if (E.isLeft(scribbles)) return scribbles
  if (E.isLeft(labels)) return labels
  const [im, sc, la] = [images.right, scribbles.right, labels.right]
  if (im.length !== sc.length)
    return E.left(
      fail(400, `${im.length} image file(s) but ${sc.length} scribble file(s): send them in pairs`),
    )
  if (la.length > 0 && la.length !== im.length)
    return E.left(
      fail(400, `${la.length} label file(s) for ${im.length} images: one each, or none`),
    )
  const fields: Record<string, unknown> = {}
  let fileField: string | undefined
  form.forEach((value, key) => {
    if (['image', 'scribble', 'label'].includes(key)) return
    if (typeof value !== 'string') fileField ??= key
    else
      fields[key] =
        NUMERIC_FIELDS.includes(key) && value.trim() !== '' && Number.isFinite(Number(value))
          ? Number(value)
          : key === 'classes'
            ? value.split(',').map((s) => s.trim())
            : value
  })
  if (fileField !== undefined) return E.left(fail(400, `the '${fileField}' field must be text`))
  return pipe(
    decodeStrict(RequestOptions)(fields),
    E.bimap(
      (why) => fail(400, `bad request: ${why}`),
      (options) => ({
        uploads: im.map((image, i) => ({
          image,
          scribble: sc[i],
          ...(la.length > 0 ? { label: la[i] } : {}),
        })),
        options,
      }),
    ),
  )
}

export interface JobLimits {
  /** Volumes in one request. */
  readonly maxVolumes: number
  readonly maxEpochs: number
  /** Jobs waiting or running. */
  readonly maxPending: number
}

export const DEFAULT_JOB_LIMITS: JobLimits = { maxVolumes: 32, maxEpochs: 500, maxPending: 16 }

const sameDims = (a: Volume, b: Volume) => spatialDims(a).every((n, i) => n === spatialDims(b)[i])

/** Decodes every volume (as segment would) and checks that each pair belongs together. */
const checkUploads = (
  uploads: readonly Upload[],
  volume: RouteHelpers['volume'],
  limits: JobLimits,
): E.Either<Failure, readonly Upload[]> => {
  if (uploads.length === 0)
    return E.left(fail(400, 'no volumes: send at least one image with its scribble'))
  if (uploads.length > limits.maxVolumes)
    return E.left(
      fail(413, `${uploads.length} volumes, more than the limit of ${limits.maxVolumes} a job`),
    )
  for (const [i, u] of uploads.entries()) {
    const at = (role: string, f: Failure) => fail(f.status, `volume ${i + 1} ${role}: ${f.message}`)
    const image = volume(u.image)
    if (E.isLeft(image)) return E.left(at('image', image.left))
    const dims = checkDims(image.right.dims)
    if (E.isLeft(dims)) return E.left(at('image', fail(400, dims.left)))
    for (const role of ['scribble', 'label'] as const) {
      const bytes = u[role]
      if (bytes === undefined) continue
      const v = volume(bytes)
      if (E.isLeft(v)) return E.left(at(role, v.left))
      if (!sameDims(v.right, image.right))
        return E.left(
          at(
            role,
            fail(
              400,
              `dims ${spatialDims(v.right).join('x')} differ from the image's ${spatialDims(image.right).join('x')}`,
            ),
          ),
        )
    }
  }
  return E.right(uploads)
}

/** The job options a request asks for, with defaults from the parent; Left: a 400. */
const jobOptions = (
  o: Request['options'],
  parent: ModelCard,
  limits: JobLimits,
): E.Either<Failure, JobOptions> => {
  const epochs = o.epochs ?? 10
  if (!(Number.isInteger(epochs) && epochs >= 1 && epochs <= limits.maxEpochs))
    return E.left(
      fail(400, `epochs must be a whole number from 1 to ${limits.maxEpochs}, got ${epochs}`),
    )
  const lr = o.lr ?? FINETUNE_DEFAULTS.lr
  if (!(lr > 0 && lr <= 1)) return E.left(fail(400, `lr must be in (0, 1], got ${lr}`))
  const classes = o.classes ?? parent.classes.map((c) => c.name)
  if (classes.length < 2)
    return E.left(fail(400, 'classes: at least 2 are needed (background and a target)'))
  const unlabelled = o.unlabelled ?? Math.max(CARDIAC_UNLABELLED, classes.length)
  if (!(Number.isInteger(unlabelled) && unlabelled >= classes.length && unlabelled <= 255))
    return E.left(
      fail(
        400,
        `unlabelled must be a whole number from ${classes.length} to 255, got ${unlabelled}`,
      ),
    )
  return E.right({ epochs, freeze: o.freeze ?? 'none', lr, classes, unlabelled })
}

// ---- the job manager ------------------------------------------------------------------

export interface JobsOptions {
  /** Where parents are found and finished models are added. */
  readonly registry: GrowingRegistry
  /** The folder the registry was loaded from; finished models are written there. */
  readonly modelsDir: string
  /** Job files (`ID.json`) and each job's folder (`ID/`). */
  readonly jobsDir: string
  readonly createSession: SessionFactory
  /** Default: each job on a worker thread (`workerRunner`). */
  readonly runner?: JobRunner
  /** Jobs running at once (default 1). */
  readonly concurrency?: number
  readonly limits?: Partial<JobLimits>
  /** One JSON line per job event (default: none). */
  readonly log?: (line: string) => void
}

export interface Jobs {
  /** Adds the job routes to the app (pass as `createApp`'s `extend`). */
  readonly routes: (app: Hono<Env>, helpers: RouteHelpers) => void
  readonly get: (id: string) => Job | undefined
  readonly list: () => readonly Job[]
  /** Resolves when no job is running or queued. */
  readonly idle: () => Promise<void>
}

const now = () => new Date().toISOString()

const waiting: JobProgress = {
  stage: 'waiting',
  epoch: 0,
  epochs: 0,
  step: 0,
  steps: 0,
  loss: null,
  valDice: null,
}

const ID = /^[0-9a-f]{12}$/

/** The `.onnx` and card of the model called `name` in `dir`, found by reading the cards. */
const modelFiles = async (
  dir: string,
  name: string,
): Promise<{ onnx: string; card: ModelCard } | undefined> => {
  const files = await readdir(dir).catch(() => [] as string[])
  for (const f of files.filter((f) => f.endsWith('.json'))) {
    const onnx = join(dir, f.replace(/\.json$/, '.onnx'))
    const card = parseModelCard(await readFile(join(dir, f), 'utf8').catch(() => ''))
    if (E.isRight(card) && card.right.name === name && (await exists(onnx)))
      return { onnx, card: card.right }
  }
  return undefined
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  )

/** Reads the jobs folder, settles what a stopped server left, and starts the queue. */
export const openJobs = async (o: JobsOptions): Promise<Jobs> => {
  const limits = { ...DEFAULT_JOB_LIMITS, ...o.limits }
  const runner = o.runner ?? workerRunner()
  const concurrency = o.concurrency ?? 1
  const log = o.log ?? (() => {})
  const jobs = new Map<string, Job>()
  const queue: string[] = []
  const listeners = new Map<string, Set<(job: Job) => void>>()
  let running = 0
  let idleWaiters: (() => void)[] = []
  await mkdir(o.jobsDir, { recursive: true })

  const fileOf = (id: string) => join(o.jobsDir, `${id}.json`)
  const dirOf = (id: string) => join(o.jobsDir, id)
  // Writes of one job's file in order, so that a slow early write never lands last.
  const writes = new Map<string, Promise<void>>()
  const save = (job: Job) => {
    const write = (writes.get(job.id) ?? Promise.resolve()).then(() =>
      writeFileAtomic(fileOf(job.id), `${JSON.stringify(job, null, 2)}\n`),
    )
    writes.set(
      job.id,
      write.catch(() => undefined),
    )
    return write
  }
  const update = async (id: string, patch: Partial<Job>, persist = true) => {
    const job = { ...(jobs.get(id) as Job), ...patch }
    jobs.set(id, job)
    // Listeners hear of changes in the order they happen; the file follows.
    for (const l of listeners.get(id) ?? []) l(job)
    if (patch.state !== undefined)
      log(
        JSON.stringify({
          time: now(),
          job: id,
          state: job.state,
          model: job.model,
          name: job.name,
          ...(job.error ? { error: job.error } : {}),
        }),
      )
    if (persist) await save(job)
    return job
  }

  const checkIdle = () => {
    if (running > 0 || queue.length > 0) return
    const waiters = idleWaiters
    idleWaiters = []
    waiters.forEach((w) => w())
  }

  /** The finished model into the models folder (ONNX first, card last), then registered. */
  const register = async (onnx: Uint8Array, card: ModelCard) => {
    const base = join(o.modelsDir, card.name)
    await writeFileAtomic(`${base}.onnx`, onnx)
    await writeFileAtomic(`${base}.json`, `${JSON.stringify(card, null, 2)}\n`)
    o.registry.add(
      modelOf(card, async () => new Uint8Array(await readFile(`${base}.onnx`)), o.createSession),
    )
  }

  const run = async (id: string) => {
    const job = jobs.get(id) as Job
    const parent = await modelFiles(o.modelsDir, job.model)
    const uploads = await readdir(dirOf(id)).catch(() => [] as string[])
    const at = (f: string | undefined) => (f === undefined ? undefined : join(dirOf(id), f))
    const cases = Array.from({ length: job.volumes }, (_, i) => {
      const file = (role: string) => uploads.find((f) => f.startsWith(`volume${i + 1}_${role}.nii`))
      const label = at(file('label'))
      return {
        case: `volume${i + 1}`,
        image: at(file('image')) as string,
        scribble: at(file('scribble')) as string,
        ...(label === undefined ? {} : { label }),
      }
    })
    await update(id, {
      state: 'running',
      startedAt: now(),
      progress: { ...job.progress, stage: 'starting', epochs: job.options.epochs },
    })
    let ending: Partial<Job>
    try {
      if (parent === undefined)
        throw new Error(`model '${job.model}' is no longer in ${o.modelsDir}`)
      if (cases.some((c) => c.image === undefined || c.scribble === undefined))
        throw new Error('the uploaded volumes are missing from the job folder')
      let lastSaved = 0
      const model = await runner(
        { id, dir: dirOf(id), parent, name: job.name, options: job.options, cases },
        (p) => {
          const current = jobs.get(id) as Job
          // Progress goes to the file at most every 2 s; listeners see every step.
          const persist = Date.now() - lastSaved > 2000 || p.stage !== undefined
          if (persist) lastSaved = Date.now()
          void update(id, { progress: { ...current.progress, ...p } }, persist)
        },
      )
      await register(model.onnx, model.card)
      ending = {
        state: 'done',
        progress: { ...(jobs.get(id) as Job).progress, stage: 'finished' },
        validation: model.card.validation?.dice ?? null,
      }
    } catch (e) {
      ending = { state: 'failed', error: errorLine(e) }
    }
    // The job's folder (uploads, the trainer's checkpoints) goes before the job says it ended:
    // nothing is left to do with it then. The model, its card and the job's file stay.
    await rm(dirOf(id), { recursive: true, force: true })
    await update(id, { ...ending, finishedAt: now() })
  }

  const pump = () => {
    while (running < concurrency && queue.length > 0) {
      const id = queue.shift() as string
      running++
      void run(id).finally(() => {
        running--
        pump()
        checkIdle()
      })
    }
  }

  // What a stopped server left: running jobs failed (or done, if their model is all there).
  const files = (await readdir(o.jobsDir)).filter((f) => /^[0-9a-f]{12}\.json$/.test(f))
  const found: Job[] = []
  for (const f of files) {
    const text = await readFile(join(o.jobsDir, f), 'utf8')
    const decoded = pipe(
      E.tryCatch(() => JSON.parse(text) as unknown, errorLine),
      E.chain((u) =>
        pipe(
          Job.decode(u),
          E.mapLeft(() => 'not a job file'),
        ),
      ),
    )
    if (E.isRight(decoded)) found.push(decoded.right)
    else log(JSON.stringify({ time: now(), file: f, error: `skipped: ${decoded.left}` }))
  }
  found.sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  for (const job of found) {
    jobs.set(job.id, job)
    if (job.state === 'running') {
      const complete = (await modelFiles(o.modelsDir, job.name)) !== undefined
      if (!complete) await rm(join(o.modelsDir, `${job.name}.onnx`), { force: true })
      await update(
        job.id,
        complete
          ? { state: 'done', finishedAt: now(), progress: { ...job.progress, stage: 'finished' } }
          : {
              state: 'failed',
              finishedAt: now(),
              error: 'the server stopped while the job ran; send it again',
            },
      )
    } else if (job.state === 'queued') queue.push(job.id)
  }
  // Only a job that will still run keeps a folder: the uploads of ended jobs (cut short by the
  // stop) and of requests that never became a job go.
  for (const entry of await readdir(o.jobsDir, { withFileTypes: true }))
    if (entry.isDirectory() && ID.test(entry.name) && !queue.includes(entry.name))
      await rm(dirOf(entry.name), { recursive: true, force: true })
  pump()

  const submit = async (
    parent: Model,
    request: Request,
    helpers: RouteHelpers,
  ): Promise<E.Either<Failure, Job>> => {
    const pending = [...jobs.values()].filter((j) => !TERMINAL.includes(j.state))
    if (pending.length >= limits.maxPending)
      return E.left(
        fail(429, `${pending.length} jobs are queued or running, the limit: try again later`),
      )
    const options = jobOptions(request.options, parent.card, limits)
    if (E.isLeft(options)) return options
    const uploads = checkUploads(request.uploads, helpers.volume, limits)
    if (E.isLeft(uploads)) return uploads
    const id = randomUUID().replace(/-/g, '').slice(0, 12)
    const name = request.options.name ?? `${parent.card.name.slice(0, 100)}-ft-${id}`
    if (!MODEL_NAME.test(name))
      return E.left(
        fail(400, `name '${name.slice(0, 40)}' is not a model name (letters, digits, . _ -)`),
      )
    if (o.registry.find(name) !== undefined || pending.some((j) => j.name === name))
      return E.left(fail(409, `a model named '${name}' exists or is being made`))
    if ((await modelFiles(o.modelsDir, parent.card.name)) === undefined)
      return E.left(
        fail(409, `model '${parent.card.name}' has no files in ${o.modelsDir} to fine-tune`),
      )
    await mkdir(dirOf(id), { recursive: true })
    for (const [i, u] of uploads.right.entries())
      for (const role of ['image', 'scribble', 'label'] as const) {
        const bytes = u[role]
        if (bytes !== undefined)
          await writeFileAtomic(
            join(dirOf(id), `volume${i + 1}_${role}.nii${isGzip(bytes) ? '.gz' : ''}`),
            bytes,
          )
      }
    const job: Job = {
      id,
      model: parent.card.name,
      name,
      state: 'queued',
      createdAt: now(),
      startedAt: null,
      finishedAt: null,
      volumes: uploads.right.length,
      options: options.right,
      progress: { ...waiting, epochs: options.right.epochs },
      error: null,
      validation: null,
    }
    jobs.set(id, job)
    await update(id, { state: 'queued' })
    queue.push(id)
    pump()
    return E.right(jobs.get(id) as Job)
  }

  const jobOr404 = (c: Context<Env>, helpers: RouteHelpers): E.Either<Response, Job> => {
    const id = c.req.param('id') ?? ''
    const job = ID.test(id) ? jobs.get(id) : undefined
    return job === undefined
      ? E.left(helpers.failure(c, fail(404, `no job '${id.slice(0, 40)}'`)))
      : E.right(job)
  }

  const routes = (app: Hono<Env>, helpers: RouteHelpers) => {
    app.post('/v1/models/:name/finetune', async (c) => {
      const parent = helpers.model(c)
      if (E.isLeft(parent)) return helpers.failure(c, parent.left)
      // The boundary is case sensitive: only the media type is compared without case.
      const type = c.req.header('content-type') ?? ''
      const media = type.toLowerCase()
      const multipart = media.startsWith('multipart/form-data')
      if (!multipart && !media.startsWith('application/json'))
        return helpers.failure(
          c,
          fail(415, 'send the volumes as multipart/form-data or as application/json (base64)'),
        )
      const body = await helpers.body(c)()
      if (E.isLeft(body)) return helpers.failure(c, body.left)
      const request = multipart ? await multipartRequest(body.right, type) : jsonRequest(body.right)
      if (E.isLeft(request)) return helpers.failure(c, request.left)
      const job = await submit(parent.right, request.right, helpers)
      if (E.isLeft(job)) return helpers.failure(c, job.left)
      c.header('location', `/v1/jobs/${job.right.id}`)
      return c.json({ job: job.right.id, ...job.right }, 202)
    })
    app.get('/v1/jobs', (c) =>
      c.json({ jobs: [...jobs.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt)) }),
    )
    app.get('/v1/jobs/:id', (c) => {
      const job = jobOr404(c, helpers)
      return E.isLeft(job) ? job.left : c.json(job.right)
    })
    app.get('/v1/jobs/:id/events', (c) => {
      const found = jobOr404(c, helpers)
      if (E.isLeft(found)) return found.left
      const id = found.right.id
      return streamSSE(c, async (stream) => {
        let counter = 0
        const send = (job: Job) =>
          stream.writeSSE({
            event: TERMINAL.includes(job.state) ? job.state : 'progress',
            id: String(counter++),
            data: JSON.stringify(job),
          })
        await new Promise<void>((resolve) => {
          // The last event is written before the stream ends with the callback.
          const listener = (job: Job) =>
            void send(job).then(() => {
              if (TERMINAL.includes(job.state)) finish()
            })
          const finish = () => {
            listeners.get(id)?.delete(listener)
            resolve()
          }
          // A client that goes away stops its stream, never the job.
          stream.onAbort(finish)
          if (!listeners.has(id)) listeners.set(id, new Set())
          listeners.get(id)?.add(listener)
          listener(jobs.get(id) as Job)
        })
      })
    })
  }

  return {
    routes,
    get: (id) => jobs.get(id),
    list: () => [...jobs.values()],
    idle: () =>
      running === 0 && queue.length === 0
        ? Promise.resolve()
        : new Promise((resolve) => idleWaiters.push(resolve)),
  }
}
