/**
 * `maco inspect FILE [--json]`: what a NIfTI file holds, to check data before using it:
 * dims, spacing, affine, datatype, qform/sform codes, scaling, the range of the real
 * intensities and, for a label map (integers, at most 32 distinct values), how many voxels
 * carry each value.
 *
 * @example
 * maco inspect patient001_frame01_scribble.nii.gz --json
 * // {"dims":[216,256,10],"spacing":[1.5625,1.5625,10],"affine":[[...]],"datatype":"uint8",...,"labels":{"0":1234,...}}
 */
import * as E from 'fp-ts/lib/Either.js'
import { readNiftiFile } from '../volume/nifti-file.ts'
import {
  isIdentityScaling,
  type DataType,
  type Mat4,
  type Scaling,
  type Volume,
} from '../volume/volume.ts'
import { flag, inputError, positionals, type Command } from './command.ts'

/** More distinct values than this and the volume is an image, not a label map. */
const MAX_LABELS = 32

const INTEGER_TYPES: readonly DataType[] = ['uint8', 'int16', 'uint16', 'int32']

/** NIfTI xform codes in words. */
const XFORM_NAMES = ['unknown', 'scanner', 'aligned', 'talairach', 'mni', 'template']

export interface Intensity {
  readonly min: number
  readonly max: number
  readonly mean: number
  /** Voxels whose real value is NaN or infinite, left out of min, max and mean. */
  readonly nonFinite: number
}

/** Stored -> real value as `realValues` maps it (slope 0 means none), in double precision. */
const toReal = (s: Scaling) => {
  const slope = s.slope === 0 || !Number.isFinite(s.slope) ? 1 : s.slope
  const inter = Number.isFinite(s.inter) ? s.inter : 0
  return (x: number): number => x * slope + inter
}

/**
 * Range and mean of the real (scaled) values. Scaling is affine, so they are taken over the
 * stored values and mapped once, without a scaled copy of the volume.
 */
export const intensityOf = (v: Volume): Intensity => {
  const data = v.data
  let min = Infinity
  let max = -Infinity
  let sum = 0
  let nonFinite = 0
  for (let i = 0; i < data.length; i++) {
    const x = data[i]
    if (x - x !== 0) {
      nonFinite++ // NaN or infinite: x - x is NaN
      continue
    }
    if (x < min) min = x
    if (x > max) max = x
    sum += x
  }
  const n = data.length - nonFinite
  if (n === 0) return { min: NaN, max: NaN, mean: NaN, nonFinite }
  const real = toReal(v.scaling)
  const [lo, hi] = [real(min), real(max)].sort((a, b) => a - b) // a negative slope swaps them
  return { min: lo, max: hi, mean: real(sum / n), nonFinite }
}

/** Voxels per stored value; `undefined` as soon as there are more than `MAX_LABELS` values. */
const histogram = (data: Volume['data']): Map<number, number> | undefined => {
  // 8 and 16 bit data: count into bins, then keep the bins in use.
  if (data instanceof Uint8Array || data instanceof Uint16Array || data instanceof Int16Array) {
    const shift = data instanceof Int16Array ? 32768 : 0
    const bins = new Uint32Array(data instanceof Uint8Array ? 256 : 65536)
    for (let i = 0; i < data.length; i++) bins[data[i] + shift]++
    const counts = new Map<number, number>()
    for (let b = 0; b < bins.length; b++)
      if (bins[b] > 0 && counts.set(b - shift, bins[b]).size > MAX_LABELS) return undefined
    return counts
  }
  const counts = new Map<number, number>()
  for (let i = 0; i < data.length; i++)
    if (counts.set(data[i], (counts.get(data[i]) ?? 0) + 1).size > MAX_LABELS) return undefined
  return counts
}

/**
 * Voxels per real value, for integer data with at most 32 distinct values (a label map);
 * `undefined` for anything else.
 */
export const labelCounts = (v: Volume): Record<string, number> | undefined => {
  if (!INTEGER_TYPES.includes(v.datatype)) return undefined
  const counts = histogram(v.data)
  if (!counts) return undefined
  const values = [...counts.keys()].sort((a, b) => a - b)
  const real = toReal(v.scaling)
  return Object.fromEntries(values.map((x) => [String(real(x)), counts.get(x)!]))
}

const num = (x: number): string =>
  Number.isFinite(x) ? String(Number(x.toPrecision(6))) : String(x)

const matrixLines = (m: Mat4): string[] => {
  const cells = m.map((row) => row.map(num))
  const width = Math.max(...cells.flat().map((c) => c.length))
  return cells.map((row) => row.map((c) => c.padStart(width)).join('  '))
}

const codeName = (code: number): string =>
  `code ${code} (${XFORM_NAMES[code] ?? 'not a NIfTI code'})`

const table = (
  path: string,
  v: Volume,
  intensity: Intensity,
  labels?: Record<string, number>,
): string => {
  const g = v.geometry
  const scaled = !isIdentityScaling(v.scaling)
  const rows: [string, string][] = [
    ['dims', v.dims.join(' x ')],
    ['spacing', `${g.spacing.map(num).join(' x ')} mm`],
    [
      'datatype',
      `${v.datatype}${scaled ? `, real = stored x ${num(v.scaling.slope)} + ${num(v.scaling.inter)}` : ''}`,
    ],
    ['qform', codeName(g.qformCode)],
    ['sform', codeName(g.sformCode)],
    ...matrixLines(g.affine).map((line, i): [string, string] => [i === 0 ? 'affine' : '', line]),
    [
      'intensity',
      `min ${num(intensity.min)}, max ${num(intensity.max)}, mean ${num(intensity.mean)}` +
        (intensity.nonFinite > 0 ? ` (${intensity.nonFinite} NaN/infinite voxels left out)` : ''),
    ],
    ...(labels
      ? [
          [
            'labels',
            Object.entries(labels)
              .map(([k, n]) => `${k}: ${n}`)
              .join(', '),
          ] as [string, string],
        ]
      : []),
  ]
  return [path, ...rows.map(([k, val]) => `  ${k.padEnd(10)} ${val}`), ''].join('\n')
}

export const inspect: Command = {
  name: 'inspect',
  summary: 'show what a NIfTI file holds: dims, spacing, affine, datatype, intensities, labels',
  usage: 'maco inspect FILE [--json]',
  details: [
    'FILE          a NIfTI-1 file, .nii or .nii.gz (gzip is recognised by its bytes)',
    '--json        print one JSON document: {"dims":[...],"spacing":[...],"affine":[[...]],',
    '              "datatype":...,"qformCode","sformCode","qform","sform","scaling":{slope,inter},',
    '              "intensity":{min,max,mean,nonFinite},"labels":{value:count} or null}',
    '',
    'Intensities are real values (stored x scl_slope + scl_inter). Labels are counted when the',
    `data is integer with at most ${MAX_LABELS} distinct values.`,
  ].join('\n'),
  options: { json: { type: 'boolean' } },
  run: async (args, io) => {
    const [path] = positionals(args, 1, 'one FILE')
    const read = await readNiftiFile(path)()
    if (E.isLeft(read)) throw inputError(read.left)
    const v = read.right
    const intensity = intensityOf(v)
    const labels = labelCounts(v)
    if (!flag(args, 'json')) return io.out(table(path, v, intensity, labels))
    const g = v.geometry
    io.out(
      `${JSON.stringify({
        file: path,
        dims: v.dims,
        spacing: g.spacing,
        affine: g.affine,
        datatype: v.datatype,
        qformCode: g.qformCode,
        sformCode: g.sformCode,
        qform: g.qform,
        sform: g.sform,
        scaling: v.scaling,
        intensity,
        labels: labels ?? null,
      })}\n`,
    )
  },
}
