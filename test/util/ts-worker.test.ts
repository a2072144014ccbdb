/**
 * Worker threads that run TypeScript: the module is compiled by tsx inside the worker (type
 * annotations and all), runs on import, or, given `main`, has that export called with the
 * worker's data at hand.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Worker } from 'node:worker_threads'
import t from 'tap'
import { tsWorker } from '../../src/util/ts-worker.ts'

const MODULE = `
import { parentPort, workerData } from 'node:worker_threads'
const answer = (what: string): void => parentPort?.postMessage(what)
answer('imported')
export const echo = (): void => answer(\`echo \${(workerData as { word: string }).word}\`)
`

/** Every message until the worker exits. */
const messages = (w: Worker) =>
  new Promise<unknown[]>((resolve, reject) => {
    const seen: unknown[] = []
    w.on('message', (m) => seen.push(m))
    w.on('error', reject)
    w.on('exit', () => resolve(seen))
  })

t.test('runs a TypeScript module on import, and calls its main export when named', async (t) => {
  const file = join(t.testdir(), 'echo.ts')
  await writeFile(file, MODULE)
  t.same(await messages(tsWorker(pathToFileURL(file))), ['imported'])
  t.same(
    await messages(
      tsWorker(pathToFileURL(file).href, { main: 'echo', workerData: { word: 'hi' } }),
    ),
    ['imported', 'echo hi'],
  )
})

t.test('a module that throws fails the worker with its message', async (t) => {
  const file = join(t.testdir(), 'broken.ts')
  await writeFile(file, `throw new Error('no engine here')\n`)
  await t.rejects(messages(tsWorker(pathToFileURL(file))), /no engine here/)
})
