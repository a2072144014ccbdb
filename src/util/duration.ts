/**
 * Durations as people read them in a log line: seconds with a decimal while short, then
 * minutes and seconds, then hours and minutes. A duration not yet known (no rate measured)
 * is '?'.
 *
 * @example
 * formatSeconds(4.25)  // '4.2s'
 * formatSeconds(222)   // '3m42s'
 * formatSeconds(5400)  // '1h30m'
 */
export const formatSeconds = (s: number): string => {
  if (!Number.isFinite(s)) return '?'
  const tenths = Math.round(s * 10) / 10
  if (tenths < 10) return `${tenths.toFixed(1)}s`
  // Rounded once, to the unit shown: 119.7 s is 2m00s, not 1m60s.
  const whole = Math.round(s)
  if (whole < 60) return `${whole}s`
  if (whole < 3600) return `${Math.floor(whole / 60)}m${pad(whole % 60)}s`
  const minutes = Math.round(s / 60)
  return `${Math.floor(minutes / 60)}h${pad(minutes % 60)}m`
}

const pad = (n: number): string => String(n).padStart(2, '0')
