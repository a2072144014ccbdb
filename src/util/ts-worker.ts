/**
 * A worker thread that runs a TypeScript module, whatever started this process: a worker does
 * not honour `--import tsx` in its execArgv, so a small eval'd script registers tsx first and
 * then imports the module (and, given `main`, calls that export, for a module that is also
 * imported on the main thread and so must do nothing when imported).
 *
 * @example
 * const passes = tsWorker(new URL('./parallel-worker.ts', import.meta.url))
 * const job = tsWorker(import.meta.url, { main: 'jobWorkerMain', workerData: { work } })
 */
import { Worker } from 'node:worker_threads'

const TSX_API = import.meta.resolve('tsx/esm/api')

export interface TsWorkerOptions {
  /** An export of the module to call once it is imported. */
  readonly main?: string
  readonly workerData?: unknown
}

export const tsWorker = (module: URL | string, options: TsWorkerOptions = {}): Worker => {
  const href = typeof module === 'string' ? module : module.href
  const call =
    options.main === undefined ? '' : `.then((m) => m[${JSON.stringify(options.main)}]())`
  return new Worker(
    `import(${JSON.stringify(TSX_API)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(href)}) })${call}`,
    { eval: true, workerData: options.workerData },
  )
}
