/**
 * The `Volume` type: voxel data plus the geometry that places it in the scanner's world.
 *
 * Voxels are stored as read (in their NIfTI datatype, x fastest, then y, z, then a 4th
 * axis when present); `scaling` maps stored values to real ones, as `scl_slope`/`scl_inter`
 * do. Keeping the stored array lets a file round-trip bit for bit; `realValues` gives the
 * intensities a method should see.
 *
 * @example
 * const v = volumeOf({ dims: [2, 2, 1], data: new Uint8Array([0, 1, 2, 3]), spacing: [1.5, 1.5, 8] })
 * realValues(v) // Float32Array [0, 1, 2, 3]
 */
import { elementCount } from '../util/shape.ts'

export type DataType = 'uint8' | 'int16' | 'uint16' | 'int32' | 'float32' | 'float64'

export type VoxelArray =
  Uint8Array | Int16Array | Uint16Array | Int32Array | Float32Array | Float64Array

export type Vec3 = readonly [number, number, number]
/** Row-major 4x4 matrix; `m[r][c]`. */
export type Mat4 = readonly (readonly number[])[]

export interface Scaling {
  /** Real value = stored * slope + inter. A slope of 0 in a file means "no scaling" (slope 1). */
  readonly slope: number
  readonly inter: number
}

export interface Geometry {
  /** Voxel size in mm along x, y, z (pixdim[1..3], always positive). */
  readonly spacing: Vec3
  /** Voxel index (i, j, k) -> world mm (RAS+): the sform when its code is set, else the qform. */
  readonly affine: Mat4
  readonly qformCode: number
  readonly sformCode: number
  /** The qform as a matrix (quaternion, offset, pixdim, qfac combined). */
  readonly qform: Mat4
  readonly sform: Mat4
}

export interface Volume<A extends VoxelArray = VoxelArray> {
  /** [nx, ny, nz] or [nx, ny, nz, n4] (e.g. a class axis). */
  readonly dims: readonly number[]
  readonly datatype: DataType
  readonly data: A
  readonly scaling: Scaling
  readonly geometry: Geometry
}

export const IDENTITY_SCALING: Scaling = { slope: 1, inter: 0 }

export const datatypeOf = (a: VoxelArray): DataType =>
  a instanceof Uint8Array
    ? 'uint8'
    : a instanceof Int16Array
      ? 'int16'
      : a instanceof Uint16Array
        ? 'uint16'
        : a instanceof Int32Array
          ? 'int32'
          : a instanceof Float32Array
            ? 'float32'
            : 'float64'

export const voxelCount = (dims: readonly number[]): number => elementCount(dims)

/** [nx, ny, nz], with 1 for axes a 2D volume lacks. */
export const spatialDims = (v: Pick<Volume, 'dims'>): Vec3 => [
  v.dims[0] ?? 1,
  v.dims[1] ?? 1,
  v.dims[2] ?? 1,
]

export const isIdentityScaling = (s: Scaling): boolean =>
  (s.slope === 1 || s.slope === 0 || !Number.isFinite(s.slope)) && s.inter === 0

/** Stored values mapped through `scaling`, as float32. */
export const realValues = (v: Pick<Volume, 'data' | 'scaling'>): Float32Array => {
  const out = new Float32Array(v.data.length)
  const slope = v.scaling.slope === 0 || !Number.isFinite(v.scaling.slope) ? 1 : v.scaling.slope
  const inter = Number.isFinite(v.scaling.inter) ? v.scaling.inter : 0
  for (let i = 0; i < out.length; i++) out[i] = v.data[i] * slope + inter
  return out
}

/** Diagonal affine with the origin at voxel 0: for volumes made by code (tests, phantoms). */
export const scalingAffine = (spacing: Vec3): Mat4 => [
  [spacing[0], 0, 0, 0],
  [0, spacing[1], 0, 0],
  [0, 0, spacing[2], 0],
  [0, 0, 0, 1],
]

export const geometryOf = (spacing: Vec3, affine: Mat4 = scalingAffine(spacing)): Geometry => ({
  spacing,
  affine,
  qformCode: 1,
  sformCode: 1,
  qform: affine,
  sform: affine,
})

/** A volume made by code: spacing and (optionally) affine given, scaling identity. */
export const volumeOf = <A extends VoxelArray>(p: {
  dims: readonly number[]
  data: A
  spacing: Vec3
  affine?: Mat4
  scaling?: Scaling
}): Volume<A> => {
  if (voxelCount(p.dims) !== p.data.length)
    throw new RangeError(
      `dims ${p.dims.join('x')} need ${voxelCount(p.dims)} voxels, got ${p.data.length}`,
    )
  return {
    dims: p.dims,
    datatype: datatypeOf(p.data),
    data: p.data,
    scaling: p.scaling ?? IDENTITY_SCALING,
    geometry: geometryOf(p.spacing, p.affine),
  }
}

/** Same geometry, new voxels (e.g. a mask predicted for an image). */
export const withData = <A extends VoxelArray>(
  v: Volume,
  data: A,
  dims: readonly number[] = v.dims,
): Volume<A> => ({
  dims,
  datatype: datatypeOf(data),
  data,
  scaling: IDENTITY_SCALING,
  geometry: v.geometry,
})

/** Apply a 4x4 affine to a point. */
export const applyAffine = (m: Mat4, p: Vec3): Vec3 => [
  m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + m[0][3],
  m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + m[1][3],
  m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2] + m[2][3],
]

export const matMul = (a: Mat4, b: Mat4): Mat4 =>
  [0, 1, 2, 3].map((r) =>
    [0, 1, 2, 3].map(
      (c) => a[r][0] * b[0][c] + a[r][1] * b[1][c] + a[r][2] * b[2][c] + a[r][3] * b[3][c],
    ),
  )
