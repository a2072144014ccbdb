/**
 * Atomic file writes: write a temporary file next to the target, then rename it over the
 * target, so a crash or a full disk never leaves a half-written output behind.
 *
 * @example
 * await writeFileAtomic('run/best.ckpt', bytes)
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

export const writeFileAtomic = async (path: string, data: Uint8Array | string): Promise<void> => {
  const dir = dirname(path)
  await mkdir(dir, { recursive: true })
  const tmp = join(
    dir,
    `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`,
  )
  try {
    await writeFile(tmp, data)
    await rename(tmp, path)
  } catch (e) {
    await rm(tmp, { force: true })
    throw e
  }
}
