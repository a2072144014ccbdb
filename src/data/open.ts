/**
 * A dataset from a plain JSON config, so a run config or a CLI flag can name its data:
 * `{ "kind": "acdc", "root": "../shared/data/acdc", "split": "train35" }`,
 * `{ "kind": "mscmr", "root": "...", "split": "val" }`, or any folder:
 * `{ "kind": "folder", "root": "scans", "patterns": { "image": "{case}_0000.nii.gz",
 * "scribble": "{case}_scribble.nii.gz" }, "classes": ["background", "tumour"], "unlabelled": 255 }`.
 * A folder's classes default to the cardiac ones and its unlabelled value to 4.
 *
 * @example
 * const ds = await datasetFromConfig({ kind: 'mscmr', root: '../shared/data/mscmr', split: 'val' })()
 */
import { basename, resolve } from 'node:path'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import { decodeTagged, nonEmptyArray, nonEmptyString, nonNegativeInt } from '../pipeline/decode.ts'
import { ACDC_SPLITS, acdcDataset } from './acdc.ts'
import { CARDIAC_CLASSES, CARDIAC_UNLABELLED, type Dataset } from './dataset.ts'
import { listLayout } from './layout.ts'
import { MSCMR_SPLITS, mscmrDataset } from './mscmr.ts'

const oneOf = <K extends string>(keys: readonly K[]) =>
  t.keyof(Object.fromEntries(keys.map((k) => [k, null])) as Record<K, null>)

const codecs = {
  acdc: t.intersection([
    t.type({ kind: t.literal('acdc'), root: nonEmptyString }),
    t.partial({ split: oneOf(ACDC_SPLITS) }),
  ]),
  mscmr: t.intersection([
    t.type({ kind: t.literal('mscmr'), root: nonEmptyString }),
    t.partial({ split: oneOf(MSCMR_SPLITS) }),
  ]),
  folder: t.intersection([
    t.type({
      kind: t.literal('folder'),
      root: nonEmptyString,
      patterns: t.intersection([
        t.type({ image: nonEmptyString }),
        t.partial({ scribble: nonEmptyString, label: nonEmptyString }),
      ]),
    }),
    t.partial({
      name: nonEmptyString,
      split: nonEmptyString,
      classes: nonEmptyArray(nonEmptyString),
      unlabelled: nonNegativeInt,
    }),
  ]),
}

export type DatasetConfig = t.TypeOf<(typeof codecs)[keyof typeof codecs]>

/** Decodes a dataset config; Left says what is wrong in words. */
export const decodeDatasetConfig = decodeTagged('kind', codecs)

/** Lists the dataset a config names (a split defaults to 'train'). */
export const openDataset = (c: DatasetConfig): TE.TaskEither<string, Dataset> => {
  switch (c.kind) {
    case 'acdc':
      return acdcDataset(c.root, c.split ?? 'train')
    case 'mscmr':
      return mscmrDataset(c.root, c.split ?? 'train')
    case 'folder':
      return pipe(
        listLayout(c.root, c.patterns, c.split),
        TE.map((cases) => ({
          name: c.name ?? basename(resolve(c.root)),
          classes: c.classes ?? CARDIAC_CLASSES,
          unlabelled: c.unlabelled ?? CARDIAC_UNLABELLED,
          cases,
        })),
      )
  }
}

/** Decode, then list: the one call a CLI or run config needs. */
export const datasetFromConfig = (u: unknown): TE.TaskEither<string, Dataset> =>
  pipe(TE.fromEither(decodeDatasetConfig(u)), TE.chain(openDataset))
