/**
 * In-plane resampling of a slice, and the sampling machinery the rest of preprocessing
 * (crop/pad, the network grid and its inverse) is built on.
 *
 * Convention (pixel centres): pixel `i` of an axis with `n` pixels of size `s` has its centre
 * at `i * s` and covers `[(i - 0.5) s, (i + 0.5) s]`; the field of view (FOV) is
 * `[-0.5, n - 0.5]` in continuous index. An output axis is an `AxisMap`: output pixel `u`
 * takes the value at source continuous index `origin + u * step`. Resampling to spacing `t`
 * gives `m = round(n s / t)` pixels (at least 1) at `step = t / s`, placed so that the centre
 * of the FOV, index `(n - 1) / 2`, stays the centre of the output, `(m - 1) / 2`; those
 * sample points always lie inside the source FOV (|n - m step| <= step / 2).
 *
 * Bilinear: the two neighbouring pixels weighted by distance, the index clamped to
 * `[0, n - 1]` (so the half pixel at each border repeats the edge). Nearest: the pixel whose
 * centre is closest, `floor(x + 0.5)` (a tie goes to the higher index); it only copies
 * values, so it never invents a label. A sample outside the FOV either repeats the edge or
 * takes a fill value (`Outside`). The index and weight tables are built once per axis; the
 * inner loops only read them.
 *
 * @example
 * const r = resampleSlice({ spacing: [1.37, 1.37] }, 'bilinear')(slice)  // 1.37 mm pixels
 */
import type { VoxelArray } from './volume.ts'
import type { Slice } from './slice.ts'

export type Interpolation = 'bilinear' | 'nearest'

/** Outside the source FOV: repeat the border pixel, or write the fill value. */
export type Outside = 'edge' | 'fill'

/** Output pixel `u` (0 <= u < size) samples source continuous index `origin + u * step`. */
export interface AxisMap {
  readonly origin: number
  readonly step: number
  /** Output pixels. */
  readonly size: number
  /** Source pixels. */
  readonly source: number
}

/** Per output pixel: the two source pixels and the weight of the second; [lo, hi) are inside. */
interface AxisTable {
  readonly i0: Int32Array
  readonly i1: Int32Array
  readonly w: Float64Array
  readonly lo: number
  readonly hi: number
}

const axisTable = (a: AxisMap, interpolation: Interpolation, outside: Outside): AxisTable => {
  const i0 = new Int32Array(a.size)
  const i1 = new Int32Array(a.size)
  const w = new Float64Array(a.size)
  const last = a.source - 1
  let lo = a.size
  let hi = 0
  for (let u = 0; u < a.size; u++) {
    const x = a.origin + u * a.step
    if (outside === 'edge' || (x >= -0.5 && x <= a.source - 0.5)) {
      lo = Math.min(lo, u)
      hi = u + 1
    }
    if (interpolation === 'nearest') {
      i0[u] = i1[u] = Math.min(Math.max(Math.floor(x + 0.5), 0), last)
    } else {
      const c = Math.min(Math.max(x, 0), last)
      const f = Math.floor(c)
      i0[u] = f
      i1[u] = Math.min(f + 1, last)
      w[u] = c - f
    }
  }
  return { i0, i1, w, lo: Math.min(lo, hi), hi }
}

/** Writes one sampled plane: `source` read from `sourceOffset`, `target` written from `targetOffset`. */
export type PlaneSampler = (
  source: ArrayLike<number>,
  sourceOffset: number,
  target: VoxelArray,
  targetOffset: number,
) => void

/**
 * A sampler from a source plane (`x.source` by `y.source`, x fastest) to an output plane
 * (`x.size` by `y.size`), for any number of planes at any offsets (slices of a volume,
 * channels of a batch). Stores into integer arrays round like typed arrays do, so use
 * 'nearest' for them.
 */
export const planeSampler = (
  x: AxisMap,
  y: AxisMap,
  interpolation: Interpolation,
  outside: Outside,
  fill = 0,
): PlaneSampler => {
  if (x.step <= 0 || y.step <= 0 || x.source < 1 || y.source < 1)
    throw new RangeError('an axis map needs a positive step and at least one source pixel')
  const tx = axisTable(x, interpolation, outside)
  const ty = axisTable(y, interpolation, outside)
  const { i0: x0, i1: x1, w: wx } = tx
  const width = x.size
  const sw = x.source
  const fillRow = (target: VoxelArray, at: number, from: number, to: number): void =>
    void target.fill(fill, at + from, at + to)
  if (interpolation === 'nearest')
    return (source, sourceOffset, target, targetOffset) => {
      for (let v = 0; v < y.size; v++) {
        const out = targetOffset + v * width
        if (v < ty.lo || v >= ty.hi) {
          fillRow(target, out, 0, width)
          continue
        }
        const row = sourceOffset + ty.i0[v] * sw
        fillRow(target, out, 0, tx.lo)
        for (let u = tx.lo; u < tx.hi; u++) target[out + u] = source[row + x0[u]]
        fillRow(target, out, tx.hi, width)
      }
    }
  return (source, sourceOffset, target, targetOffset) => {
    for (let v = 0; v < y.size; v++) {
      const out = targetOffset + v * width
      if (v < ty.lo || v >= ty.hi) {
        fillRow(target, out, 0, width)
        continue
      }
      const ra = sourceOffset + ty.i0[v] * sw
      const rb = sourceOffset + ty.i1[v] * sw
      const b = ty.w[v]
      const a = 1 - b
      fillRow(target, out, 0, tx.lo)
      for (let u = tx.lo; u < tx.hi; u++) {
        const p = x0[u]
        const q = x1[u]
        const s = wx[u]
        const top = source[ra + p] + s * (source[ra + q] - source[ra + p])
        const bottom = source[rb + p] + s * (source[rb + q] - source[rb + p])
        target[out + u] = a * top + b * bottom
      }
      fillRow(target, out, tx.hi, width)
    }
  }
}

/** A slice sampled through two axis maps into a new slice of the given pixel spacing. */
export const sampleSlice = (
  x: AxisMap,
  y: AxisMap,
  interpolation: Interpolation,
  outside: Outside,
  spacing: readonly [number, number],
  fill = 0,
): ((s: Slice) => Slice) => {
  const sample = planeSampler(x, y, interpolation, outside, fill)
  return (s) => {
    if (s.width !== x.source || s.height !== y.source)
      throw new RangeError(`expected a ${x.source}x${y.source} slice, got ${s.width}x${s.height}`)
    const data = new Float32Array(x.size * y.size)
    sample(s.data, 0, data, 0)
    return { width: x.size, height: y.size, data, spacing }
  }
}

/**
 * The axis map that resamples `n` pixels of size `from` mm to pixels of size `to` mm with the
 * FOV centre kept at the output centre: `size` output pixels, by default `round(n from / to)`.
 */
export const centredAxis = (
  n: number,
  from: number,
  to: number,
  size = Math.max(1, Math.round((n * from) / to)),
): AxisMap => {
  if (!(Number.isInteger(n) && n >= 1))
    throw new RangeError(`an axis needs a positive integer size, got ${n}`)
  if (!(from > 0 && to > 0 && Number.isFinite(from) && Number.isFinite(to)))
    throw new RangeError(`spacings must be positive and finite, got ${from} and ${to} mm`)
  if (!(Number.isInteger(size) && size >= 1))
    throw new RangeError(`output size must be a positive integer, got ${size}`)
  const step = to / from
  return { origin: (n - 1) / 2 - ((size - 1) / 2) * step, step, size, source: n }
}

/** Resamples a slice to the target in-plane spacing (image: bilinear; labels: nearest). */
export const resampleSlice =
  (target: { readonly spacing: readonly [number, number] }, interpolation: Interpolation) =>
  (s: Slice): Slice =>
    sampleSlice(
      centredAxis(s.width, s.spacing[0], target.spacing[0]),
      centredAxis(s.height, s.spacing[1], target.spacing[1]),
      interpolation,
      'edge',
      [target.spacing[0], target.spacing[1]],
    )(s)
