/**
 * Generic field stages every pipeline starts from, like MONAI's `LoadImaged`: load NIfTI
 * files named by record keys, split volumes into per-slice records, and the registry entries
 * (`load`, `slices`, `pick`, `rename`) that let a JSON config use them.
 *
 * @example
 * pipe(
 *   start<DatasetCase>(),
 *   then(loadNifti('image', 'scribble')),  // { image: path } -> { image: Volume }
 *   then(slices('image', 'scribble')),     // one record per slice: { slice: k, image: Slice, ... }
 * )
 */
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import { readNiftiFile } from '../volume/nifti-file.ts'
import { sliceCount, slicesOf, type Slice } from '../volume/slice.ts'
import type { Volume } from '../volume/volume.ts'
import { stageKind, type Registry } from './config.ts'
import { nonEmptyArray, nonEmptyString } from './decode.ts'
import { pick, rename } from './pipeline.ts'
import { expandStage, stageRTE, type Stage } from './stage.ts'

/**
 * Reads the NIfTI file at each key's path and puts the volume in its place. A key may be
 * optional in the record type (a dataset's `label?`); a record without it fails with its name.
 */
export const loadNifti = <K extends string>(
  ...keys: readonly K[]
): Stage<unknown, { readonly [k in K]?: string }, { readonly [k in K]: Volume }> =>
  stageRTE(`load ${keys.join(', ')}`, (rec: { readonly [k in K]?: string }) => () => {
    const missing = keys.filter((k) => typeof rec[k] !== 'string')
    if (missing.length > 0)
      return TE.left(`the case has no ${missing.map((k) => `'${k}'`).join(', ')} file`)
    return pipe(
      TE.sequenceSeqArray(keys.map((k) => readNiftiFile(rec[k] as string))),
      TE.map(
        (volumes) =>
          Object.fromEntries(keys.map((k, i) => [k, volumes[i]])) as { [k in K]: Volume },
      ),
    )
  })

/**
 * One record per slice of the volumes under `keys` (all must have as many slices), each
 * with `slice: k` and those keys holding slice k as real values.
 */
export const slices = <K extends string>(
  ...keys: readonly K[]
): Stage<
  unknown,
  { readonly [k in K]: Volume },
  { readonly slice: number } & { readonly [k in K]: Slice }
> =>
  expandStage(
    'slices',
    (rec: { readonly [k in K]: Volume }) => {
      const counts = keys.map((k) => sliceCount(rec[k]))
      const odd = counts.findIndex((n) => n !== counts[0])
      if (odd > 0)
        return E.left(`'${keys[0]}' has ${counts[0]} slices but '${keys[odd]}' has ${counts[odd]}`)
      const split = keys.map((k) => slicesOf(rec[k]))
      return E.right(
        Array.from(
          { length: counts[0] ?? 0 },
          (_, z) =>
            ({ slice: z, ...Object.fromEntries(keys.map((k, i) => [k, split[i][z]])) }) as {
              readonly slice: number
            } & { readonly [k in K]: Slice },
        ),
      )
    },
    { needs: keys },
  )

const Keys = t.type({ keys: nonEmptyArray(nonEmptyString) })

/** The field stages for JSON configs; a registry for a project spreads this in. */
export const fieldKinds: Registry = {
  load: stageKind(Keys, (p) => loadNifti(...p.keys)),
  slices: stageKind(Keys, (p) => slices(...p.keys)),
  pick: stageKind(Keys, (p) => pick(...p.keys)),
  rename: stageKind(t.type({ from: nonEmptyString, to: nonEmptyString }), (p) =>
    rename(p.from, p.to),
  ),
}
