/**
 * The training plot of a run folder (`plot.svg`): the loss against the step (logged steps
 * and epoch means) on the left, the validation Dice against the epoch on the right (left out
 * when no epoch was scored: a run without validation volumes). Plain SVG written by code, so
 * any browser shows it and nothing needs installing.
 *
 * @example
 * const svg = trainingPlot({ steps: [{ step: 10, loss: 1.2 }], epochs: [{ epoch: 1, step: 20, loss: 1.1, valDice: 0.4 }] })
 * await writeFileAtomic('run/plot.svg', svg)
 */

export interface PlotHistory {
  readonly steps: readonly { readonly step: number; readonly loss: number }[]
  readonly epochs: readonly {
    readonly epoch: number
    readonly step: number
    readonly loss: number
    /** Absent when the epoch was not validated. */
    readonly valDice?: number
  }[]
}

const PANEL = { width: 380, height: 240, left: 52, right: 14, top: 30, bottom: 40 }

interface Axis {
  readonly min: number
  readonly max: number
  readonly ticks: readonly number[]
}

/** Ticks at 1, 2 or 5 times a power of ten, about five of them, covering [lo, hi]. */
export const niceAxis = (lo: number, hi: number): Axis => {
  if (!(hi > lo)) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1
    return niceAxis(lo - pad, hi + pad)
  }
  const raw = (hi - lo) / 5
  const power = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power
  const min = Math.floor(lo / step) * step
  const max = Math.ceil(hi / step) * step
  const ticks: number[] = []
  for (let v = min; v <= max + step / 2; v += step) ticks.push(Number(v.toPrecision(12)))
  return { min, max, ticks }
}

const label = (v: number): string => (Math.abs(v) >= 1e4 ? v.toExponential(0) : String(v))

const escape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')

/** One panel with axes, ticks and a polyline per series, at horizontal offset `dx`. */
const panel = (
  dx: number,
  title: string,
  xName: string,
  x: Axis,
  y: Axis,
  series: readonly {
    readonly points: readonly (readonly [number, number])[]
    readonly colour: string
    readonly name: string
  }[],
): string => {
  const { width, height, left, right, top, bottom } = PANEL
  const w = width - left - right
  const h = height - top - bottom
  const px = (v: number) => dx + left + ((v - x.min) / (x.max - x.min)) * w
  const py = (v: number) => top + h - ((v - y.min) / (y.max - y.min)) * h
  const f = (v: number) => v.toFixed(1)
  const parts = [
    `<text x="${f(dx + left)}" y="18" font-weight="bold">${escape(title)}</text>`,
    `<rect x="${f(dx + left)}" y="${top}" width="${w}" height="${h}" fill="none" stroke="#888"/>`,
    ...y.ticks.map(
      (v) =>
        `<line x1="${f(dx + left - 4)}" y1="${f(py(v))}" x2="${f(dx + left)}" y2="${f(py(v))}" stroke="#888"/>` +
        `<text x="${f(dx + left - 6)}" y="${f(py(v) + 4)}" text-anchor="end">${label(v)}</text>`,
    ),
    ...x.ticks.map(
      (v) =>
        `<line x1="${f(px(v))}" y1="${top + h}" x2="${f(px(v))}" y2="${top + h + 4}" stroke="#888"/>` +
        `<text x="${f(px(v))}" y="${top + h + 16}" text-anchor="middle">${label(v)}</text>`,
    ),
    `<text x="${f(dx + left + w / 2)}" y="${height - 6}" text-anchor="middle">${escape(xName)}</text>`,
    ...series.flatMap((s, i) => [
      s.points.length === 1
        ? `<circle cx="${f(px(s.points[0][0]))}" cy="${f(py(s.points[0][1]))}" r="3" fill="${s.colour}"/>`
        : `<polyline fill="none" stroke="${s.colour}" stroke-width="1.5" points="${s.points.map(([a, b]) => `${f(px(a))},${f(py(b))}`).join(' ')}"/>`,
      `<text x="${f(dx + left + w - 4)}" y="${top + 14 + 14 * i}" text-anchor="end" fill="${s.colour}">${escape(s.name)}</text>`,
    ]),
  ]
  return parts.join('\n')
}

const range = (values: readonly number[]): [number, number] =>
  values.length === 0 ? [0, 1] : [Math.min(...values), Math.max(...values)]

/** The two-panel SVG of a run's history (one panel when nothing was scored); an empty history gives empty axes. */
export const trainingPlot = (h: PlotHistory): string => {
  const finite = <T extends { readonly loss: number }>(xs: readonly T[]) =>
    xs.filter((p) => Number.isFinite(p.loss))
  const steps = finite(h.steps)
  const epochs = finite(h.epochs)
  const [sLo, sHi] = range([...steps.map((p) => p.step), ...epochs.map((e) => e.step)])
  const [lLo, lHi] = range([...steps.map((p) => p.loss), ...epochs.map((e) => e.loss)])
  const scored = h.epochs.flatMap((e) =>
    e.valDice === undefined ? [] : [[e.epoch, e.valDice] as const],
  )
  const [eLo, eHi] = range(scored.map(([epoch]) => epoch))
  const loss = panel(
    0,
    'Training loss',
    'step',
    niceAxis(Math.min(0, sLo), sHi),
    niceAxis(Math.min(0, lLo), lHi),
    [
      { points: steps.map((p) => [p.step, p.loss]), colour: '#9ab', name: 'logged steps' },
      { points: epochs.map((e) => [e.step, e.loss]), colour: '#c33', name: 'epoch mean' },
    ],
  )
  const dice =
    h.epochs.length > 0 && scored.length === 0
      ? undefined
      : panel(
          PANEL.width,
          'Validation Dice (mean foreground)',
          'epoch',
          niceAxis(Math.min(0, eLo), eHi),
          { min: 0, max: 1, ticks: [0, 0.2, 0.4, 0.6, 0.8, 1] },
          [{ points: scored, colour: '#36c', name: 'val Dice' }],
        )
  const width = (dice === undefined ? 1 : 2) * PANEL.width
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${PANEL.height}" viewBox="0 0 ${width} ${PANEL.height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${PANEL.height}" fill="white"/>`,
    loss,
    ...(dice === undefined ? [] : [dice]),
    '</svg>',
    '',
  ].join('\n')
}
