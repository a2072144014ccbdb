/**
 * `maco serve`: the segmentation service (src/serve/app.ts) on a Node HTTP server, with
 * every model of a folder (`NAME.onnx` + `NAME.json`). Models are opened before the server
 * listens, so a broken one stops it at start with its reason. One JSON log line per
 * request goes to stderr; SIGINT or SIGTERM stops it after open requests end.
 *
 * @example
 * maco serve --port 8787 --models models --api-key "$KEY" --cors '*'
 */
import * as E from 'fp-ts/lib/Either.js'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createApp, DEFAULT_SERVE_LIMITS } from '../serve/app.ts'
import { growingRegistry, openJobs } from '../serve/jobs.ts'
import { loadRegistry } from '../serve/models.ts'
import { directoryStore, listen } from '../serve/node.ts'
import { createSession } from '../serve/runtime.ts'
import { webPage } from '../serve/web/page.ts'
import {
  flag,
  inputError,
  numberOption,
  optionalString,
  runFailed,
  type Command,
} from './command.ts'
import { runtimeOption, threadsOption } from './predict.ts'

export const serveCommand: Command = {
  name: 'serve',
  summary: 'serve models over HTTP (health, model cards, segment)',
  usage: 'maco serve [--port 8787] [--host 127.0.0.1] [--models DIR] [options]',
  details: [
    'Options:',
    '  --port N              port (default 8787; 0 picks a free one)',
    '  --host H              address to listen on (default 127.0.0.1)',
    '  --models DIR          folder of NAME.onnx + NAME.json model cards (default models)',
    '  --api-key K           require Authorization: Bearer K or x-api-key: K on /v1',
    '                        (default: the MACO_API_KEY environment variable, if set)',
    '  --cors ORIGIN         allow browser calls from ORIGIN (comma-separated, or *)',
    `  --max-mb N            largest request body in MiB (default ${DEFAULT_SERVE_LIMITS.maxBytes / 2 ** 20})`,
    `  --max-voxels N        largest input in voxels (default ${DEFAULT_SERVE_LIMITS.maxVoxels})`,
    '  --runtime R           auto (default), web or node (onnxruntime-node / -web)',
    '  --threads N           inference threads per model (default 1)',
    '  --jobs DIR            fine-tune job files and uploads (default MODELS/.jobs)',
    '  --json                print {url, models, runtime} on stdout once listening',
    '',
    'Routes: GET /healthz, GET /v1/models, GET /v1/models/NAME, GET /openapi.json,',
    'POST /v1/models/NAME/segment (body: .nii, .nii.gz or .png). See /openapi.json.',
    'POST /v1/models/NAME/finetune (volumes with scribbles), GET /v1/jobs/ID[/events]: fine-tune',
    'jobs, one at a time; the new model is added to DIR. GET /: the web page.',
  ].join('\n'),
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    models: { type: 'string' },
    'api-key': { type: 'string' },
    cors: { type: 'string' },
    'max-mb': { type: 'string' },
    'max-voxels': { type: 'string' },
    runtime: { type: 'string' },
    threads: { type: 'string' },
    jobs: { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    const port = numberOption(args, 'port', 8787, (n) => Number.isInteger(n) && n >= 0 && n < 65536)
    const host = optionalString(args, 'host') ?? '127.0.0.1'
    const dir = optionalString(args, 'models') ?? 'models'
    const apiKey = optionalString(args, 'api-key') ?? (process.env.MACO_API_KEY || undefined)
    const cors = optionalString(args, 'cors')
      ?.split(',')
      .map((s) => s.trim())
    const maxBytes =
      numberOption(args, 'max-mb', DEFAULT_SERVE_LIMITS.maxBytes / 2 ** 20, (n) => n > 0) * 2 ** 20
    const maxVoxels = numberOption(
      args,
      'max-voxels',
      DEFAULT_SERVE_LIMITS.maxVoxels,
      (n) => Number.isInteger(n) && n > 0,
    )
    const runtime = runtimeOption(args)
    const threads = threadsOption(args)
    if (
      !(await stat(dir).then(
        (s) => s.isDirectory(),
        () => false,
      ))
    )
      throw inputError(`--models ${dir}: no such folder`)
    const registry = await loadRegistry(directoryStore(dir), (bytes) =>
      createSession(bytes, { runtime, threads }),
    )()
    if (E.isLeft(registry)) throw inputError(registry.left)
    const models = registry.right
    const sessions = await Promise.all(
      models.cards.map((c) => models.find(c.name)!.session()),
    ).catch((e: unknown) => {
      throw inputError((e as Error).message)
    })
    const runtimeName = sessions[0]?.runtimeName ?? 'none'
    if (sessions[0]?.fallbackReason) io.err(`serve: ${sessions[0].fallbackReason}\n`)
    const growing = growingRegistry(models)
    const jobs = await openJobs({
      registry: growing,
      modelsDir: dir,
      jobsDir: optionalString(args, 'jobs') ?? join(dir, '.jobs'),
      createSession: (bytes) => createSession(bytes, { runtime, threads }),
      log: (line) => io.err(`${line}\n`),
    })
    const web = await webPage()
    const app = createApp({
      models: growing,
      extend: (app, helpers) => {
        jobs.routes(app, helpers)
        web(app)
      },
      ...(apiKey ? { apiKey } : {}),
      ...(cors ? { cors: cors.length === 1 ? cors[0] : cors } : {}),
      limits: { maxBytes, maxVoxels },
      log: (line) => io.err(`${line}\n`),
    })
    const server = await listen(app, { port, host }).catch((e: unknown) => {
      throw runFailed(`cannot listen on ${host}:${port}: ${(e as Error).message}`)
    })
    const names = models.cards.map((c) => c.name)
    io.err(
      `serve: listening on ${server.url} with ${names.length} model${names.length === 1 ? '' : 's'}` +
        `${names.length ? ` (${names.join(', ')}) on ${runtimeName}` : ` (none in ${dir})`}` +
        `${apiKey ? ', API key required' : ''}\n`,
    )
    if (flag(args, 'json'))
      io.out(`${JSON.stringify({ url: server.url, models: names, runtime: runtimeName })}\n`)
    const signal = await new Promise<string>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'))
      process.once('SIGTERM', () => resolve('SIGTERM'))
    })
    io.err(`serve: ${signal}, stopping\n`)
    await server.close()
    await growing.release()
  },
}
