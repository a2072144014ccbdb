/**
 * The Worker (functions/worker.ts) run locally on workerd by `wrangler dev`, with its R2
 * bucket simulated in a local folder seeded from a folder of models (`NAME.onnx` +
 * `NAME.json`). `npm run worker` runs this file; the Worker test and anyone scripting a
 * check use `startLocalWorker`.
 *
 * wrangler stays off the network (it runs in CI): `--local`, loopback only, no telemetry, no
 * banner (the banner is what checks for updates), no download of the `Request.cf` object.
 *
 * @example
 * // npm run worker -- --models models --port 8788
 * const worker = await startLocalWorker({ models: 'models', state: dir, port: 0 })()
 * // Right({ url: 'http://127.0.0.1:40123', models: ['acdc-maco'], stop })
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { basename, dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import * as E from 'fp-ts/lib/Either.js'
import type * as TE from 'fp-ts/lib/TaskEither.js'
import { loadRegistry, type ModelRegistry } from '../src/serve/models.ts'
import { directoryStore } from '../src/serve/node.ts'

const ROOT = resolve(import.meta.dirname, '..')
const WRANGLER = join(
  dirname(createRequire(import.meta.url).resolve('wrangler/package.json')),
  'bin/wrangler.js',
)

const WORKERD = join(
  dirname(createRequire(import.meta.url).resolve('workerd/package.json')),
  'bin/workerd',
)

/** The bucket bound as MODELS in wrangler.toml. */
export const BUCKET = 'maco-models'

/** What keeps wrangler from reaching out: telemetry, the update check, `Request.cf`. */
export const OFFLINE_ENV = {
  WRANGLER_SEND_METRICS: 'false',
  WRANGLER_HIDE_BANNER: 'true',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
} as const

export interface LocalWorkerOptions {
  /** A folder of `NAME.onnx` + `NAME.json` pairs (its cards are checked before wrangler starts). */
  readonly models: string
  /** Where the simulated R2 bucket lives: emptied, then seeded with `models`. */
  readonly state: string
  /** Loopback port; 0 for any free one (default 8788). */
  readonly port?: number
  /** Worker vars that override wrangler.toml's, e.g. `{ API_KEY: '...' }`. */
  readonly vars?: Readonly<Record<string, string>>
  /** Receives wrangler's output as it comes (default: kept only for error messages). */
  readonly onOutput?: (text: string) => void
  /** Seconds to wait for `Ready on ...` (default 30). */
  readonly readySeconds?: number
}

export interface LocalWorker {
  readonly url: string
  /** The models served, by their cards' names. */
  readonly models: readonly string[]
  /** Resolves with wrangler's exit code, should it stop by itself. */
  readonly exited: Promise<number | null>
  /** Stops wrangler and its workerd; resolves once they are gone. */
  readonly stop: () => Promise<void>
}

const ANSI = new RegExp(String.raw`\u001b\[[0-9;]*m`, 'g')

const lastLine = (output: string): string =>
  output
    .replace(ANSI, '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('at '))
    .slice(-1)[0] ?? 'no output'

/** wrangler with `args`, in its own process group (it starts workerd and esbuild beneath it). */
const wrangler = (args: readonly string[]): ChildProcess =>
  spawn(process.execPath, [WRANGLER, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...OFFLINE_ENV },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  })

const outputOf = (child: ChildProcess, onOutput?: (text: string) => void): (() => string) => {
  let output = ''
  const take = (chunk: Buffer) => {
    const text = chunk.toString()
    output = (output + text).slice(-20_000)
    onOutput?.(text)
  }
  child.stdout?.on('data', take)
  child.stderr?.on('data', take)
  return () => output
}

const exitOf = (child: ChildProcess): Promise<number | null> =>
  new Promise((done) => {
    child.once('error', () => done(null))
    child.once('exit', (code) => done(code))
  })

/** workerd's version, or why it does not run on this machine (it ships as a native binary). */
export const workerdVersion = (): Promise<E.Either<string, string>> =>
  new Promise((done) =>
    execFile(WORKERD, ['--version'], { timeout: 10_000 }, (error, stdout, stderr) =>
      done(
        error === null
          ? E.right(stdout.trim())
          : E.left(`workerd does not run here: ${lastLine(`${stderr}\n${error.message}`)}`),
      ),
    ),
  )

const notOpenedHere = () => Promise.reject(new Error('sessions are opened by the Worker'))

/** Names of the models in `dir`, their cards decoded as the Worker will (a bad card is a Left). */
export const modelsIn = async (dir: string): Promise<E.Either<string, string[]>> =>
  E.map((r: ModelRegistry) => r.cards.map((c) => c.name))(
    await loadRegistry(directoryStore(dir), notOpenedHere)(),
  )

/** Puts `file` into the local bucket kept in `state` (`wrangler r2 object put --local`). */
const put = async (file: string, state: string): Promise<E.Either<string, void>> => {
  const child = wrangler([
    'r2',
    'object',
    'put',
    `${BUCKET}/${basename(file)}`,
    '--file',
    file,
    '--local',
    '--persist-to',
    state,
  ])
  const output = outputOf(child)
  const code = await exitOf(child)
  return code === 0
    ? E.right(undefined)
    : E.left(`wrangler r2 object put ${file} failed (exit ${code}): ${lastLine(output())}`)
}

/** Empties `state`, then puts the models of `dir` (its .onnx and .json files) into its bucket. */
export const seedBucket = async (
  dir: string,
  state: string,
): Promise<E.Either<string, string[]>> => {
  const names = await modelsIn(dir)
  if (E.isLeft(names)) return names
  if (names.right.length === 0) return E.left(`no model in ${dir} (NAME.onnx + NAME.json)`)
  await rm(state, { recursive: true, force: true })
  for (const file of (await readdir(dir)).filter((f) => /\.(onnx|json)$/.test(f))) {
    const done = await put(join(dir, file), state)
    if (E.isLeft(done)) return done
  }
  return names
}

const stopper = (child: ChildProcess, exited: Promise<number | null>) => async () => {
  if (child.exitCode !== null || child.signalCode !== null) return
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, s)
    } catch {
      // the group has gone already
    }
  }
  signal('SIGTERM')
  const timer = setTimeout(() => signal('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

/**
 * Seeds the local bucket, starts `wrangler dev --local` on 127.0.0.1 and resolves once it
 * is ready; a Left says in one line why workerd did not start.
 */
export const startLocalWorker =
  (options: LocalWorkerOptions): TE.TaskEither<string, LocalWorker> =>
  async () => {
    const state = resolve(options.state)
    const seeded = await seedBucket(options.models, state)
    if (E.isLeft(seeded)) return seeded
    const vars = Object.entries(options.vars ?? {}).flatMap(([k, v]) => ['--var', `${k}:${v}`])
    const child = wrangler([
      'dev',
      '--local',
      '--ip',
      '127.0.0.1',
      '--port',
      String(options.port ?? 8788),
      '--persist-to',
      state,
      '--show-interactive-dev-session=false',
      ...vars,
    ])
    const exited = exitOf(child)
    const stop = stopper(child, exited)
    const seconds = options.readySeconds ?? 30
    const output = outputOf(child, options.onOutput)
    const url = await new Promise<E.Either<string, string>>((done) => {
      const timer = setTimeout(
        () => done(E.left(`wrangler dev was not ready after ${seconds} s: ${lastLine(output())}`)),
        seconds * 1000,
      )
      const ready = () => {
        const match = /Ready on (http:\/\/\S+)/.exec(output().replace(ANSI, ''))
        if (match === null) return
        clearTimeout(timer)
        done(E.right(match[1]))
      }
      child.stdout?.on('data', ready)
      child.stderr?.on('data', ready)
      void exited.then((code) => {
        clearTimeout(timer)
        done(E.left(`wrangler dev exited (${code}) before it was ready: ${lastLine(output())}`))
      })
    })
    if (E.isLeft(url)) await stop()
    return E.map((u: string): LocalWorker => ({ url: u, models: seeded.right, exited, stop }))(url)
  }

/** `npm run worker [-- --models DIR] [--port N]`: serves DIR, or a small random model when DIR has none. */
const main = async (): Promise<number> => {
  const { values } = parseArgs({
    options: {
      models: { type: 'string', default: 'models' },
      port: { type: 'string', default: '8788' },
    },
  })
  const port = Number(values.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`--port must be a port number, got '${values.port}'`)
  let models = resolve(values.models)
  const names = existsSync(models) ? await modelsIn(models) : E.right([])
  if (E.isLeft(names)) throw new Error(names.left)
  if (names.right.length === 0) {
    const { tinyModelDir } = await import('../test/helpers/serve-fixtures.ts')
    models = join(ROOT, '.wrangler/random-model')
    await rm(models, { recursive: true, force: true })
    await mkdir(models, { recursive: true })
    await tinyModelDir(models, { name: 'random-unet' })
    console.error(
      `no model in ${values.models}: serving a small random-weight UNet as 'random-unet'`,
    )
  }
  const worker = await startLocalWorker({
    models,
    state: join(ROOT, '.wrangler/worker-dev'),
    port,
    onOutput: (text) => process.stderr.write(text),
    readySeconds: 120,
  })()
  if (E.isLeft(worker)) throw new Error(worker.left)
  console.error(
    `worker on ${worker.right.url} with ${worker.right.models.join(', ')} (Ctrl-C stops it)`,
  )
  const stopping = new Promise<number>((done) => {
    for (const s of ['SIGINT', 'SIGTERM'] as const)
      process.once(s, () => void worker.right.stop().then(() => done(0)))
  })
  return Promise.race([stopping, worker.right.exited.then((code) => code ?? 1)])
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === import.meta.filename)
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(`worker: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`)
      process.exit(2)
    },
  )
