/**
 * The short table `maco bench` prints without `--json`: one row per measured figure, next
 * to the floor it is judged against and how many times that floor it is.
 *
 * @example
 * table([{ bench: 'cpl', setting: '256 px, 4 classes', result: '4.1 ms/slice',
 *          floor: "5.9 ms (scipy's EDT, measured once)", ratio: 0.69 }])
 * // bench  setting            result        floor                                x floor
 * // cpl    256 px, 4 classes  4.1 ms/slice  5.9 ms (scipy's EDT, measured once)     0.69
 */

export interface Row {
  readonly bench: string
  readonly setting: string
  readonly result: string
  /** What the figure is judged against, in words with its value. */
  readonly floor: string
  /** result / floor; `null` when there is none (printed as '-'). */
  readonly ratio: number | null
}

export const table = (rows: readonly Row[]): string => {
  const cells = [
    ['bench', 'setting', 'result', 'floor', 'x floor'],
    ...rows.map((r) => [
      r.bench,
      r.setting,
      r.result,
      r.floor,
      r.ratio === null ? '-' : r.ratio.toFixed(2),
    ]),
  ]
  const widths = cells[0].map((_, c) => Math.max(...cells.map((row) => row[c].length)))
  return cells
    .map((row) =>
      row
        .map((cell, c) =>
          c === row.length - 1 ? cell.padStart(widths[c]) : cell.padEnd(widths[c]),
        )
        .join('  '),
    )
    .join('\n')
    .concat('\n')
}
