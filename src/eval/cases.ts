/**
 * Case names and matching for evaluation: a prediction and its ground truth are paired by
 * case, the file name without `.nii`/`.nii.gz` and without a trailing role suffix (`_label`,
 * `_pred`, `_manual`, `_gt`, `_seg`); a name then left ending in `_image` (a prediction named
 * after its image, `case_image_pred`) loses that too. In a folder that holds masks next to
 * images and scribbles (ACDC's `_image`/`_label`/`_scribble`), only the files with a role
 * suffix are cases.
 *
 * @example
 * caseName('val/patient003_frame01_label.nii.gz') // 'patient003_frame01'
 * pairCases(['a_pred.nii.gz'], ['a_label.nii.gz']) // Right([{ case: 'a', pred: ..., gt: ... }])
 */
import * as E from 'fp-ts/lib/Either.js'
import { basename } from 'node:path'

export const ROLE_SUFFIXES = ['_label', '_pred', '_manual', '_gt', '_seg'] as const

const NIFTI = /\.nii(\.gz)?$/i

export const isNiftiName = (file: string): boolean => NIFTI.test(file)

const stem = (file: string): string => basename(file).replace(NIFTI, '')

const hasRole = (s: string): boolean => ROLE_SUFFIXES.some((r) => s.endsWith(r))

/** The case a file belongs to. */
export const caseName = (file: string): string => {
  const s = stem(file)
  const role = ROLE_SUFFIXES.find((r) => s.endsWith(r) && s.length > r.length)
  const bare = role ? s.slice(0, -role.length) : s
  return role && bare.endsWith('_image') && bare.length > 6 ? bare.slice(0, -6) : bare
}

/** The NIfTI files of a folder listing that are cases: those with a role suffix if any. */
export const caseFiles = (files: readonly string[]): string[] => {
  const nifti = files.filter(isNiftiName)
  const masks = nifti.filter((f) => hasRole(stem(f)))
  return (masks.length > 0 ? masks : nifti).slice().sort()
}

export interface CasePair {
  readonly case: string
  readonly pred: string
  readonly gt: string
}

const byCase = (files: readonly string[], what: string): E.Either<string, Map<string, string>> => {
  const m = new Map<string, string>()
  for (const f of files) {
    const c = caseName(f)
    const seen = m.get(c)
    if (seen !== undefined)
      return E.left(`two ${what} files for case ${c}: ${basename(seen)} and ${basename(f)}`)
    m.set(c, f)
  }
  return E.right(m)
}

const listed = (names: readonly string[]): string =>
  names.length <= 3
    ? names.join(', ')
    : `${names.slice(0, 3).join(', ')} and ${names.length - 3} more`

/** Every prediction with its ground truth, by case name; Left when any is left unmatched. */
export const pairCases = (
  pred: readonly string[],
  gt: readonly string[],
): E.Either<string, CasePair[]> => {
  const p = byCase(pred, 'prediction')
  const g = byCase(gt, 'ground-truth')
  if (E.isLeft(p)) return p
  if (E.isLeft(g)) return g
  const noGt = [...p.right.keys()].filter((c) => !g.right.has(c)).sort()
  const noPred = [...g.right.keys()].filter((c) => !p.right.has(c)).sort()
  if (noGt.length > 0) return E.left(`no ground truth for case(s) ${listed(noGt)}`)
  if (noPred.length > 0) return E.left(`no prediction for case(s) ${listed(noPred)}`)
  return E.right(
    [...p.right.keys()]
      .sort()
      .map((c) => ({ case: c, pred: p.right.get(c)!, gt: g.right.get(c)! })),
  )
}
