/**
 * Z-score intensity normalisation per slice (zero mean, unit variance), as MaCo's
 * preprocessing does after crop/pad, so the mean and spread include the padding.
 * A constant slice has no spread to divide by; it becomes all zeros, never NaN.
 *
 * @example
 * zScore(slice).data   // mean 0, population standard deviation 1
 */
import type { Slice } from './slice.ts'

/** Normalises `a` in place (population variance, float64 sums) and returns it. */
export const zScoreInPlace = (a: Float32Array): Float32Array => {
  const n = a.length
  let sum = 0
  let min = Infinity
  let max = -Infinity
  for (let i = 0; i < n; i++) {
    const v = a[i]
    sum += v
    if (v < min) min = v
    if (v > max) max = v
  }
  // Tested on the values, not on the variance: the float64 mean of a constant float32 slice
  // need not equal the value, and dividing that rounding residue would amplify noise.
  if (!(max > min)) return a.fill(0)
  const mean = sum / n
  let squares = 0
  for (let i = 0; i < n; i++) squares += (a[i] - mean) ** 2
  const scale = 1 / Math.sqrt(squares / n)
  for (let i = 0; i < n; i++) a[i] = (a[i] - mean) * scale
  return a
}

export const zScore = (s: Slice): Slice => ({
  ...s,
  data: zScoreInPlace(Float32Array.from(s.data)),
})
