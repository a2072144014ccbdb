/**
 * NIfTI-1 single files (`.nii`, `.nii.gz`) to and from `Volume`, on bytes only, so the same
 * code runs in Node, on Cloudflare Workers and in browsers.
 *
 * Gzip is recognised by its magic bytes, never by a name. Input from outside is distrusted:
 * the header is read and checked (dims, datatype, size limits, the data actually present)
 * before anything the size of the image is allocated, and the gzip stream is inflated in
 * small steps into one buffer of the size the header promised, so a small file that claims
 * or inflates to terabytes is refused without using the memory. Every failure is a
 * one-line reason in words.
 *
 * Stored voxels are kept as they are (datatype, scl_slope/scl_inter in `scaling`), so
 * reading then writing gives the same voxels bit for bit; the geometry keeps qform and
 * sform with their codes, and `affine` is the sform when its code is set, else the qform,
 * else diag(pixdim).
 *
 * @example
 * const v = pipe(decodeNifti(bytes), E.getOrElseW((why) => fail(why)))
 * const out = encodeNifti(withData(v, mask), { gzip: true })
 * peekNiftiHeader(body, { maxVoxels: 64e6 }) // Left('1.0e12 voxels exceeds the limit ...') before inflating
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import { Gunzip, gzipSync } from 'fflate'
import { matrixToQuaternion, quaternionToMatrix } from './quaternion.ts'
import {
  datatypeOf,
  scalingAffine,
  voxelCount,
  type DataType,
  type Geometry,
  type Mat4,
  type Vec3,
  type Volume,
  type VoxelArray,
} from './volume.ts'

export interface NiftiLimits {
  /** Most voxels a volume may have. */
  readonly maxVoxels: number
  /** Most bytes the decoded file (header, extensions and voxel data) may take. */
  readonly maxBytes: number
}

export const DEFAULT_LIMITS: NiftiLimits = { maxVoxels: 512 * 2 ** 20, maxBytes: 2 * 2 ** 30 }

/** What the header says, checked against the limits; enough to accept or refuse a file. */
export interface NiftiHeaderInfo {
  dims: number[]
  datatype: DataType
  spacing: Vec3
  voxelCount: number
  littleEndian: boolean
  gzipped: boolean
}

/** NIfTI-1 header size; the voxel data of a single file starts at 352 or later. */
const HEADER_SIZE = 348
const MIN_OFFSET = 352

const DATATYPE_CODES: Record<DataType, number> = {
  uint8: 2,
  int16: 4,
  int32: 8,
  float32: 16,
  float64: 64,
  uint16: 512,
}

export const BYTES_PER_VOXEL: Record<DataType, number> = {
  uint8: 1,
  int16: 2,
  uint16: 2,
  int32: 4,
  float32: 4,
  float64: 8,
}

/** Names of the NIfTI datatypes this reader refuses, so the refusal can say what the file holds. */
const UNSUPPORTED_DATATYPES: Record<number, string> = {
  1: 'binary (1 bit)',
  32: 'complex64',
  128: 'rgb24',
  256: 'int8',
  768: 'uint32',
  1024: 'int64',
  1280: 'uint64',
  1536: 'float128',
  1792: 'complex128',
  2048: 'complex256',
  2304: 'rgba32',
}

const datatypeOfCode = (code: number): DataType | undefined =>
  (Object.keys(DATATYPE_CODES) as DataType[]).find((k) => DATATYPE_CODES[k] === code)

const ARRAY_OF: Record<DataType, (b: ArrayBuffer) => VoxelArray> = {
  uint8: (b) => new Uint8Array(b),
  int16: (b) => new Int16Array(b),
  uint16: (b) => new Uint16Array(b),
  int32: (b) => new Int32Array(b),
  float32: (b) => new Float32Array(b),
  float64: (b) => new Float64Array(b),
}

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

// ---- words for errors -------------------------------------------------------------------

const count = (n: number): string =>
  n < 1e9 ? String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',') : n.toExponential(1)

const size = (bytes: number): string => {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = bytes
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0
    ? `${count(bytes)} bytes`
    : v >= 1e4
      ? `${bytes.toExponential(1)} bytes`
      : `${v.toFixed(1)} ${units[u]}`
}

// ---- sniffing and gzip ------------------------------------------------------------------

export const isGzip = (bytes: Uint8Array): boolean =>
  bytes.length >= 3 && bytes[0] === 0x1f && bytes[1] === 0x8b && bytes[2] === 8

/** 'n+1\0' (single file) or 'ni1\0' (header of a .hdr/.img pair) at byte 344. */
const hasNiftiMagic = (h: Uint8Array): boolean =>
  h.length >= HEADER_SIZE &&
  h[344] === 0x6e &&
  (h[345] === 0x2b || h[345] === 0x69) &&
  h[346] === 0x31 &&
  h[347] === 0

/**
 * Feeds a gzip stream to `sink` until `enough()` says stop, in steps that start at 1 KiB
 * (a header costs little even in a stream that inflates a thousandfold) and grow to
 * 64 KiB. The stream is only declared ended, which is when a cut one fails, if it ran out
 * before `enough()`. Left: why the stream is unusable.
 */
const inflateInto = (
  gz: Uint8Array,
  sink: (chunk: Uint8Array) => void,
  enough: () => boolean,
): E.Either<string, void> => {
  const gunzip = new Gunzip((chunk) => sink(chunk))
  try {
    let at = 0
    for (let step = 1024; at < gz.length && !enough(); step = Math.min(2 * step, 65536)) {
      gunzip.push(gz.subarray(at, at + step))
      at += step
    }
    if (!enough()) gunzip.push(new Uint8Array(0), true)
    return E.right(undefined)
  } catch (e) {
    // Bytes after the data (zero padding, a damaged trailer) do not matter once it is all here.
    if (enough()) return E.right(undefined)
    const why = (e as Error).message
    return E.left(
      why === 'unexpected EOF'
        ? 'truncated gzip stream (it ends before its data does)'
        : `corrupt gzip stream (${why})`,
    )
  }
}

/** The first `n` bytes of the inflated stream (fewer when it is shorter). */
const inflatePrefix = (gz: Uint8Array, n: number): E.Either<string, Uint8Array> => {
  const out = new Uint8Array(n)
  let have = 0
  return pipe(
    inflateInto(
      gz,
      (chunk) => {
        const take = Math.min(chunk.length, n - have)
        out.set(chunk.subarray(0, take), have)
        have += take
      },
      () => have >= n,
    ),
    E.map(() => out.subarray(0, have)),
  )
}

/** The header bytes of a file, raw or gzipped; only the header is inflated. */
const headerBytes = (bytes: Uint8Array): E.Either<string, Uint8Array> =>
  bytes.length === 0
    ? E.left('not a NIfTI-1 file (it is empty)')
    : isGzip(bytes)
      ? inflatePrefix(bytes, HEADER_SIZE)
      : E.right(bytes.subarray(0, HEADER_SIZE))

export const isNifti = (bytes: Uint8Array): boolean =>
  pipe(
    headerBytes(bytes),
    E.exists((h) => hasNiftiMagic(h)),
  )

// ---- header -----------------------------------------------------------------------------

/** The header fields this module uses, decoded in the file's byte order. */
interface Header {
  readonly littleEndian: boolean
  readonly dim: readonly number[]
  readonly datatypeCode: number
  readonly pixdim: readonly number[]
  readonly voxOffset: number
  readonly sclSlope: number
  readonly sclInter: number
  readonly qformCode: number
  readonly sformCode: number
  readonly quatern: Vec3
  readonly qoffset: Vec3
  readonly srow: readonly (readonly number[])[]
}

const parseHeader = (h: Uint8Array): E.Either<string, Header> => {
  if (h.length < HEADER_SIZE)
    return E.left(
      `not a NIfTI-1 file (only ${count(h.length)} bytes; a header needs ${HEADER_SIZE})`,
    )
  const view = new DataView(h.buffer, h.byteOffset, HEADER_SIZE)
  const sizeLE = view.getInt32(0, true)
  const sizeBE = view.getInt32(0, false)
  if (sizeLE === 540 || sizeBE === 540)
    return E.left('NIfTI-2 files are not supported (only NIfTI-1)')
  if (sizeLE !== HEADER_SIZE && sizeBE !== HEADER_SIZE)
    return E.left('not a NIfTI-1 file (bad header size; sizeof_hdr must be 348)')
  if (!hasNiftiMagic(h)) return E.left('not a NIfTI-1 file (bad magic)')
  if (h[345] === 0x69)
    return E.left(
      'two-file NIfTI (.hdr + .img, magic ni1) is not supported; convert it to a single .nii',
    )
  const le = sizeLE === HEADER_SIZE
  const i16 = (at: number) => view.getInt16(at, le)
  const f32 = (at: number) => view.getFloat32(at, le)
  const range = (n: number, at: number, read: (at: number) => number, width: number) =>
    Array.from({ length: n }, (_, i) => read(at + i * width))
  return E.right({
    littleEndian: le,
    dim: range(8, 40, i16, 2),
    datatypeCode: i16(70),
    pixdim: range(8, 76, f32, 4),
    voxOffset: f32(108),
    sclSlope: f32(112),
    sclInter: f32(116),
    qformCode: i16(252),
    sformCode: i16(254),
    quatern: [f32(256), f32(260), f32(264)],
    qoffset: [f32(268), f32(272), f32(276)],
    srow: [range(4, 280, f32, 4), range(4, 296, f32, 4), range(4, 312, f32, 4)],
  })
}

/** What the header promises, checked: where the data is, how big, of what type. */
interface Layout {
  readonly dims: number[]
  readonly datatype: DataType
  readonly voxels: number
  readonly offset: number
  readonly dataBytes: number
}

const layoutOf = (hd: Header, limits: NiftiLimits): E.Either<string, Layout> => {
  const rank = hd.dim[0]
  if (!(rank >= 1 && rank <= 7))
    return E.left(`dim[0] = ${rank} is not a valid number of dimensions`)
  if (rank < 2 || rank > 4) return E.left(`${rank}D images are not supported (only 2D, 3D and 4D)`)
  const dims = hd.dim.slice(1, 1 + rank)
  if (dims.some((n) => n < 1))
    return E.left(`dims ${dims.join('x')} are not valid (each must be at least 1)`)
  const datatype = datatypeOfCode(hd.datatypeCode)
  if (datatype === undefined) {
    const name = UNSUPPORTED_DATATYPES[hd.datatypeCode]
    return E.left(
      `${name ? `datatype ${name} (code ${hd.datatypeCode})` : `unknown datatype code ${hd.datatypeCode}`} is not supported` +
        ` (supported: ${Object.keys(DATATYPE_CODES).join(', ')})`,
    )
  }
  const voxels = voxelCount(dims)
  if (voxels > limits.maxVoxels)
    return E.left(
      `${count(voxels)} voxels (dims ${dims.join('x')}) exceeds the limit of ${count(limits.maxVoxels)} voxels`,
    )
  if (!Number.isFinite(hd.voxOffset) || hd.voxOffset < 0)
    return E.left(`vox_offset ${hd.voxOffset} is not valid`)
  // Single files must start their data at 352 or later; 0 is a common writer slip (nibabel reads it as 352).
  const offset = Math.max(MIN_OFFSET, Math.floor(hd.voxOffset))
  const dataBytes = voxels * BYTES_PER_VOXEL[datatype]
  if (offset + dataBytes > limits.maxBytes)
    return E.left(
      `${count(voxels)} voxels of ${datatype} (${size(dataBytes)})` +
        `${offset > MIN_OFFSET ? ` after ${size(offset)} of header` : ''} exceeds the limit of ${size(limits.maxBytes)}`,
    )
  return E.right({ dims, datatype, voxels, offset, dataBytes })
}

const positive = (x: number): number => (Number.isFinite(x) && x !== 0 ? Math.abs(x) : 1)

/** |pixdim[1..3]|, with 1 for 0 or non-finite values, as the reference library reads them. */
const spacingOf = (hd: Header): Vec3 => [
  positive(hd.pixdim[1]),
  positive(hd.pixdim[2]),
  positive(hd.pixdim[3]),
]

const finite = (m: Mat4): boolean => m.every((row) => row.every(Number.isFinite))

const geometryOfHeader = (hd: Header): E.Either<string, Geometry> => {
  const spacing = spacingOf(hd)
  const base = scalingAffine(spacing)
  const qform = quaternionToMatrix({
    b: hd.quatern[0],
    c: hd.quatern[1],
    d: hd.quatern[2],
    offset: hd.qoffset,
    pixdim: spacing,
    qfac: hd.pixdim[0] < 0 ? -1 : 1,
  })
  const sform: Mat4 = [...hd.srow, [0, 0, 0, 1]]
  if (hd.sformCode > 0 && !finite(sform))
    return E.left('the sform (srow_x/y/z) holds values that are not finite numbers')
  if (hd.qformCode > 0 && !finite(qform))
    return E.left('the qform (quatern_b/c/d, qoffset) holds values that are not finite numbers')
  // An unused form may hold anything; NaNs must not travel on into outputs.
  return E.right({
    spacing,
    affine: hd.sformCode > 0 ? sform : hd.qformCode > 0 ? qform : base,
    qformCode: hd.qformCode,
    sformCode: hd.sformCode,
    qform: finite(qform) ? qform : base,
    sform: finite(sform) ? sform : base,
  })
}

const checkedHeader = (
  bytes: Uint8Array,
  limits: Partial<NiftiLimits> | undefined,
): E.Either<string, { header: Header; layout: Layout }> =>
  pipe(
    headerBytes(bytes),
    E.chain(parseHeader),
    E.bindTo('header'),
    E.bind('layout', ({ header }) => layoutOf(header, { ...DEFAULT_LIMITS, ...limits })),
  )

/**
 * The header of a `.nii` or `.nii.gz`, checked against `limits`, inflating only its first
 * 348 bytes: how a server refuses a file before paying for it.
 */
export const peekNiftiHeader = (
  bytes: Uint8Array,
  limits?: Partial<NiftiLimits>,
): E.Either<string, NiftiHeaderInfo> =>
  pipe(
    checkedHeader(bytes, limits),
    E.map(({ header, layout }) => ({
      dims: layout.dims,
      datatype: layout.datatype,
      spacing: spacingOf(header),
      voxelCount: layout.voxels,
      littleEndian: header.littleEndian,
      gzipped: isGzip(bytes),
    })),
  )

// ---- voxel data -------------------------------------------------------------------------

const truncated = (layout: Layout, available: number): string =>
  `truncated: header says ${count(layout.voxels)} voxels of ${layout.datatype} (${size(layout.dataBytes)})` +
  ` but the file holds ${size(Math.max(0, available))}`

/**
 * Deflate cannot expand data more than 1032-fold (a 258-byte match in 2 bits), so a gzip
 * stream of n bytes holds at most about 1032 n; a header promising more is truncated
 * whatever the limits, and the buffer is never allocated for it.
 */
const MAX_INFLATE_RATIO = 1032

const allocate = (n: number): E.Either<string, Uint8Array<ArrayBuffer>> =>
  E.tryCatch(
    () => new Uint8Array(n),
    () => `cannot allocate ${size(n)} for the voxel data`,
  )

/** The voxel bytes at [offset, offset + dataBytes) of the (inflated) file, in a fresh buffer. */
const voxelBytes = (bytes: Uint8Array, layout: Layout): E.Either<string, ArrayBuffer> => {
  const { offset, dataBytes } = layout
  const end = offset + dataBytes
  // A copy (not `slice`, which on a Node Buffer is a view) aligned for any element width.
  if (!isGzip(bytes))
    return bytes.length < end
      ? E.left(truncated(layout, bytes.length - offset))
      : E.right(new Uint8Array(bytes.subarray(offset, end)).buffer)
  const buffer: E.Either<string, Uint8Array<ArrayBuffer> | undefined> =
    end <= MAX_INFLATE_RATIO * bytes.length + 65536 ? allocate(dataBytes) : E.right(undefined)
  return pipe(
    buffer,
    E.chain((out) => {
      let at = 0 // position in the inflated file
      const sink = (chunk: Uint8Array) => {
        const from = Math.max(0, offset - at)
        const to = Math.min(chunk.length, end - at)
        if (out && to > from) out.set(chunk.subarray(from, to), at + from - offset)
        at += chunk.length
      }
      return pipe(
        inflateInto(bytes, sink, () => at >= end),
        E.chain(() =>
          out && at >= end ? E.right(out.buffer) : E.left(truncated(layout, at - offset)),
        ),
      )
    }),
  )
}

const swapBytes = (buffer: ArrayBuffer, width: number): void => {
  if (width === 1) return
  const b = new Uint8Array(buffer)
  for (let i = 0; i < b.length; i += width)
    for (let lo = i, hi = i + width - 1; lo < hi; lo++, hi--) {
      const t = b[lo]
      b[lo] = b[hi]
      b[hi] = t
    }
}

/** A `.nii` or `.nii.gz` as a `Volume`; Left with a one-line reason when it cannot be one. */
export const decodeNifti = (
  bytes: Uint8Array,
  limits?: Partial<NiftiLimits>,
): E.Either<string, Volume> =>
  pipe(
    checkedHeader(bytes, limits),
    E.bind('geometry', ({ header }) => geometryOfHeader(header)),
    E.bind('buffer', ({ layout }) => voxelBytes(bytes, layout)),
    E.map(({ header, layout, geometry, buffer }) => {
      if (header.littleEndian !== HOST_LITTLE_ENDIAN)
        swapBytes(buffer, BYTES_PER_VOXEL[layout.datatype])
      return {
        dims: layout.dims,
        datatype: layout.datatype,
        data: ARRAY_OF[layout.datatype](buffer),
        scaling: { slope: header.sclSlope, inter: header.sclInter },
        geometry,
      }
    }),
  )

// ---- writing ----------------------------------------------------------------------------

const NIFTI_UNITS_MM = 2
const NIFTI_UNITS_SEC = 8

/** The volume's bytes in the platform's order (little endian everywhere this runs). */
const littleEndianBytes = (data: VoxelArray): Uint8Array => {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  if (HOST_LITTLE_ENDIAN) return bytes
  const copy = bytes.slice()
  swapBytes(copy.buffer, data.BYTES_PER_ELEMENT)
  return copy
}

/**
 * A NIfTI-1 single file (magic n+1, little endian, data at 352) holding `v`: the stored
 * voxels, its scaling, pixdim = spacing, qform and sform with their codes (the active one,
 * sform if its code is set else qform, written from `affine`), units mm and s.
 */
export const encodeNifti = (
  v: Volume,
  opts: { gzip?: boolean; description?: string } = {},
): Uint8Array => {
  const datatype = datatypeOf(v.data)
  if (voxelCount(v.dims) !== v.data.length || v.dims.length < 2 || v.dims.length > 4)
    throw new RangeError(
      `cannot write dims ${v.dims.join('x')} with ${v.data.length} voxels as NIfTI-1`,
    )
  const g = v.geometry
  const sform = g.sformCode > 0 ? g.affine : g.sform
  const q = matrixToQuaternion(g.sformCode <= 0 && g.qformCode > 0 ? g.affine : g.qform)
  const file = new Uint8Array(MIN_OFFSET + v.data.byteLength)
  const view = new DataView(file.buffer)
  const i16 = (at: number, x: number) => view.setInt16(at, x, true)
  const f32 = (at: number, x: number) => view.setFloat32(at, x, true)
  view.setInt32(0, HEADER_SIZE, true)
  file[38] = 0x72 // regular = 'r', as the reference library writes
  i16(40, v.dims.length)
  for (let i = 0; i < 7; i++) i16(42 + 2 * i, v.dims[i] ?? 1)
  i16(70, DATATYPE_CODES[datatype])
  i16(72, 8 * BYTES_PER_VOXEL[datatype])
  ;[q.qfac, g.spacing[0], g.spacing[1], g.spacing[2], 1, 1, 1, 1].forEach((x, i) =>
    f32(76 + 4 * i, x),
  )
  f32(108, MIN_OFFSET)
  f32(112, v.scaling.slope)
  f32(116, v.scaling.inter)
  file[123] = NIFTI_UNITS_MM | NIFTI_UNITS_SEC
  const description = (opts.description ?? '').replace(/[^\x20-\x7e]/g, '?').slice(0, 79)
  for (let i = 0; i < description.length; i++) file[148 + i] = description.charCodeAt(i)
  i16(252, g.qformCode)
  i16(254, g.sformCode)
  ;[q.b, q.c, q.d, ...q.offset].forEach((x, i) => f32(256 + 4 * i, x))
  for (let r = 0; r < 3; r++) for (let c = 0; c < 4; c++) f32(280 + 16 * r + 4 * c, sform[r][c])
  file.set([0x6e, 0x2b, 0x31, 0], 344) // 'n+1\0'
  file.set(littleEndianBytes(v.data), MIN_OFFSET)
  // mtime 0: the same volume always gives the same bytes.
  return opts.gzip ? gzipSync(file, { level: 6, mtime: 0 }) : file
}
