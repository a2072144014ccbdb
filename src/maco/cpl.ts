/**
 * Continuous pseudo labels (CPL, DESIGN.md): per slice and class c, the exact Euclidean
 * distance D_c in pixels to the nearest scribble pixel of class c becomes
 * Y_c = exp(-alpha * D_c), kept where it is at least `floor` and 0 beyond; a class without a
 * scribble in the slice is 0 everywhere. Pixels holding the unlabelled value, or any value
 * that is not a class, are not scribbles.
 *
 * Distances are in pixels of the slice given, so squared distances are integers: the
 * exponential is tabulated once per labeller and each pixel is a table look-up.
 *
 * @example
 * const y = continuousPseudoLabels(scribble, 256, 256) // Float32Array, 4 x 256 x 256
 * y[1 * 256 * 256 + 40 * 256 + 30] // class 1 at (x 30, y 40)
 */
import {
  spatialDims,
  withData,
  isIdentityScaling,
  realValues,
  type Volume,
} from '../volume/volume.ts'
import { edtWorkspace, squaredEdtInPlace } from './edt.ts'

export interface CplOptions {
  /** Number of classes, background (0) included: scribble values 0..classes-1. */
  readonly classes: number
  /** Decay per pixel of distance. */
  readonly alpha: number
  /** Values below this are set to 0. */
  readonly floor: number
  /** The scribble value of unannotated pixels. */
  readonly unlabelled: number
}

export const DEFAULT_CPL: CplOptions = { classes: 4, alpha: 0.1, floor: 0.05, unlabelled: 4 }

export type ScribbleSlice = Uint8Array | Float32Array | ArrayLike<number>

/** Checks the options, or says which one is wrong. */
export const cplOptionsProblem = (o: CplOptions): string | undefined =>
  !Number.isInteger(o.classes) || o.classes < 1 || o.classes > 255
    ? `classes must be an integer in 1..255, got ${o.classes}`
    : !(o.alpha >= 0) || !Number.isFinite(o.alpha)
      ? `alpha must be a finite number >= 0, got ${o.alpha}`
      : !(o.floor >= 0 && o.floor <= 1)
        ? `floor must be in [0, 1], got ${o.floor}`
        : !Number.isFinite(o.unlabelled)
          ? `unlabelled must be a number, got ${o.unlabelled}`
          : undefined

/**
 * A CPL function for slices of one size that reuses its buffers across calls (the training
 * loop calls it per image). Writes into `out` when given (length classes x height x width).
 */
export const continuousPseudoLabeller = (
  width: number,
  height: number,
  options: Partial<CplOptions> = {},
): ((scribble: ScribbleSlice, out?: Float32Array) => Float32Array) => {
  const o = { ...DEFAULT_CPL, ...options }
  const problem = cplOptionsProblem(o)
  if (problem) throw new RangeError(problem)
  const n = width * height
  const grid = new Float64Array(n)
  const ws = edtWorkspace(Math.max(width, height))
  // Past the largest squared distance that still reaches the floor (one more against rounding;
  // the table applies the floor itself), capped by the slice diagonal.
  const reach = o.floor > 0 && o.alpha > 0 ? Math.log(1 / o.floor) / o.alpha : Infinity
  const maxSq = Math.min(Math.floor(reach * reach) + 1, (width - 1) ** 2 + (height - 1) ** 2)
  const table = new Float32Array(maxSq + 1)
  for (let s = 0; s <= maxSq; s++) {
    const y = Math.exp(-o.alpha * Math.sqrt(s))
    table[s] = y >= o.floor ? y : 0
  }
  return (scribble, out = new Float32Array(o.classes * n)) => {
    if (scribble.length !== n)
      throw new RangeError(`scribble has ${scribble.length} pixels, expected ${width} x ${height}`)
    if (out.length !== o.classes * n)
      throw new RangeError(`output needs ${o.classes * n} values, got ${out.length}`)
    for (let c = 0; c < o.classes; c++) {
      const offset = c * n
      let strokes = 0
      if (c !== o.unlabelled)
        for (let i = 0; i < n; i++) {
          const hit = scribble[i] === c
          grid[i] = hit ? 0 : Infinity
          if (hit) strokes++
        }
      if (strokes === 0) {
        out.fill(0, offset, offset + n)
        continue
      }
      squaredEdtInPlace(grid, [width, height], [1, 1], ws)
      for (let i = 0; i < n; i++) {
        const s = grid[i]
        out[offset + i] = s <= maxSq ? table[s] : 0
      }
    }
    return out
  }
}

/** CPL of one slice (x fastest): Float32Array classes x height x width, class-major. */
export const continuousPseudoLabels = (
  scribble: ScribbleSlice,
  width: number,
  height: number,
  options: Partial<CplOptions> = {},
): Float32Array => continuousPseudoLabeller(width, height, options)(scribble)

/**
 * CPL of every axial slice of a scribble volume at its own resolution: a float32 volume
 * (x, y, z, class) with the scribble's geometry.
 */
export const continuousPseudoLabelVolume = (
  scribble: Volume,
  options: Partial<CplOptions> = {},
): Volume<Float32Array> => {
  const classes = options.classes ?? DEFAULT_CPL.classes
  const [nx, ny, nz] = spatialDims(scribble)
  const values = isIdentityScaling(scribble.scaling) ? scribble.data : realValues(scribble)
  const sliceSize = nx * ny
  const volumeSize = sliceSize * nz
  const labeller = continuousPseudoLabeller(nx, ny, options)
  const out = new Float32Array(volumeSize * classes)
  const slice = new Float32Array(classes * sliceSize)
  for (let z = 0; z < nz; z++) {
    labeller(values.subarray(z * sliceSize, (z + 1) * sliceSize), slice)
    for (let c = 0; c < classes; c++)
      out.set(slice.subarray(c * sliceSize, (c + 1) * sliceSize), c * volumeSize + z * sliceSize)
  }
  return withData(scribble, out, [nx, ny, nz, classes])
}
