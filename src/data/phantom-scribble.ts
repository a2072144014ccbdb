/**
 * Scribbles on a phantom slice, drawn the way the ACDC and MSCMR annotators drew theirs: a
 * closed, wobbly background loop (class 0) around the whole heart, and one short stroke of
 * 1-3 pixels inside each structure: an arc along the middle of the myocardium, a line
 * through the LV blood pool, a curve along the middle of the RV crescent. A stroke stays
 * inside its structure (pixels that would cross a boundary are left out, as an annotator
 * keeps inside the lines); everything else is 4, unlabelled.
 *
 * @example
 * drawScribbles(rng, heart, label, scribble, nx, ny, [1.5, 1.5, 8]) // fills `scribble`
 */
import type { Rng } from '../util/rng.ts'
import type { Vec3 } from '../volume/volume.ts'
import { CARDIAC_UNLABELLED } from './dataset.ts'
import { between, fromHeart, type HeartSlice } from './phantom-heart.ts'

const LOOP_MARGIN_MM = [4, 9] as const
const LOOP_WOBBLE_MM = 4
const MAX_BRUSH = 3
/**
 * Pixels a stroke needs around its centre line to stay clear of a boundary: a brush reaches
 * one pixel from its centre, rounding to the grid adds up to 0.71, plus a safety margin.
 */
const CLEAR_PX = 2.5

/**
 * How far (mm) beyond the farthest heart pixel the background loop may reach: the generator
 * keeps this much room around the heart so that the loop closes inside the image.
 */
export const loopClearance = (spacing: Vec3): number => {
  const pixel = Math.max(spacing[0], spacing[1])
  return Math.max(LOOP_MARGIN_MM[1], CLEAR_PX * pixel) + LOOP_WOBBLE_MM + pixel
}

/** Pixel offsets a brush of width 1, 2 or 3 covers around its centre. */
const BRUSHES: readonly (readonly (readonly [number, number])[])[] = [
  [[0, 0]],
  [
    [0, 0],
    [1, 0],
    [0, 1],
    [1, 1],
  ],
  [
    [0, 0],
    [1, 0],
    [-1, 0],
    [0, 1],
    [0, -1],
  ],
]

interface Canvas {
  readonly label: Uint8Array
  readonly out: Uint8Array
  readonly nx: number
  readonly ny: number
  readonly spacing: Vec3
  readonly brush: readonly (readonly [number, number])[]
}

/**
 * Draws the polyline through image points (mm) with the canvas brush, stepping at most half
 * a pixel so the stroke has no gaps; only pixels whose label is `cls` are marked.
 */
const stroke = (c: Canvas, points: readonly (readonly [number, number])[], cls: number): void => {
  const [sx, sy] = c.spacing
  const stamp = (x: number, y: number) => {
    const i0 = Math.round(x / sx)
    const j0 = Math.round(y / sy)
    for (const [di, dj] of c.brush) {
      const i = i0 + di
      const j = j0 + dj
      if (i < 0 || j < 0 || i >= c.nx || j >= c.ny) continue
      const p = j * c.nx + i
      if (c.label[p] === cls) c.out[p] = cls
    }
  }
  for (let k = 1; k < points.length; k++) {
    const [x0, y0] = points[k - 1]
    const [x1, y1] = points[k]
    const steps = Math.max(
      1,
      Math.ceil(2 * Math.max(Math.abs(x1 - x0) / sx, Math.abs(y1 - y0) / sy)),
    )
    for (let s = 0; s <= steps; s++)
      stamp(x0 + ((x1 - x0) * s) / steps, y0 + ((y1 - y0) * s) / steps)
  }
}

/** `count + 1` parameter values from `a` to `b`. */
const range = (a: number, b: number, count: number): number[] =>
  Array.from({ length: count + 1 }, (_, k) => a + ((b - a) * k) / count)

/** The loop: a star-shaped closed curve a margin beyond the farthest heart pixel. */
const backgroundLoop = (rng: Rng, c: Canvas, h: HeartSlice): void => {
  const [sx, sy] = c.spacing
  let farthest = 0
  for (let j = 0; j < c.ny; j++)
    for (let i = 0; i < c.nx; i++)
      if (c.label[j * c.nx + i] > 0)
        farthest = Math.max(farthest, (i * sx - h.cx) ** 2 + (j * sy - h.cy) ** 2)
  const reach = Math.sqrt(farthest)
  const pixel = Math.max(sx, sy)
  const margin = Math.max(between(rng, LOOP_MARGIN_MM[0], LOOP_MARGIN_MM[1]), CLEAR_PX * pixel)
  const [w2, w3] = [between(rng, 0, 0.6), between(rng, 0, 0.4)].map((a) => a * LOOP_WOBBLE_MM)
  const [p2, p3] = [between(rng, 0, 2 * Math.PI), between(rng, 0, 2 * Math.PI)]
  const radius = (a: number) =>
    reach + margin + (w2 * (1 + Math.sin(2 * a + p2))) / 2 + (w3 * (1 + Math.sin(3 * a + p3))) / 2
  const start = between(rng, 0, 2 * Math.PI)
  const steps = Math.ceil(
    (2 * Math.PI * (reach + margin + LOOP_WOBBLE_MM)) / (0.5 * Math.min(sx, sy)),
  )
  const loop = range(start, start + 2 * Math.PI, steps).map(
    (a) => [h.cx + radius(a) * Math.cos(a), h.cy + radius(a) * Math.sin(a)] as const,
  )
  stroke(c, loop, 0)
}

/** An arc along the middle of the myocardial ring, over half to most of its circumference. */
const myocardiumArc = (rng: Rng, c: Canvas, h: HeartSlice): void => {
  const start = between(rng, 0, 2 * Math.PI)
  const span = between(rng, 0.6, 0.95) * 2 * Math.PI
  const wobble = between(rng, 0, 0.2) * h.myo
  const phase = between(rng, 0, 2 * Math.PI)
  const arc = range(start, start + span, 180).map((a) => {
    const off = 0.5 * h.myo + wobble * Math.sin(3 * a + phase)
    return fromHeart(h, (h.rx + off) * Math.cos(a), (h.ry + off) * Math.sin(a))
  })
  stroke(c, arc, 2)
}

/** A short, slightly bent line through the LV blood pool. */
const lvLine = (rng: Rng, c: Canvas, h: HeartSlice): void => {
  const half = between(rng, 0.5, 0.8) * Math.min(h.rx, h.ry)
  const dir = between(rng, 0, Math.PI)
  const bend = between(rng, -0.3, 0.3) * half
  const [du, dv] = [Math.cos(dir), Math.sin(dir)]
  const line = range(-half, half, 24).map((s) => {
    const off = bend * (1 - (s / half) ** 2)
    return fromHeart(h, s * du - off * dv, s * dv + off * du)
  })
  stroke(c, line, 3)
}

/**
 * A curve along the middle of the RV crescent: along rays from the LV centre, halfway between
 * the epicardium and the RV's outer wall, over the part of the crescent thick enough to draw in.
 */
const rvCurve = (rng: Rng, c: Canvas, h: HeartSlice): void => {
  if (h.rv === undefined) return
  const { d, a, b } = h.rv
  const ex = h.rx + h.myo
  const ey = h.ry + h.myo
  const minThickness = 1.5 * CLEAR_PX * Math.max(c.spacing[0], c.spacing[1])
  const middle: { angle: number; r: number }[] = []
  for (const angle of range(Math.PI / 2, (3 * Math.PI) / 2, 180)) {
    const [ux, uy] = [Math.cos(angle), Math.sin(angle)]
    const inner = 1 / Math.hypot(ux / ex, uy / ey)
    // Where the ray r * (ux, uy) leaves the RV ellipse ((u + d) / a)^2 + (v / b)^2 = 1.
    const qa = (ux / a) ** 2 + (uy / b) ** 2
    const qb = (2 * d * ux) / a ** 2
    const qc = (d / a) ** 2 - 1
    const disc = qb * qb - 4 * qa * qc
    if (disc < 0) continue
    const outer = (-qb + Math.sqrt(disc)) / (2 * qa)
    if (outer - inner >= minThickness) middle.push({ angle, r: 0.5 * (inner + outer) })
  }
  if (middle.length < 2) return
  const keep = between(rng, 0.5, 0.85)
  const first = Math.floor(between(rng, 0, 1 - keep) * middle.length)
  const curve = middle
    .slice(first, first + Math.max(2, Math.round(keep * middle.length)))
    .map(({ angle, r }) => fromHeart(h, r * Math.cos(angle), r * Math.sin(angle)))
  stroke(c, curve, 1)
}

/** Fills `out` with this slice's scribbles (0-3) and 4 elsewhere. */
export const drawScribbles = (
  rng: Rng,
  h: HeartSlice,
  label: Uint8Array,
  out: Uint8Array,
  nx: number,
  ny: number,
  spacing: Vec3,
): void => {
  out.fill(CARDIAC_UNLABELLED)
  const canvas: Canvas = { label, out, nx, ny, spacing, brush: BRUSHES[rng.int(MAX_BRUSH)] }
  backgroundLoop(rng, canvas, h)
  myocardiumArc(rng, canvas, h)
  lvLine(rng, canvas, h)
  rvCurve(rng, canvas, h)
}
