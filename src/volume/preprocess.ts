/**
 * MaCo preprocessing of a volume, slice by slice: resample in-plane to the target spacing
 * (image: bilinear; labels and scribbles: nearest), centre crop/pad to the target size,
 * z-score the image. Plus its geometry (the affine of what the network sees) and the inverse
 * mapping that brings per-class probabilities back to the native grid for evaluation.
 *
 * The network grid: with `r = target / native` spacing per axis, network pixel `u` of `w`
 * samples native continuous index `(n - 1) / 2 + (u - (w - 1) / 2) * r` (pixel centres, see
 * resample.ts), so the centre of the native field of view is exactly the centre of the network
 * grid. This is `resampleSlice` followed by `centreCropPad` done in one pass; the two agree
 * whenever `round(n * native / target) - w` is even, and otherwise the one pass is the exactly
 * centred one (the two-step crop/pad must shift half a pixel). Network pixels whose centre is
 * outside the native FOV get the fill value (0 for images; give scribbles their
 * "unlabelled" value). `fromNetworkGrid` inverts the same maps: native pixel `i` reads the
 * network grid at `(i - origin) / step`, bilinearly. Where the crop cut the native FOV the
 * network saw nothing: give `outside` (e.g. one-hot background `[1, 0, 0, 0]` for class
 * probabilities) so those pixels are background, not a smear of the network's border.
 *
 * @example
 * const plan = preprocessPlan({ dims: v.dims, spacing: v.geometry.spacing }, { spacing: [1.37, 1.37], size: [256, 256] })
 * const x = toNetworkGrid(plan, 'bilinear')(sliceOf(v, k))       // 256 x 256 at 1.37 mm
 * const p = fromNetworkGrid(plan)(probabilities)                  // C x ny x nx, then argmax
 * const image = preprocessVolume(v, { spacing: [1.37, 1.37], size: [256, 256], kind: 'image' })
 */
import {
  centredAxis,
  planeSampler,
  sampleSlice,
  type AxisMap,
  type Interpolation,
} from './resample.ts'
import { zScoreInPlace } from './normalize.ts'
import type { Slice } from './slice.ts'
import {
  IDENTITY_SCALING,
  matMul,
  realValues,
  spatialDims,
  type Geometry,
  type Mat4,
  type Volume,
  type VoxelArray,
} from './volume.ts'

export interface PreprocessTarget {
  /** In-plane pixel size in mm, x and y. */
  readonly spacing: readonly [number, number]
  /** Network grid width and height in pixels. */
  readonly size: readonly [number, number]
}

/** Everything needed to map between one volume's native in-plane grid and the network grid. */
export interface InPlaneTransform {
  readonly native: {
    readonly dims: readonly [number, number]
    readonly spacing: readonly [number, number]
  }
  readonly network: PreprocessTarget
  /** Network pixel u -> native continuous x index `x.origin + u * x.step`. */
  readonly x: AxisMap
  /** Network pixel v -> native continuous y index `y.origin + v * y.step`. */
  readonly y: AxisMap
}

export const preprocessPlan = (
  native: { readonly dims: readonly number[]; readonly spacing: readonly number[] },
  target: PreprocessTarget,
): InPlaneTransform => ({
  native: {
    dims: [native.dims[0], native.dims[1]],
    spacing: [native.spacing[0], native.spacing[1]],
  },
  network: target,
  x: centredAxis(native.dims[0], native.spacing[0], target.spacing[0], target.size[0]),
  y: centredAxis(native.dims[1], native.spacing[1], target.spacing[1], target.size[1]),
})

/** A native slice on the network grid (image: 'bilinear', labels: 'nearest'); no normalisation. */
export const toNetworkGrid = (
  plan: InPlaneTransform,
  interpolation: Interpolation,
  fill = 0,
): ((s: Slice) => Slice) =>
  sampleSlice(plan.x, plan.y, interpolation, 'fill', plan.network.spacing, fill)

/** The map from native index back to network index: the inverse of an axis map. */
const inverseAxis = (a: AxisMap): AxisMap => ({
  origin: -a.origin / a.step,
  step: 1 / a.step,
  size: a.source,
  source: a.size,
})

/**
 * Planes on the network grid (C x h x w, or N x C x h x w: any stack of w x h planes) to the
 * same stack on the native grid (nx x ny planes, x fastest), bilinearly; applied to class
 * probabilities, an argmax over C afterwards gives the native-resolution mask.
 *
 * Native pixels outside the network's FOV get `outside[p % outside.length]` for plane `p`
 * (per class: the background's 1, the others' 0); without `outside` they repeat the border.
 */
export const fromNetworkGrid = (
  plan: InPlaneTransform,
  outside?: readonly number[],
): ((planes: Float32Array) => Float32Array) => {
  const [x, y] = [inverseAxis(plan.x), inverseAxis(plan.y)]
  const samplers =
    outside === undefined
      ? [planeSampler(x, y, 'bilinear', 'edge')]
      : outside.map((fill) => planeSampler(x, y, 'bilinear', 'fill', fill))
  const inPlane = plan.x.size * plan.y.size
  const outPlane = plan.x.source * plan.y.source
  return (planes) => {
    if (planes.length % inPlane !== 0)
      throw new RangeError(
        `${planes.length} values are not a stack of ${plan.x.size}x${plan.y.size} planes`,
      )
    const count = planes.length / inPlane
    const out = new Float32Array(count * outPlane)
    for (let p = 0; p < count; p++)
      samplers[p % samplers.length](planes, p * inPlane, out, p * outPlane)
    return out
  }
}

/** One-hot background, the `outside` of `fromNetworkGrid` for class probabilities. */
export const backgroundOutside = (classes: number): number[] =>
  Array.from({ length: classes }, (_, c) => (c === 0 ? 1 : 0))

/** The geometry of the network grid: voxel (u, v, k) maps to the world point of native (x(u), y(v), k). */
const networkGeometry = (g: Geometry, plan: InPlaneTransform): Geometry => {
  const m: Mat4 = [
    [plan.x.step, 0, 0, plan.x.origin],
    [0, plan.y.step, 0, plan.y.origin],
    [0, 0, 1, 0],
    [0, 0, 0, 1],
  ]
  return {
    ...g,
    spacing: [plan.network.spacing[0], plan.network.spacing[1], g.spacing[2]],
    affine: matMul(g.affine, m),
    qform: matMul(g.qform, m),
    sform: matMul(g.sform, m),
  }
}

const sameKind = (a: VoxelArray, length: number): VoxelArray =>
  new (a.constructor as new (n: number) => VoxelArray)(length)

/**
 * A whole volume as the network sees it: dims [w, h, ...the rest], in-plane spacing the
 * target's, slice spacing unchanged, affine composed so every voxel keeps its world position.
 * 'image': real intensities, bilinear, z-scored per slice, float32. 'label': the stored values
 * copied by nearest neighbour (a uint8 label map stays uint8, scaling kept), `fill` (default 0)
 * outside the native FOV.
 */
export const preprocessVolume = (
  v: Volume,
  opts: PreprocessTarget & { readonly kind: 'image' | 'label'; readonly fill?: number },
): Volume => {
  const [nx, ny] = spatialDims(v)
  const plan = preprocessPlan({ dims: [nx, ny], spacing: v.geometry.spacing }, opts)
  const image = opts.kind === 'image'
  const sample = planeSampler(
    plan.x,
    plan.y,
    image ? 'bilinear' : 'nearest',
    'fill',
    opts.fill ?? 0,
  )
  const source = image ? realValues(v) : v.data
  const inPlane = nx * ny
  const outPlane = opts.size[0] * opts.size[1]
  const count = source.length / inPlane
  const data = image ? new Float32Array(count * outPlane) : sameKind(v.data, count * outPlane)
  for (let k = 0; k < count; k++) {
    sample(source, k * inPlane, data, k * outPlane)
    if (image) zScoreInPlace((data as Float32Array).subarray(k * outPlane, (k + 1) * outPlane))
  }
  return {
    dims: [opts.size[0], opts.size[1], ...v.dims.slice(2)],
    datatype: image ? 'float32' : v.datatype,
    data,
    scaling: image ? IDENTITY_SCALING : v.scaling,
    geometry: networkGeometry(v.geometry, plan),
  }
}
