/**
 * A folder of NIfTI files named by a pattern per role, e.g.
 * `{ image: '{case}_0000.nii.gz', scribble: '{case}_scribble.nii.gz', label: '{case}_gt.nii.gz' }`:
 * every file matching the image pattern is a case, and its scribble and label are the files
 * the other patterns name for it, when they exist. A file that matches another role's pattern
 * is never taken for an image, so `{case}.nii.gz` can sit beside `{case}_scribble.nii.gz`.
 * Cases come in natural order (subject2 before subject13).
 *
 * @example
 * const cases = await listLayout('data/mine', { image: '{case}.nii.gz', scribble: '{case}_scribble.nii.gz' })()
 * // Right([{ case: 'a01', image: 'data/mine/a01.nii.gz', scribble: 'data/mine/a01_scribble.nii.gz' }, ...])
 */
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import type { DatasetCase } from './dataset.ts'

export interface Patterns {
  readonly image: string
  readonly scribble?: string
  readonly label?: string
}

const ROLES = ['image', 'scribble', 'label'] as const

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

const matcher = (role: string, pattern: string): E.Either<string, RegExp> => {
  const parts = pattern.split('{case}')
  if (parts.length !== 2)
    return E.left(`the ${role} pattern '${pattern}' must contain '{case}' exactly once`)
  if (/[\\/]/.test(pattern))
    return E.left(`the ${role} pattern '${pattern}' must be a file name, not a path`)
  return E.right(new RegExp(`^${escapeRegExp(parts[0])}(.+)${escapeRegExp(parts[1])}$`))
}

const folderReason = (dir: string, e: unknown): string => {
  const code = (e as NodeJS.ErrnoException).code
  return code === 'ENOENT'
    ? `no such folder: ${dir}`
    : code === 'ENOTDIR'
      ? `not a folder: ${dir}`
      : `cannot list ${dir}: ${e instanceof Error ? e.message : String(e)}`
}

const naturalOrder = (a: DatasetCase, b: DatasetCase): number =>
  a.case.localeCompare(b.case, 'en', { numeric: true })

/** The cases of a folder laid out by `patterns`; Left when the folder is missing or has no images. */
export const listLayout = (
  dir: string,
  patterns: Patterns,
  split?: string,
): TE.TaskEither<string, DatasetCase[]> => {
  const roles = ROLES.filter((r) => patterns[r] !== undefined)
  const matchers = E.sequenceArray(roles.map((r) => matcher(r, patterns[r] as string)))
  if (E.isLeft(matchers)) return TE.left(matchers.left)
  const [imageRe, ...otherRes] = matchers.right
  return pipe(
    TE.tryCatch(
      () => readdir(dir, { withFileTypes: true }),
      (e) => folderReason(dir, e),
    ),
    TE.chainEitherK((entries) => {
      const files = new Set(entries.filter((f) => f.isFile()).map((f) => f.name))
      const cases: DatasetCase[] = []
      for (const name of files) {
        const m = imageRe.exec(name)
        if (m === null || otherRes.some((re) => re.test(name))) continue
        const id = m[1]
        const found: Record<string, string> = { image: join(dir, name) }
        for (const role of roles.slice(1)) {
          const file = (patterns[role] as string).replace('{case}', id)
          if (files.has(file)) found[role] = join(dir, file)
        }
        cases.push({ case: id, ...(split === undefined ? {} : { split }), ...found } as DatasetCase)
      }
      return cases.length > 0
        ? E.right(cases.sort(naturalOrder))
        : E.left(`no files matching '${patterns.image}' in ${dir}`)
    }),
  )
}
