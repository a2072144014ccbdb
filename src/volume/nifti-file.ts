/**
 * NIfTI files on disk, for Node: `nifti.ts` does the format, this adds reading, atomic
 * writing, and errors that name the file. Gzip is chosen on write by the name (`.gz`) and
 * recognised on read by the bytes.
 *
 * @example
 * const v = await pipe(readNiftiFile('case_image.nii.gz'), TE.getOrElse((why) => fail(why)))()
 * await writeNiftiFile('out/case_pred.nii.gz', withData(v, mask))()
 */
import { readFile, stat } from 'node:fs/promises'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import { writeFileAtomic } from '../util/atomic.ts'
import { decodeNifti, DEFAULT_LIMITS, encodeNifti, type NiftiLimits } from './nifti.ts'
import type { Volume } from './volume.ts'

const FS_REASONS: Record<string, string> = {
  ENOENT: 'no such file',
  EISDIR: 'is a directory, not a file',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTDIR: 'a folder on the path is a file',
  // `mkdir -p` before a write says EEXIST when a file stands where a folder should be.
  EEXIST: 'a folder on the path is a file',
  ENOSPC: 'no space left on the disk',
}

/** A file-system error in words ("no such file"), not Node's code and syscall. */
const fsReason = (e: unknown): string =>
  FS_REASONS[(e as NodeJS.ErrnoException).code ?? ''] ??
  (e instanceof Error ? e.message : String(e)).split('\n')[0]

/**
 * Reads a `.nii` or `.nii.gz`; Left `"PATH: reason"`. A file far larger than the limits
 * allow is refused from its size, before reading it.
 */
export const readNiftiFile = (
  path: string,
  limits?: Partial<NiftiLimits>,
): TE.TaskEither<string, Volume> => {
  const maxBytes = { ...DEFAULT_LIMITS, ...limits }.maxBytes
  return pipe(
    TE.tryCatch(() => stat(path), fsReason),
    TE.filterOrElse(
      (s) => s.isFile(),
      (s): string => (s.isDirectory() ? 'is a directory, not a file' : 'is not a regular file'),
    ),
    // Compressed data is at most a few bytes per block larger than raw, so a file bigger
    // than this cannot decode to a volume within the limits.
    TE.filterOrElse(
      (s) => s.size <= maxBytes * 1.01 + 65536,
      (s) =>
        `the file is ${s.size} bytes, more than the limit of ${maxBytes} bytes of image data allows`,
    ),
    TE.chain(() => TE.tryCatch(() => readFile(path), fsReason)),
    TE.chainEitherK((bytes) => decodeNifti(bytes, limits)),
    TE.mapLeft((why) => `${path}: ${why}`),
  )
}

/** Writes `v` as NIfTI-1, gzipped iff `path` ends in `.gz`, atomically; Left `"PATH: reason"`. */
export const writeNiftiFile = (path: string, v: Volume): TE.TaskEither<string, void> =>
  TE.tryCatch(
    () => writeFileAtomic(path, encodeNifti(v, { gzip: /\.gz$/i.test(path) })),
    (e) => `${path}: ${fsReason(e)}`,
  )
