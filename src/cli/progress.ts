/**
 * Progress for long work: a redrawn bar with rate and ETA on a terminal, plain log lines
 * (at most one every few seconds, plus the last) otherwise, so CI logs stay readable.
 *
 * @example
 * const p = progress({ label: 'preprocess', total: cases.length, io })
 * for (const c of cases) { work(c); p.tick(c.name) }
 * p.done()
 */
import { formatSeconds } from '../util/duration.ts'
import type { CommandIO } from './command.ts'

export interface Progress {
  readonly tick: (note?: string, n?: number) => void
  readonly done: (note?: string) => void
}

export const progress = (p: {
  label: string
  total: number
  io: Pick<CommandIO, 'err' | 'isTTY'>
  /** Minimum seconds between plain log lines. */
  logEvery?: number
  now?: () => number
}): Progress => {
  const now = p.now ?? (() => performance.now() / 1000)
  const start = now()
  let count = 0
  let lastLog = -Infinity
  const line = (note: string | undefined): string => {
    const elapsed = now() - start
    const rate = count / Math.max(elapsed, 1e-9)
    const eta = count > 0 ? (p.total - count) / rate : NaN
    const frac = p.total > 0 ? count / p.total : 1
    const head = `${p.label} ${count}/${p.total} ${(frac * 100).toFixed(0)}%`
    const tail = `${formatSeconds(elapsed)} elapsed, ETA ${formatSeconds(eta)}${note ? ` ${note}` : ''}`
    if (!p.io.isTTY) return `${head} ${tail}\n`
    const width = 24
    const filled = Math.round(frac * width)
    return `\r${head} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${tail}\x1b[K`
  }
  return {
    tick: (note, n = 1) => {
      count += n
      const t = now()
      if (p.io.isTTY) p.io.err(line(note))
      else if (t - lastLog >= (p.logEvery ?? 5) || count >= p.total) {
        lastLog = t
        p.io.err(line(note))
      }
    },
    done: (note) => {
      if (p.io.isTTY) p.io.err(`${line(note)}\n`)
      else if (count < p.total || note) p.io.err(line(note))
    },
  }
}
