/**
 * Prediction figures for reports: one RGBA picture with a row per slice and a column per
 * layer: the image alone (grey, windowed to its 1st-99th percentile), then the image with
 * each overlay drawn over it: scribble strokes (every class, background included, opaque; the
 * unlabelled value left out) or label masks (foreground classes, half transparent). A reader
 * compares the columns of a row, so every panel has the same size and the same window.
 *
 * Panels show x to the right and y down, in voxel order (no reorientation to the scanner's
 * axes), stretched along the coarser in-plane axis so that a millimetre is as long across
 * as down, and upscaled by an integer nearest-neighbour factor so that small images are not
 * stamps. Optional captions (column headers, slice numbers, a title) use a built-in 5 x 7
 * bitmap font, upper case only, so nothing needs installing.
 *
 * @example
 * const f = figure({
 *   image,
 *   overlays: [
 *     { title: 'scribble', kind: 'strokes', volume: scribble },
 *     { title: 'ground truth', kind: 'mask', volume: label },
 *     { title: 'MaCo', kind: 'mask', volume: prediction },
 *   ],
 *   slices: 'auto',
 * }) // Right({ width, height, rgba, slices, panels })
 */
import * as E from 'fp-ts/lib/Either.js'
import { planeSampler, type AxisMap } from '../volume/resample.ts'
import { sliceOf } from '../volume/slice.ts'
import { realValues, spatialDims, type Volume } from '../volume/volume.ts'
import { percentile } from './metrics.ts'

export type Rgb = readonly [number, number, number]

/**
 * Colour per class value: 0 background (yellow; drawn for scribble strokes only, since a
 * mask's background is the image itself), 1 RV red, 2 MYO green, 3 LV blue, then a few more
 * for datasets with more classes (used in turn past the end).
 */
export const CLASS_COLOURS: readonly Rgb[] = [
  [255, 215, 0],
  [230, 50, 50],
  [40, 200, 60],
  [40, 110, 255],
  [220, 60, 220],
  [0, 210, 210],
  [255, 140, 0],
]

/** A layer drawn over the image: a scribble volume or a label map (ground truth, prediction). */
export interface Overlay {
  /** Column header. */
  readonly title: string
  /** 'strokes': every class drawn, `unlabelled` transparent; 'mask': class 0 transparent. */
  readonly kind: 'strokes' | 'mask'
  readonly volume: Volume
  /** Where it came from (a file name), to name it in errors; the title otherwise. */
  readonly source?: string
}

export interface FigureOptions {
  /** Scribble value of unannotated pixels. */
  readonly unlabelled: number
  /** Panels are upscaled by an integer factor until at least this tall. */
  readonly minPanelHeight: number
  /** Weight of the class colour over the image in a mask overlay. */
  readonly maskOpacity: number
  /** Weight of the class colour over the image in a scribble overlay. */
  readonly strokeOpacity: number
  /** Pixels between panels and around the figure. */
  readonly gap: number
  /** Column headers and slice numbers. */
  readonly captions: boolean
  /** A line of text above everything. */
  readonly title?: string
}

export const DEFAULT_FIGURE: FigureOptions = {
  unlabelled: 4,
  minPanelHeight: 200,
  maskOpacity: 0.4,
  strokeOpacity: 1,
  gap: 4,
  captions: true,
}

/** Refuse to allocate a picture larger than this (a wild spacing ratio would ask for one). */
export const MAX_FIGURE_PIXELS = 64 * 2 ** 20

export interface PanelPlacement {
  readonly row: number
  readonly column: number
  /** The slice (z index) the panel shows. */
  readonly slice: number
  /** Top-left corner in the figure, and size, in pixels. */
  readonly x: number
  readonly y: number
  readonly width: number
  readonly height: number
}

export interface Figure {
  readonly width: number
  readonly height: number
  /** width * height * 4 bytes, RGBA, rows top to bottom, opaque. */
  readonly rgba: Uint8Array
  /** The slices shown, one per row, top to bottom. */
  readonly slices: readonly number[]
  /** The intensity window: real values at or below `[0]` are black, at or above `[1]` white. */
  readonly window: readonly [number, number]
  readonly panels: readonly PanelPlacement[]
}

export interface FigureInput {
  readonly image: Volume
  readonly overlays: readonly Overlay[]
  /** z indices, or 'auto' (see `autoSlices`). */
  readonly slices: readonly number[] | 'auto'
  readonly options?: Partial<FigureOptions>
}

/** The 1st and 99th percentiles of the finite real intensities ([0, 1] when there are none). */
export const intensityWindow = (image: Pick<Volume, 'data' | 'scaling'>): [number, number] => {
  const finite = realValues(image).filter(Number.isFinite).sort()
  return finite.length === 0 ? [0, 1] : [percentile(finite, 1), percentile(finite, 99)]
}

/** Slices (z indices, ascending) holding at least one voxel whose real value passes `keep`. */
export const slicesWhere = (v: Volume, keep: (value: number) => boolean): number[] => {
  const [, , nz] = spatialDims(v)
  return Array.from({ length: nz }, (_, z) => z).filter((z) => sliceOf(v, z).data.some(keep))
}

/**
 * Up to `count` of `candidates` spread evenly: the middle of each of `count` equal parts (for
 * three: near the base, the middle and near the apex of a short-axis stack).
 */
export const spreadSlices = (candidates: readonly number[], count = 3): number[] => {
  const n = candidates.length
  const picked = Array.from(
    { length: Math.min(count, n) },
    (_, i) => candidates[Math.round(((n - 1) * (2 * i + 1)) / (2 * count))],
  )
  return [...new Set(picked)]
}

/**
 * Three slices spread through the heart: over the slices where the label has any foreground;
 * without a label (or an empty one), where the scribble has a foreground stroke; without
 * either, over the whole stack.
 */
export const autoSlices = (
  image: Volume,
  guides: { readonly label?: Volume; readonly scribble?: Volume; readonly unlabelled: number },
): number[] => {
  const fromLabel = guides.label ? slicesWhere(guides.label, (v) => v !== 0) : []
  const heart =
    fromLabel.length > 0
      ? fromLabel
      : guides.scribble
        ? slicesWhere(guides.scribble, (v) => v !== 0 && v !== guides.unlabelled)
        : []
  const all = Array.from({ length: spatialDims(image)[2] }, (_, z) => z)
  return spreadSlices(heart.length > 0 ? heart : all)
}

/**
 * Panel size for an nx x ny slice of the given spacing: the finer axis keeps one pixel per
 * voxel, the coarser one is stretched to the same millimetres per pixel, then both are scaled
 * by the smallest integer that makes the panel at least `minHeight` tall.
 */
export const panelSize = (
  nx: number,
  ny: number,
  spacing: readonly [number, number],
  minHeight: number,
): { width: number; height: number } => {
  const [sx, sy] = spacing.map((s) => (s > 0 && Number.isFinite(s) ? s : 1))
  const finest = Math.min(sx, sy)
  const w = Math.max(1, Math.round((nx * sx) / finest))
  const h = Math.max(1, Math.round((ny * sy) / finest))
  const factor = Math.max(1, Math.ceil(minHeight / h))
  return { width: w * factor, height: h * factor }
}

// A 5 x 7 bitmap font: per glyph, seven rows of five bits (the high bit is the left column).
const GLYPHS: Record<string, string> = {
  ' ': '00000000000000',
  '0': '0e11131519110e',
  '1': '040c040404040e',
  '2': '0e11010204081f',
  '3': '1f02040201110e',
  '4': '02060a121f0202',
  '5': '1f101e0101110e',
  '6': '0608101e11110e',
  '7': '1f010204080808',
  '8': '0e11110e11110e',
  '9': '0e11110f01020c',
  A: '0e1111111f1111',
  B: '1e11111e11111e',
  C: '0e11101010110e',
  D: '1c12111111121c',
  E: '1f10101e10101f',
  F: '1f10101e101010',
  G: '0e11101711110f',
  H: '1111111f111111',
  I: '0e04040404040e',
  J: '0702020202120c',
  K: '11121418141211',
  L: '1010101010101f',
  M: '111b1515111111',
  N: '11111915131111',
  O: '0e11111111110e',
  P: '1e11111e101010',
  Q: '0e11111115120d',
  R: '1e11111e141211',
  S: '0f10100e01011e',
  T: '1f040404040404',
  U: '1111111111110e',
  V: '11111111110a04',
  W: '1111111515150a',
  X: '11110a040a1111',
  Y: '1111110a040404',
  Z: '1f01020408101f',
  '-': '0000001f000000',
  _: '0000000000001f',
  '.': '00000000000c0c',
  ',': '000000000c0408',
  ':': '000c0c000c0c00',
  '=': '00001f001f0000',
  '(': '02040808080402',
  ')': '08040202020408',
  '/': '00010204081000',
  '+': '0004041f040400',
  '%': '18190204081303',
  '?': '0e110102040004',
  "'": '0c040800000000',
  '#': '0a0a1f0a1f0a0a',
}

const GLYPH_ROWS = 7
/** Five columns of glyph plus one of space. */
const ADVANCE = 6
const HEADER_SCALE = 2
const TITLE_SCALE = 3

const glyphOf = (c: string): string => GLYPHS[c.toUpperCase()] ?? GLYPHS['?']

/** Width in pixels of `text` at `scale` (no trailing space). */
const textWidth = (text: string, scale: number): number =>
  text.length === 0 ? 0 : (text.length * ADVANCE - 1) * scale

/** As much of `text` as fits in `width` pixels at `scale`. */
const fitText = (text: string, width: number, scale: number): string =>
  text.slice(0, Math.max(0, Math.floor((width / scale + 1) / ADVANCE)))

interface Canvas {
  readonly width: number
  readonly height: number
  readonly rgba: Uint8Array
}

const put = (c: Canvas, x: number, y: number, [r, g, b]: Rgb): void => {
  const i = (y * c.width + x) * 4
  c.rgba[i] = r
  c.rgba[i + 1] = g
  c.rgba[i + 2] = b
}

const BLACK: Rgb = [0, 0, 0]

/** Draws `text` in black with its top-left corner at (x, y), clipped to the canvas. */
const drawText = (c: Canvas, text: string, x: number, y: number, scale: number): void => {
  ;[...text].forEach((ch, k) => {
    const glyph = glyphOf(ch)
    for (let row = 0; row < GLYPH_ROWS; row++) {
      const bits = parseInt(glyph.slice(2 * row, 2 * row + 2), 16)
      for (let col = 0; col < 5; col++) {
        if (!(bits & (0x10 >> col))) continue
        for (let dy = 0; dy < scale; dy++)
          for (let dx = 0; dx < scale; dx++) {
            const px = x + (k * ADVANCE + col) * scale + dx
            const py = y + row * scale + dy
            if (px < c.width && py < c.height) put(c, px, py, BLACK)
          }
      }
    }
  })
}

/** Nearest-neighbour axis map of `n` voxels onto `size` pixels, the FOV filled edge to edge. */
const stretch = (n: number, size: number): AxisMap => {
  const step = n / size
  return { origin: step / 2 - 0.5, step, size, source: n }
}

const blend = (grey: number, colour: Rgb, opacity: number): Rgb => [
  Math.round(grey * (1 - opacity) + colour[0] * opacity),
  Math.round(grey * (1 - opacity) + colour[1] * opacity),
  Math.round(grey * (1 - opacity) + colour[2] * opacity),
]

/** [nx, ny, nz] of a 2D or 3D volume (trailing axes of length 1 allowed), else a reason. */
const gridOf = (v: Volume, name: string): E.Either<string, readonly number[]> =>
  v.dims.slice(3).some((n) => n > 1)
    ? E.left(`${name} has dims ${v.dims.join('x')}; a figure needs 2D or 3D volumes`)
    : E.right(spatialDims(v))

const checkInput = (input: FigureInput): E.Either<string, readonly number[]> => {
  const grid = gridOf(input.image, 'the image')
  if (E.isLeft(grid)) return grid
  for (const o of input.overlays) {
    const name = o.source ?? o.title
    const g = gridOf(o.volume, name)
    if (E.isLeft(g)) return g
    if (g.right.some((n, i) => n !== grid.right[i]))
      return E.left(
        `${name} has dims ${g.right.join('x')}, the image ${grid.right.join('x')}; all volumes must share dims`,
      )
  }
  return grid
}

/** Composes the figure; Left with a one-line reason for volumes or slices that do not fit. */
export const figure = (input: FigureInput): E.Either<string, Figure> => {
  const o: FigureOptions = { ...DEFAULT_FIGURE, ...input.options }
  const grid = checkInput(input)
  if (E.isLeft(grid)) return grid
  const [nx, ny, nz] = grid.right
  const slices =
    input.slices === 'auto'
      ? autoSlices(input.image, {
          label: input.overlays.find((l) => l.kind === 'mask')?.volume,
          scribble: input.overlays.find((l) => l.kind === 'strokes')?.volume,
          unlabelled: o.unlabelled,
        })
      : input.slices
  if (slices.length === 0) return E.left('no slices to show')
  const outside = slices.find((z) => !(Number.isInteger(z) && z >= 0 && z < nz))
  if (outside !== undefined)
    return E.left(`slice ${outside} is outside the image's ${nz} slices (0..${nz - 1})`)
  const spacing = input.image.geometry.spacing
  const panel = panelSize(nx, ny, [spacing[0], spacing[1]], o.minPanelHeight)
  const columns = 1 + input.overlays.length
  const g = o.gap
  const rowLabels = slices.map((z) => `z ${z}`)
  const left = o.captions ? g + Math.max(...rowLabels.map((l) => textWidth(l, HEADER_SCALE))) : 0
  const titleBand = o.title !== undefined ? g + GLYPH_ROWS * TITLE_SCALE : 0
  const top = titleBand + (o.captions ? g + GLYPH_ROWS * HEADER_SCALE : 0)
  const width = left + g + columns * (panel.width + g)
  const height = top + g + slices.length * (panel.height + g)
  if (width * height > MAX_FIGURE_PIXELS)
    return E.left(
      `the figure would be ${width} x ${height} pixels, more than ${MAX_FIGURE_PIXELS} allowed (fewer slices or a smaller --min-height)`,
    )
  const canvas: Canvas = { width, height, rgba: new Uint8Array(width * height * 4).fill(255) }
  const [lo, hi] = intensityWindow(input.image)
  const range = hi > lo ? hi - lo : 1
  const sample = planeSampler(
    stretch(nx, panel.width),
    stretch(ny, panel.height),
    'nearest',
    'edge',
  )
  const onPanel = (v: Volume, z: number): Float32Array => {
    const out = new Float32Array(panel.width * panel.height)
    sample(sliceOf(v, z).data, 0, out, 0)
    return out
  }
  const panels: PanelPlacement[] = []
  slices.forEach((z, row) => {
    const y0 = top + g + row * (panel.height + g)
    const image = onPanel(input.image, z)
    const grey = image.map((v) =>
      Number.isFinite(v) ? Math.min(255, Math.max(0, Math.round((255 * (v - lo)) / range))) : 0,
    )
    const layers: (Overlay | undefined)[] = [undefined, ...input.overlays]
    layers.forEach((layer, column) => {
      const x0 = left + g + column * (panel.width + g)
      const values = layer && onPanel(layer.volume, z)
      const opacity = layer?.kind === 'strokes' ? o.strokeOpacity : o.maskOpacity
      const transparent = layer?.kind === 'strokes' ? o.unlabelled : 0
      for (let v = 0; v < panel.height; v++)
        for (let u = 0; u < panel.width; u++) {
          const i = v * panel.width + u
          const c = values ? Math.round(values[i]) : transparent
          const shade = grey[i]
          put(
            canvas,
            x0 + u,
            y0 + v,
            c === transparent || !(c >= 0)
              ? [shade, shade, shade]
              : blend(shade, CLASS_COLOURS[c % CLASS_COLOURS.length], opacity),
          )
        }
      panels.push({ row, column, slice: z, x: x0, y: y0, ...panel })
    })
    if (o.captions)
      drawText(
        canvas,
        rowLabels[row],
        g,
        y0 + Math.floor((panel.height - GLYPH_ROWS * HEADER_SCALE) / 2),
        HEADER_SCALE,
      )
  })
  if (o.captions)
    ['image', ...input.overlays.map((l) => l.title)].forEach((title, column) =>
      drawText(
        canvas,
        fitText(title, panel.width, HEADER_SCALE),
        left + g + column * (panel.width + g),
        titleBand + g,
        HEADER_SCALE,
      ),
    )
  if (o.title !== undefined)
    drawText(canvas, fitText(o.title, width - 2 * g, TITLE_SCALE), g, g, TITLE_SCALE)
  return E.right({ width, height, rgba: canvas.rgba, slices, window: [lo, hi], panels })
}
