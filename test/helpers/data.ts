/**
 * Where the shared real data lives, and a guard that skips a test with a clear message
 * when it is absent (CI machines without `../shared/data`).
 */
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'

export const SHARED_DATA = resolve(
  process.env.MACO_DATA ?? join(import.meta.dirname, '../../../shared/data'),
)

/** The shared data folder, or `undefined` with the reason to pass to `t.skip`/`{ skip }`. */
export const sharedData = (
  sub = '',
): { path: string; skip: false } | { path: undefined; skip: string } => {
  const path = join(SHARED_DATA, sub)
  return existsSync(path)
    ? { path, skip: false }
    : { path: undefined, skip: `shared data not found at ${path} (set MACO_DATA to run this test)` }
}
