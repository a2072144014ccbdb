/**
 * Scribble shrink (MaCo paper, appendix): thin out the supervision of a slice to study how
 * the method degrades with fewer scribble pixels, the way an annotator who drew fewer
 * strokes would, not by deleting random pixels.
 *
 * A component is an 8-connected set of pixels of one class. Two scopes:
 * - `slice` (the paper's procedure, the default): the budget is round(ratio x all scribble
 *   pixels of the slice); components are visited in a seeded random order and removed whole
 *   while they fit in what is left of the budget; the first one that does not fit loses
 *   exactly the rest, and the others are kept untouched.
 * - `component`: every component loses round(ratio x its size) pixels, so each stroke
 *   survives (shorter) unless the ratio is 1.
 * A partly removed component keeps a contiguous run: the first pixels in breadth-first
 * order from one of its ends (the pixel farthest, along the stroke, from a seeded random
 * pixel). Every kept pixel's BFS parent is kept too, so the run stays one 8-connected piece.
 *
 * @example
 * const fewer = shrinkScribble(scribble, 256, 256, { ratio: 0.3 }, seeded(1, 'shrink', case, z))
 */
import type { Rng } from '../util/rng.ts'
import type { VoxelArray } from '../volume/volume.ts'

export type ShrinkScope = 'slice' | 'component'

export interface ShrinkOptions {
  /** Fraction of scribble pixels to remove, in [0, 1]. */
  readonly ratio: number
  /** The scribble value that means "not labelled" (4 in ACDC). */
  readonly unlabelled?: number
  readonly scope?: ShrinkScope
}

const NEIGHBOURS = [
  [-1, -1],
  [0, -1],
  [1, -1],
  [-1, 0],
  [1, 0],
  [-1, 1],
  [0, 1],
  [1, 1],
] as const

/**
 * Breadth-first order of the pixels reachable from `start` through 8-neighbours with
 * `member(index)` true; `seen` (one stamp per pixel) is updated so components are found once.
 */
const bfs = (
  start: number,
  w: number,
  h: number,
  member: (i: number) => boolean,
  seen: Int32Array,
  stamp: number,
): Int32Array => {
  const order: number[] = [start]
  seen[start] = stamp
  for (let head = 0; head < order.length; head++) {
    const i = order[head]
    const x = i % w
    const y = (i - x) / w
    for (const [dx, dy] of NEIGHBOURS) {
      const nx = x + dx
      const ny = y + dy
      if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue
      const j = ny * w + nx
      if (seen[j] !== stamp && member(j)) {
        seen[j] = stamp
        order.push(j)
      }
    }
  }
  return Int32Array.from(order)
}

/** The 8-connected components of each labelled class, each as its pixel indices. */
export const scribbleComponents = (
  scribble: ArrayLike<number>,
  w: number,
  h: number,
  unlabelled = 4,
): Int32Array[] => {
  const seen = new Int32Array(w * h)
  const components: Int32Array[] = []
  for (let i = 0; i < w * h; i++) {
    const label = scribble[i]
    if (label === unlabelled || seen[i] !== 0) continue
    components.push(bfs(i, w, h, (j) => scribble[j] === label, seen, 1))
  }
  return components
}

/** The first `keep` pixels of a component in BFS order from one of its ends: a connected run. */
const contiguousRun = (
  component: Int32Array,
  keep: number,
  w: number,
  h: number,
  rng: Rng,
): Int32Array => {
  const inComponent = new Uint8Array(w * h)
  for (const i of component) inComponent[i] = 1
  const member = (j: number) => inComponent[j] === 1
  const seen = new Int32Array(w * h)
  const fromRandom = bfs(component[rng.int(component.length)], w, h, member, seen, 1)
  const end = fromRandom[fromRandom.length - 1]
  return bfs(end, w, h, member, seen, 2).subarray(0, keep)
}

/**
 * A copy of a w x h scribble (x fastest) with `ratio` of its pixels set to `unlabelled`,
 * component by component (see the module comment for the two scopes). Never adds pixels or
 * changes a class.
 */
export const shrinkScribble = <A extends VoxelArray>(
  scribble: A,
  w: number,
  h: number,
  options: ShrinkOptions,
  rng: Rng,
): A => {
  const { ratio, unlabelled = 4, scope = 'slice' } = options
  if (!(ratio >= 0 && ratio <= 1))
    throw new RangeError(`shrink ratio must be in [0, 1], got ${ratio}`)
  if (scribble.length !== w * h)
    throw new RangeError(`scribble has ${scribble.length} pixels, expected ${w} x ${h}`)
  const out = scribble.slice() as A
  const components = scribbleComponents(scribble, w, h, unlabelled)
  const shrink = (component: Int32Array, remove: number) => {
    if (remove === 0) return
    const keep = component.length - remove
    const kept = keep > 0 ? contiguousRun(component, keep, w, h, rng) : component.subarray(0, 0)
    for (const i of component) out[i] = unlabelled
    for (const i of kept) out[i] = scribble[i]
  }
  if (scope === 'component') {
    for (const c of components) shrink(c, Math.round(ratio * c.length))
    return out
  }
  const total = components.reduce((n, c) => n + c.length, 0)
  let budget = Math.round(ratio * total)
  for (const c of rng.shuffle(components)) {
    if (budget === 0) break
    const remove = Math.min(budget, c.length)
    shrink(c, remove)
    budget -= remove
  }
  return out
}
