/**
 * A server with fine-tune jobs over a models folder holding `tiny`, and what the job tests
 * send it: phantom uploads, requests, a job's server-sent events, and a runner held at a gate
 * so that the queue's states can be watched.
 *
 * @example
 * const gate = gatedRunner()
 * const { server } = await serveJobs(t, { runner: gate.runner })
 * const r = await postFinetune(server.url, { volumes: [{ image: base64(v.image), scribble: base64(v.scribble) }] })
 * await gate.release(((await r.json()) as Job).id)
 */
import * as E from 'fp-ts/lib/Either.js'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'tap'
import { createApp } from '../../src/serve/app.ts'
import {
  growingRegistry,
  openJobs,
  workerRunner,
  type Job,
  type JobRunner,
  type JobWork,
} from '../../src/serve/jobs.ts'
import { loadRegistry } from '../../src/serve/models.ts'
import { directoryStore, listen } from '../../src/serve/node.ts'
import { createSession } from '../../src/serve/runtime.ts'
import { encodeNifti } from '../../src/volume/nifti.ts'
import { withData } from '../../src/volume/volume.ts'
import { smallPhantom } from './scans.ts'
import { tinyModelDir } from './serve-fixtures.ts'

const sessions = (b: Uint8Array) => createSession(b, { runtime: 'web', threads: 1 })

/** A models folder with `tiny` (UNet base 4, 32 px at 6 mm) and a server with jobs over it. */
export const serveJobs = async (
  t: Test,
  o: {
    runner?: JobRunner
    jobsDir?: string
    root?: string
    limits?: object
  } = {},
) => {
  const root = o.root ?? t.testdir()
  const modelsDir = join(root, 'models')
  if (o.root === undefined) {
    await mkdir(modelsDir)
    await tinyModelDir(modelsDir, { input: { spacing: [6, 6], size: [32, 32] } })
  }
  const loaded = await loadRegistry(directoryStore(modelsDir), sessions)()
  if (E.isLeft(loaded)) throw new Error(loaded.left)
  const models = growingRegistry(loaded.right)
  const lines: string[] = []
  const jobsDir = o.jobsDir ?? join(modelsDir, '.jobs')
  const jobs = await openJobs({
    registry: models,
    modelsDir,
    jobsDir,
    createSession: sessions,
    runner: o.runner ?? workerRunner('wasm'),
    limits: o.limits,
    log: (l) => lines.push(l),
  })
  const app = createApp({
    models,
    extend: jobs.routes,
    log: () => {},
  })
  const server = await listen(app, { port: 0 })
  t.teardown(async () => {
    await jobs.idle()
    await server.close()
    await models.release()
  })
  return { app, server, jobs, models, modelsDir, jobsDir, root, lines }
}

/** Phantom `seed` as NIfTI bytes: image and scribble (values changed by `scribble` if given). */
export const phantomUpload = (seed: number, scribble?: (v: number) => number) => {
  const c = smallPhantom(seed)
  return {
    image: encodeNifti(c.image, { gzip: true }),
    scribble: encodeNifti(
      scribble ? withData(c.scribble, c.scribble.data.map(scribble)) : c.scribble,
    ),
  }
}

export const base64 = (b: Uint8Array) => Buffer.from(b).toString('base64')

export const postFinetune = (
  url: string,
  body: FormData | object,
  headers: Record<string, string> = {},
) =>
  fetch(`${url}/v1/models/tiny/finetune`, {
    method: 'POST',
    body: body instanceof FormData ? body : JSON.stringify(body),
    headers:
      body instanceof FormData ? headers : { 'content-type': 'application/json', ...headers },
  })

export const getJob = async (url: string, id: string) =>
  (await (await fetch(`${url}/v1/jobs/${id}`)).json()) as Job

/** The server-sent events of a job until it ends: [event, job] pairs. */
export const jobEvents = async (url: string, id: string) => {
  const response = await fetch(`${url}/v1/jobs/${id}/events`)
  const text = await response.text()
  return text
    .split('\n\n')
    .filter((block) => block.trim() !== '')
    .map((block) => {
      const field = (name: string) =>
        block
          .split('\n')
          .find((l) => l.startsWith(`${name}: `))
          ?.slice(name.length + 2) ?? ''
      return [field('event'), JSON.parse(field('data')) as Job] as const
    })
}

export const until = async (f: () => boolean | Promise<boolean>, what: string) => {
  for (let i = 0; i < 500; i++) {
    if (await f()) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** A runner that reports a step, then waits to be told to finish (with the parent's bytes) or fail. */
export const gatedRunner = () => {
  const gates = new Map<string, (why?: string) => void>()
  const runner: JobRunner = (work: JobWork, report) =>
    new Promise((resolve, reject) => {
      report({ stage: 'training', steps: 4, step: 1, epoch: 0 })
      gates.set(work.id, (why) => {
        if (why !== undefined) return reject(new Error(why))
        void readFile(work.parent.onnx).then((onnx) =>
          resolve({
            onnx: new Uint8Array(onnx),
            card: { ...work.parent.card, name: work.name, parent: work.parent.card.name },
          }),
        )
      })
    })
  const release = async (id: string, why?: string) => {
    await until(() => gates.has(id), `job ${id} to start`)
    gates.get(id)?.(why)
  }
  return { runner, release }
}
