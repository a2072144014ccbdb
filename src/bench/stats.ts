/**
 * Summaries of repeated timings. The machines are shared (and one core can run a third
 * slower than the other), so a benchmark reports medians and quantiles, never means.
 *
 * @example
 * median([30, 10, 20, 1000]) // 25
 * quantile([10, 20, 30, 40], 0.99) // 40
 * ratioTo(167, 20) // 8.35
 */

/** The middle value (the mean of the two middle ones for an even count). */
export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** The smallest value with at least a fraction `q` of `sorted` at or below it. */
export const quantile = (sorted: readonly number[], q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]

/** `x` to `digits` decimals, as a number (for JSON). */
export const rounded = (x: number, digits: number): number => Number(x.toFixed(digits))

/** How many times the floor a figure is (3 decimals); `null` when there is no floor to judge by. */
export const ratioTo = (figure: number, floor: number | null | undefined): number | null =>
  floor === null || floor === undefined || !(floor > 0) ? null : rounded(figure / floor, 3)
