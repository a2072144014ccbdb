/**
 * CPL speed: continuous pseudo labels of one slice (4 classes), as the training loop makes
 * one per image, in ms per slice: the median of several timed rounds after a warm-up. The
 * scribbles are ACDC's training scribbles preprocessed as the network sees them (1.37 mm,
 * `size` px) when a folder is given, else synthetic phantoms' (src/data/phantom.ts). The
 * floor is scipy's exact EDT doing the same at 256 px, measured once (not re-run).
 *
 * @example
 * cplBench(phantomScribbles(256, 10), { size: 256, source: 'synthetic', rounds: 7 })
 * // { size: 256, classes: 4, source: 'synthetic', msPerSlice: ..., reference: { msPerSlice: 5.9, ... }, ratio: ... }
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { CARDIAC_UNLABELLED } from '../data/dataset.ts'
import { phantomCase } from '../data/phantom.ts'
import { continuousPseudoLabeller, type ScribbleSlice } from '../maco/cpl.ts'
import { decodeNifti } from '../volume/nifti.ts'
import { preprocessVolume } from '../volume/preprocess.ts'
import { sliceCount } from '../volume/slice.ts'
import type { Volume } from '../volume/volume.ts'
import type { Row } from './report.ts'
import { median, ratioTo, rounded } from './stats.ts'

const CLASSES = 4
const SPACING = 1.37
/** Slices labelled before timing, so that the first rounds do not pay for warm-up. */
const WARMUP = 50
/** At least this many slices per timed round, so a round is long enough to time. */
const MIN_PER_ROUND = 200

/** scipy.ndimage.distance_transform_edt and exp, 256 x 256, 4 classes. */
const SCIPY = { size: 256, msPerSlice: 5.9 }

export interface CplSettings {
  readonly size: number
  /** Where the scribbles came from, for the result. */
  readonly source: string
  readonly rounds: number
}

export interface CplResult {
  readonly size: number
  readonly classes: number
  readonly source: string
  readonly slices: number
  readonly msPerSlice: number
  readonly minMsPerSlice: number
  readonly reference: { readonly msPerSlice: number; readonly source: string } | null
  /** msPerSlice / reference.msPerSlice. */
  readonly ratio: number | null
}

const slicesOf = (v: Volume, size: number): ScribbleSlice[] =>
  Array.from({ length: sliceCount(v) }, (_, k) =>
    v.data.subarray(k * size * size, (k + 1) * size * size),
  )

/** The scribble slices of the first `volumes` `*_scribble.nii.gz` of `dir`, as the network sees them. */
export const scribbleSlices = (
  dir: string,
  volumes: number,
  size: number,
): E.Either<string, ScribbleSlice[]> => {
  const files = E.tryCatch(
    () =>
      readdirSync(dir)
        .filter((f) => f.endsWith('_scribble.nii.gz'))
        .sort()
        .slice(0, volumes),
    (e) => `${dir}: ${(e as Error).message.split('\n')[0]}`,
  )
  if (E.isLeft(files)) return files
  if (files.right.length === 0) return E.left(`${dir}: no *_scribble.nii.gz files`)
  const slices: ScribbleSlice[] = []
  for (const f of files.right) {
    const v = decodeNifti(new Uint8Array(readFileSync(join(dir, f))))
    if (E.isLeft(v)) return E.left(`${join(dir, f)}: ${v.left}`)
    const p = preprocessVolume(v.right, {
      spacing: [SPACING, SPACING],
      size: [size, size],
      kind: 'label',
      fill: CARDIAC_UNLABELLED,
    })
    slices.push(...slicesOf(p, size))
  }
  return E.right(slices)
}

/**
 * The annotator-like scribbles of a seeded phantom, `count` slices of `size` px covering the
 * field of view of 256 px at 1.37 mm (so a small size still holds a whole heart).
 */
export const phantomScribbles = (size: number, count: number): ScribbleSlice[] => {
  const spacing = (SPACING * 256) / size
  return slicesOf(
    phantomCase(0, { size: [size, size], slices: count, spacing: [spacing, spacing, 8] }).scribble,
    size,
  )
}

export const cplBench = (slices: readonly ScribbleSlice[], s: CplSettings): CplResult => {
  const label = continuousPseudoLabeller(s.size, s.size, {
    classes: CLASSES,
    unlabelled: CARDIAC_UNLABELLED,
  })
  const out = new Float32Array(CLASSES * s.size * s.size)
  const perRound = Math.max(MIN_PER_ROUND, slices.length)
  for (let i = 0; i < WARMUP; i++) label(slices[i % slices.length], out)
  const rounds: number[] = []
  for (let r = 0; r < s.rounds; r++) {
    const t0 = performance.now()
    for (let i = 0; i < perRound; i++) label(slices[i % slices.length], out)
    rounds.push((performance.now() - t0) / perRound)
  }
  const msPerSlice = median(rounds)
  const scipy = s.size === SCIPY.size ? SCIPY.msPerSlice : undefined
  return {
    size: s.size,
    classes: CLASSES,
    source: s.source,
    slices: slices.length,
    msPerSlice: rounded(msPerSlice, 3),
    minMsPerSlice: rounded(Math.min(...rounds), 3),
    reference:
      scipy === undefined
        ? null
        : {
            msPerSlice: scipy,
            source:
              "scipy's exact EDT, 256 px, 4 classes: measured once on these machines (notes), not re-run",
          },
    ratio: ratioTo(msPerSlice, scipy),
  }
}

export const cplRows = (r: CplResult): Row[] => [
  {
    bench: 'cpl',
    setting: `${r.size} px, ${r.classes} classes, ${r.source} scribbles`,
    result: `${r.msPerSlice} ms/slice`,
    floor: r.reference
      ? `${r.reference.msPerSlice} ms (scipy EDT, measured once)`
      : 'none (scipy was measured at 256 px)',
    ratio: r.ratio,
  },
]
