/**
 * The global-category (GC) region: in ACDC and MSCMR the background scribble (class 0) is a
 * loop drawn around the heart, so every target lies inside its filled convex hull. MaCo uses
 * that hull to clean up the prediction (`enhancedPrediction`, P_e): foreground outside the
 * hull is moved to background.
 *
 * Pixel (x, y) has its centre at (x, y); a pixel belongs to the region when its centre lies
 * inside or on the hull. The hull vertices are pixel centres, so every edge crossing of a row
 * is a rational with a small denominator and the inside test below is exact.
 *
 * @example
 * const gc = gcRegion(scribble, 256, 256) // Uint8Array, 1 inside the class-0 loop
 * const pe = enhancedPrediction(po, gc, 4) // Float64Array, po and pe pixel-major [B, H, W, 4]
 */
export type Point = readonly [number, number]

const cross = (o: Point, a: Point, b: Point): number =>
  (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

/**
 * Convex hull of integer points (Andrew's monotone chain), counter-clockwise in (x, y) with
 * collinear points dropped; fewer than 3 vertices when the points are collinear.
 */
export const convexHull = (points: readonly Point[]): Point[] => {
  const sorted = [...points].sort((p, q) => p[0] - q[0] || p[1] - q[1])
  if (sorted.length < 3) return sorted
  const half = (pts: readonly Point[]): Point[] => {
    const chain: Point[] = []
    for (const p of pts) {
      while (chain.length >= 2 && cross(chain[chain.length - 2], chain[chain.length - 1], p) <= 0)
        chain.pop()
      chain.push(p)
    }
    chain.pop() // the last point starts the other half
    return chain
  }
  return [...half(sorted), ...half([...sorted].reverse())]
}

/**
 * Fills a convex polygon (vertices as from `convexHull`, at least 3) on a w x h grid: for
 * each row, the span between the leftmost and rightmost edge crossings, ends included.
 */
export const fillConvexPolygon = (hull: readonly Point[], w: number, h: number): Uint8Array => {
  const region = new Uint8Array(w * h)
  const ys = hull.map((p) => p[1])
  const top = Math.max(0, Math.min(...ys))
  const bottom = Math.min(h - 1, Math.max(...ys))
  for (let y = top; y <= bottom; y++) {
    let left = Infinity
    let right = -Infinity
    for (let i = 0; i < hull.length; i++) {
      const [x0, y0] = hull[i]
      const [x1, y1] = hull[(i + 1) % hull.length]
      if (y < Math.min(y0, y1) || y > Math.max(y0, y1)) continue
      // A horizontal edge contributes both ends; otherwise the crossing x, an exact
      // integer quotient or a non-integer far (>= 1/|dy|) from any integer, so floor and
      // ceil below are exact.
      const xs = y0 === y1 ? [x0, x1] : [(x0 * (y1 - y0) + (y - y0) * (x1 - x0)) / (y1 - y0)]
      for (const x of xs) {
        left = Math.min(left, x)
        right = Math.max(right, x)
      }
    }
    const from = Math.max(0, Math.ceil(left))
    const to = Math.min(w - 1, Math.floor(right))
    region.fill(1, y * w + from, y * w + to + 1)
  }
  return region
}

/**
 * The GC region of a w x h slice (x fastest): the filled convex hull of the pixels whose
 * scribble value is `background` (class 0 by default). All ones when there are fewer than 3
 * non-collinear such pixels: no usable loop means no constraint.
 */
export const gcRegion = (
  scribble: ArrayLike<number>,
  w: number,
  h: number,
  background = 0,
): Uint8Array => {
  if (scribble.length !== w * h)
    throw new RangeError(`scribble has ${scribble.length} pixels, expected ${w} x ${h}`)
  const points: Point[] = []
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) if (scribble[y * w + x] === background) points.push([x, y])
  const hull = convexHull(points)
  return hull.length < 3 ? new Uint8Array(w * h).fill(1) : fillConvexPolygon(hull, w, h)
}

/**
 * P_e: the class probabilities P_o (pixel-major, `classes` per pixel, channel 0 background)
 * with the foreground channels multiplied by the GC region (0/1 per pixel) and background =
 * 1 - their sum.
 */
export const enhancedPrediction = (
  probabilities: ArrayLike<number>,
  gc: ArrayLike<number>,
  classes: number,
): Float64Array => {
  const pe = new Float64Array(probabilities.length)
  for (let i = 0; i < gc.length; i++) {
    const at = i * classes
    let foreground = 0
    for (let c = 1; c < classes; c++) foreground += pe[at + c] = probabilities[at + c] * gc[i]
    pe[at] = 1 - foreground
  }
  return pe
}
