import t from 'tap'
import * as E from 'fp-ts/lib/Either.js'
import { gzipSync } from 'fflate'
import {
  decodeNifti,
  encodeNifti,
  isGzip,
  isNifti,
  peekNiftiHeader,
} from '../../src/volume/nifti.ts'
import {
  realValues,
  volumeOf,
  type Geometry,
  type Mat4,
  type Volume,
  type VoxelArray,
} from '../../src/volume/volume.ts'

/** The Right of an Either, or a test failure naming the Left. */
const right = <A>(e: E.Either<string, A>): A => {
  if (E.isLeft(e)) throw new Error(`expected a value, got: ${e.left}`)
  return e.right
}
const left = <A>(e: E.Either<string, A>): string => {
  if (E.isRight(e)) throw new Error('expected an error, got a value')
  return e.left
}

const bytesOf = (a: VoxelArray): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

const maxDiff = (a: Mat4, b: Mat4): number =>
  Math.max(...a.flatMap((row, r) => row.map((v, c) => Math.abs(v - b[r][c]))))

/**
 * A NIfTI-1 header written field by field from the format's byte layout, independently of
 * the encoder under test; voxels follow at `voxOffset` (default 352).
 */
const handMade = (p: {
  littleEndian?: boolean
  dim: number[]
  datatype: number
  pixdim?: number[]
  voxOffset?: number
  slope?: number
  inter?: number
  qformCode?: number
  sformCode?: number
  quatern?: number[]
  qoffset?: number[]
  srow?: number[][]
  sizeofHdr?: number
  magic?: string
  voxels?: Uint8Array
}): Uint8Array => {
  const le = p.littleEndian ?? true
  const offset = p.voxOffset ?? 352
  const voxels = p.voxels ?? new Uint8Array(0)
  const out = new Uint8Array(Math.max(352, offset) + voxels.length)
  const v = new DataView(out.buffer)
  v.setInt32(0, p.sizeofHdr ?? 348, le)
  p.dim.forEach((d, i) => v.setInt16(40 + 2 * i, d, le))
  v.setInt16(70, p.datatype, le)
  ;(p.pixdim ?? [1, 1, 1, 1, 1, 1, 1, 1]).forEach((x, i) => v.setFloat32(76 + 4 * i, x, le))
  v.setFloat32(108, offset, le)
  v.setFloat32(112, p.slope ?? 1, le)
  v.setFloat32(116, p.inter ?? 0, le)
  v.setInt16(252, p.qformCode ?? 0, le)
  v.setInt16(254, p.sformCode ?? 0, le)
  ;[...(p.quatern ?? [0, 0, 0]), ...(p.qoffset ?? [0, 0, 0])].forEach((x, i) =>
    v.setFloat32(256 + 4 * i, x, le),
  )
  ;(
    p.srow ?? [
      [1, 0, 0, 0],
      [0, 1, 0, 0],
      [0, 0, 1, 0],
    ]
  ).forEach((row, r) => row.forEach((x, c) => v.setFloat32(280 + 16 * r + 4 * c, x, le)))
  for (let i = 0; i < 4; i++) out[344 + i] = (p.magic ?? 'n+1\0').charCodeAt(i)
  out.set(voxels, Math.max(352, offset))
  return out
}

/** Voxel values in a given byte order, written one by one with DataView. */
const encodeValues = (
  values: number[],
  width: number,
  write: (v: DataView, at: number, x: number, le: boolean) => void,
  le: boolean,
): Uint8Array => {
  const out = new Uint8Array(values.length * width)
  const view = new DataView(out.buffer)
  values.forEach((x, i) => write(view, i * width, x, le))
  return out
}

/** Rotation about (1, 2, 3) by 0.7 rad (Rodrigues), spacing (0.8, 0.9, 5), z reflected, offset. */
const obliqueAffine = (): Mat4 => {
  const n = Math.hypot(1, 2, 3)
  const [x, y, z] = [1 / n, 2 / n, 3 / n]
  const c = Math.cos(0.7)
  const s = Math.sin(0.7)
  const r = [
    [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
    [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
    [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
  ]
  const scale = [0.8, 0.9, -5]
  return [
    [r[0][0] * scale[0], r[0][1] * scale[1], r[0][2] * scale[2], -101.25],
    [r[1][0] * scale[0], r[1][1] * scale[1], r[1][2] * scale[2], 37.5],
    [r[2][0] * scale[0], r[2][1] * scale[1], r[2][2] * scale[2], 12.125],
    [0, 0, 0, 1],
  ]
}

const samples: Record<string, () => VoxelArray> = {
  uint8: () => Uint8Array.from({ length: 120 }, (_, i) => (i * 37) % 256),
  int16: () => Int16Array.from({ length: 120 }, (_, i) => (i % 2 ? -1 : 1) * ((i * 977) % 32768)),
  uint16: () => Uint16Array.from({ length: 120 }, (_, i) => (i * 6007) % 65536),
  int32: () => Int32Array.from({ length: 120 }, (_, i) => (i % 2 ? -1 : 1) * i * 17_000_000),
  float32: () =>
    Float32Array.from({ length: 120 }, (_, i) =>
      i === 3 ? NaN : i === 4 ? -0 : Math.sin(i) * 1e6,
    ),
  float64: () =>
    Float64Array.from({ length: 120 }, (_, i) => (i === 5 ? Infinity : Math.PI * i * 1e-300)),
}

t.test('every datatype, raw and gzipped, 3D and 4D, round-trips bit for bit', async (t) => {
  const affine = obliqueAffine()
  const geometry: Geometry = {
    spacing: [0.8, 0.9, 5],
    affine,
    qformCode: 1,
    sformCode: 4,
    qform: affine,
    sform: affine,
  }
  for (const [name, make] of Object.entries(samples))
    for (const dims of [
      [4, 5, 6],
      [2, 5, 3, 4],
    ])
      for (const gzip of [false, true]) {
        const data = make()
        const v: Volume = { ...volumeOf({ dims, data, spacing: [0.8, 0.9, 5] }), geometry }
        const file = encodeNifti(v, { gzip })
        t.equal(isGzip(file), gzip)
        const back = right(decodeNifti(file))
        const what = `${name} ${dims.join('x')} ${gzip ? 'gz' : 'raw'}`
        t.same(back.dims, dims, what)
        t.equal(back.datatype, name, what)
        t.same(bytesOf(back.data), bytesOf(data), what)
        t.same(
          back.geometry.spacing.map((x) => Math.fround(x)),
          [0.8, 0.9, 5].map(Math.fround),
        )
        t.ok(maxDiff(back.geometry.affine, affine) < 1e-5, `affine ${what}`)
        t.ok(maxDiff(back.geometry.qform, affine) < 1e-5, `qform ${what}`)
        t.ok(maxDiff(back.geometry.sform, affine) < 1e-5, `sform ${what}`)
        t.same([back.geometry.qformCode, back.geometry.sformCode], [1, 4])
      }
})

t.test('a Node Buffer that is a view into a larger pool decodes the same', async (t) => {
  const v = volumeOf({
    dims: [3, 2, 1],
    data: Float64Array.of(1.5, -2, 3, 4, 5, 6),
    spacing: [1, 1, 1],
  })
  for (const gzip of [false, true]) {
    const file = encodeNifti(v, { gzip })
    const view = Buffer.concat([Buffer.alloc(3), Buffer.from(file), Buffer.alloc(5)]).subarray(
      3,
      3 + file.length,
    )
    t.same(Array.from(right(decodeNifti(view)).data), [1.5, -2, 3, 4, 5, 6])
  }
})

t.test('the oblique, reflected affine survives through the qform alone', async (t) => {
  const affine = obliqueAffine()
  const v = volumeOf({ dims: [3, 2, 2], data: new Uint8Array(12), spacing: [0.8, 0.9, 5] })
  const qformOnly: Volume = {
    ...v,
    geometry: { ...v.geometry, affine, qform: affine, sformCode: 0, sform: v.geometry.sform },
  }
  const back = right(decodeNifti(encodeNifti(qformOnly)))
  t.equal(back.geometry.sformCode, 0)
  t.ok(maxDiff(back.geometry.affine, affine) < 1e-5, JSON.stringify(back.geometry.affine))
  // The reflection is in the determinant's sign: z was flipped.
  const m = back.geometry.affine
  const det =
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
    m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
    m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
  t.ok(Math.abs(det - -0.8 * 0.9 * 5) < 1e-5)
})

t.test('a 2D image round-trips with its two dims', async (t) => {
  const v = volumeOf({
    dims: [4, 3],
    data: new Float32Array(12).map((_, i) => i / 3),
    spacing: [0.5, 0.25, 1],
  })
  const back = right(decodeNifti(encodeNifti(v, { gzip: true })))
  t.same(back.dims, [4, 3])
  t.same(bytesOf(back.data), bytesOf(v.data))
})

t.test('the header written follows the NIfTI-1 layout', async (t) => {
  const v = volumeOf({ dims: [2, 3, 4, 5], data: new Int16Array(120), spacing: [1.5, 2.5, 3.5] })
  const file = encodeNifti(
    { ...v, scaling: { slope: 0.5, inter: -3 } },
    { description: 'made by a test' },
  )
  const h = new DataView(file.buffer, file.byteOffset)
  t.equal(h.getInt32(0, true), 348, 'sizeof_hdr')
  t.same(
    [0, 1, 2, 3, 4, 5].map((i) => h.getInt16(40 + 2 * i, true)),
    [4, 2, 3, 4, 5, 1],
    'dim',
  )
  t.same([h.getInt16(70, true), h.getInt16(72, true)], [4, 16], 'datatype int16, bitpix 16')
  t.same(
    [1, 2, 3].map((i) => h.getFloat32(76 + 4 * i, true)),
    [1.5, 2.5, 3.5],
    'pixdim',
  )
  t.equal(h.getFloat32(108, true), 352, 'vox_offset')
  t.same([h.getFloat32(112, true), h.getFloat32(116, true)], [0.5, -3], 'scl_slope, scl_inter')
  t.equal(file[123], 2 | 8, 'xyzt_units: mm and s')
  t.same([h.getFloat32(124, true), h.getFloat32(128, true)], [0, 0], 'cal_max, cal_min')
  t.equal(new TextDecoder().decode(file.subarray(148, 162)), 'made by a test')
  t.equal(new TextDecoder().decode(file.subarray(344, 348)), 'n+1\0')
  t.equal(file.length, 352 + 240)
})

t.test('the same volume always gives the same gzip bytes', async (t) => {
  const v = volumeOf({ dims: [8, 8, 2], data: new Uint8Array(128).fill(3), spacing: [1, 1, 1] })
  t.same(encodeNifti(v, { gzip: true }), encodeNifti(v, { gzip: true }))
})

t.test('a big-endian file reads the same values and geometry', async (t) => {
  const values = [1, -2, 300, 32767, -32768, 0]
  for (const gzip of [false, true]) {
    const raw = handMade({
      littleEndian: false,
      dim: [3, 3, 2, 1, 1, 1, 1, 1],
      datatype: 4,
      pixdim: [-1, 2, 3, 4, 0, 0, 0, 0],
      qformCode: 1,
      // d = sin 45 degrees: a quarter turn about z; qfac (pixdim[0]) -1 flips z.
      quatern: [0, 0, Math.SQRT1_2],
      qoffset: [10, 20, 30],
      voxels: encodeValues(values, 2, (v, at, x, le) => v.setInt16(at, x, le), false),
    })
    const file = gzip ? gzipSync(raw) : raw
    const v = right(decodeNifti(file))
    t.same(Array.from(v.data), values)
    t.equal(v.datatype, 'int16')
    t.same(v.geometry.spacing, [2, 3, 4])
    const expected: Mat4 = [
      [0, -3, 0, 10],
      [2, 0, 0, 20],
      [0, 0, -4, 30],
      [0, 0, 0, 1],
    ]
    t.ok(maxDiff(v.geometry.affine, expected) < 1e-6, JSON.stringify(v.geometry.affine))
    t.same(right(peekNiftiHeader(file)).littleEndian, false)
  }
  const doubles = [Math.PI, -1e300, 5e-324, 0.1]
  const f64 = handMade({
    littleEndian: false,
    dim: [2, 2, 2, 1, 1, 1, 1, 1],
    datatype: 64,
    voxels: encodeValues(doubles, 8, (v, at, x, le) => v.setFloat64(at, x, le), false),
  })
  t.same(Array.from(right(decodeNifti(f64)).data), doubles)
})

t.test('scl_slope and scl_inter are kept and applied by realValues', async (t) => {
  const file = handMade({
    dim: [3, 3, 1, 1, 1, 1, 1, 1],
    datatype: 512,
    slope: 0.5,
    inter: -10,
    voxels: encodeValues([0, 2, 100], 2, (v, at, x, le) => v.setUint16(at, x, le), true),
  })
  const v = right(decodeNifti(file))
  t.same(Array.from(v.data), [0, 2, 100], 'stored values stay raw')
  t.same(v.scaling, { slope: 0.5, inter: -10 })
  t.same(Array.from(realValues(v)), [-10, -9, 40])
  const unscaled = right(
    decodeNifti(
      handMade({
        dim: [3, 3, 1, 1, 1, 1, 1, 1],
        datatype: 2,
        slope: 0,
        voxels: Uint8Array.of(7, 8, 9),
      }),
    ),
  )
  t.same(Array.from(realValues(unscaled)), [7, 8, 9], 'slope 0 means no scaling')
})

t.test('vox_offset is honoured; 0 is read as 352', async (t) => {
  const voxels = Uint8Array.of(11, 12, 13, 14)
  const withExtension = handMade({ dim: [2, 2, 2], datatype: 2, voxOffset: 400, voxels })
  withExtension.fill(0xee, 352, 400) // an extension's bytes: not voxels
  t.same(Array.from(right(decodeNifti(withExtension)).data), [11, 12, 13, 14])
  t.same(Array.from(right(decodeNifti(gzipSync(withExtension))).data), [11, 12, 13, 14])
  const zero = handMade({ dim: [2, 2, 2], datatype: 2, voxels })
  new DataView(zero.buffer).setFloat32(108, 0, true)
  t.same(Array.from(right(decodeNifti(zero)).data), [11, 12, 13, 14])
})

t.test('affine: sform when its code is set, else qform, else diag(pixdim)', async (t) => {
  const base = {
    dim: [3, 1, 1, 1, 1, 1, 1, 1],
    datatype: 2,
    pixdim: [1, 2, 3, 4, 1, 1, 1, 1],
    qoffset: [5, 6, 7],
    srow: [
      [0, 0, 9, 1],
      [0, 8, 0, 2],
      [7, 0, 0, 3],
    ],
    voxels: Uint8Array.of(1),
  }
  const affine = (qformCode: number, sformCode: number) =>
    right(decodeNifti(handMade({ ...base, qformCode, sformCode }))).geometry.affine
  t.same(affine(1, 2), [...base.srow, [0, 0, 0, 1]])
  t.same(affine(1, 0), [
    [2, 0, 0, 5],
    [0, 3, 0, 6],
    [0, 0, 4, 7],
    [0, 0, 0, 1],
  ])
  const unusedNaN = right(
    decodeNifti(
      handMade({
        ...base,
        quatern: [NaN, 0, 0],
        srow: [
          [NaN, 0, 0, 0],
          [0, 1, 0, 0],
          [0, 0, 1, 0],
        ],
      }),
    ),
  ).geometry
  t.same(
    [unusedNaN.qform, unusedNaN.sform],
    [affine(0, 0), affine(0, 0)],
    'unused forms holding NaN fall back',
  )
  t.same(affine(0, 0), [
    [2, 0, 0, 0],
    [0, 3, 0, 0],
    [0, 0, 4, 0],
    [0, 0, 0, 1],
  ])
})

t.test('sniffing: NIfTI raw or gzipped, by bytes not by name', async (t) => {
  const v = volumeOf({ dims: [2, 2, 2], data: new Uint8Array(8), spacing: [1, 1, 1] })
  t.ok(isNifti(encodeNifti(v)))
  t.ok(isNifti(encodeNifti(v, { gzip: true })))
  t.notOk(isNifti(new Uint8Array(0)))
  t.notOk(isNifti(Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)), 'a PNG signature')
  t.notOk(isNifti(gzipSync(new TextEncoder().encode('hello world'.repeat(100)))))
  t.notOk(isNifti(Uint8Array.of(0x1f, 0x8b, 8, 0, 0)), 'a gzip that ends in its header')
  t.ok(isGzip(gzipSync(new Uint8Array(3))))
  t.notOk(isGzip(encodeNifti(v)))
})

t.test(
  'gzip variants: several members (as BGZF writes), zero padding after the stream',
  async (t) => {
    const v = volumeOf({
      dims: [40, 40, 40],
      data: Float32Array.from({ length: 64000 }, (_, i) => Math.sin(i)),
      spacing: [1, 1, 1],
    })
    const raw = encodeNifti(v)
    const concat = (parts: Uint8Array[]) => {
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
      parts.reduce((at, p) => (out.set(p, at), at + p.length), 0)
      return out
    }
    const members = concat(
      [raw.subarray(0, 100), raw.subarray(100, 200_000), raw.subarray(200_000)].map((p) =>
        gzipSync(p),
      ),
    )
    t.same(bytesOf(right(decodeNifti(members)).data), bytesOf(v.data))
    const padded = concat([gzipSync(raw), new Uint8Array(512)])
    t.same(bytesOf(right(decodeNifti(padded)).data), bytesOf(v.data))
  },
)

t.test('peek reads only the header: a stream cut after it still peeks', async (t) => {
  const data = Float32Array.from(
    { length: 64 * 64 * 8 },
    (_, i) => Math.sin(i * 12.9898) * 43758.5453,
  )
  const gz = encodeNifti(volumeOf({ dims: [64, 64, 8], data, spacing: [1.25, 1.25, 6] }), {
    gzip: true,
  })
  const cut = gz.subarray(0, 2000)
  t.same(right(peekNiftiHeader(cut)), {
    dims: [64, 64, 8],
    datatype: 'float32',
    spacing: [1.25, 1.25, 6],
    voxelCount: 32768,
    littleEndian: true,
    gzipped: true,
  })
  t.match(left(decodeNifti(cut)), /^truncated gzip stream/)
})

t.test('malformed input: each gives its own one-line reason', async (t) => {
  const v = volumeOf({ dims: [10, 10, 10], data: new Int16Array(1000).fill(5), spacing: [1, 1, 1] })
  const raw = encodeNifti(v)
  let seed = 7
  const random = Uint8Array.from(
    { length: 1000 },
    () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) & 0xff,
  )
  const withByte = (bytes: Uint8Array, at: number, value: number) => {
    const copy = bytes.slice()
    copy[at] = value
    return copy
  }
  const noise = Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i * 78.233) * 43758.5453)
  const noisyGz = encodeNifti(volumeOf({ dims: [16, 16, 16], data: noise, spacing: [1, 1, 1] }), {
    gzip: true,
  })
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty', new Uint8Array(0), /^not a NIfTI-1 file \(it is empty\)$/],
    ['random bytes', random, /^not a NIfTI-1 file \(bad header size/],
    ['short', raw.subarray(0, 100), /^not a NIfTI-1 file \(only 100 bytes; a header needs 348\)$/],
    ['wrong magic', withByte(raw, 345, 0x3f), /^not a NIfTI-1 file \(bad magic\)$/],
    [
      'NIfTI-2',
      handMade({ dim: [3, 1, 1, 1], datatype: 2, sizeofHdr: 540 }),
      /^NIfTI-2 files are not supported/,
    ],
    ['two-file', handMade({ dim: [3, 1, 1, 1], datatype: 2, magic: 'ni1\0' }), /^two-file NIfTI/],
    ['truncated gzip', noisyGz.subarray(0, noisyGz.length >> 1), /^truncated gzip stream/],
    ['corrupt gzip', withByte(noisyGz, 10, 0xff), /^corrupt gzip stream \(invalid block type\)$/],
    [
      'truncated raw data',
      raw.subarray(0, 352 + 1200),
      /^truncated: header says 1,000 voxels of int16 \(2\.0 KiB\) but the file holds 1\.2 KiB$/,
    ],
    [
      'truncated gzipped data',
      gzipSync(raw.subarray(0, 352 + 1200)),
      /^truncated: header says 1,000 voxels of int16 \(2\.0 KiB\) but the file holds 1\.2 KiB$/,
    ],
    [
      'absurd dims',
      handMade({ dim: [3, 10000, 10000, 10000], datatype: 2 }),
      /^1\.0e\+12 voxels \(dims 10000x10000x10000\) exceeds the limit of 536,870,912 voxels$/,
    ],
    [
      'too many bytes',
      handMade({ dim: [3, 1024, 1024, 300], datatype: 64 }),
      /^314,572,800 voxels of float64 \(2\.3 GiB\) exceeds the limit of 2\.0 GiB$/,
    ],
    [
      'negative dims',
      handMade({ dim: [3, 256, -3, 10], datatype: 4 }),
      /^dims 256x-3x10 are not valid/,
    ],
    ['zero dims', handMade({ dim: [3, 0, 256, 10], datatype: 4 }), /^dims 0x256x10 are not valid/],
    [
      '5D',
      handMade({ dim: [5, 2, 2, 2, 2, 2], datatype: 2 }),
      /^5D images are not supported \(only 2D, 3D and 4D\)$/,
    ],
    ['1D', handMade({ dim: [1, 2], datatype: 2 }), /^1D images are not supported/],
    [
      'dim[0] absurd',
      handMade({ dim: [-300, 2], datatype: 2 }),
      /^dim\[0\] = -300 is not a valid number of dimensions$/,
    ],
    [
      'int8',
      handMade({ dim: [3, 2, 2, 2], datatype: 256 }),
      /^datatype int8 \(code 256\) is not supported \(supported: uint8, int16, int32, float32, float64, uint16\)$/,
    ],
    [
      'unknown datatype',
      handMade({ dim: [3, 2, 2, 2], datatype: 7 }),
      /^unknown datatype code 7 is not supported/,
    ],
    [
      'non-finite sform',
      handMade({
        dim: [3, 1, 1, 1],
        datatype: 2,
        sformCode: 1,
        srow: [
          [NaN, 0, 0, 0],
          [0, 1, 0, 0],
          [0, 0, 1, 0],
        ],
        voxels: Uint8Array.of(0),
      }),
      /^the sform \(srow_x\/y\/z\) holds values that are not finite numbers$/,
    ],
  ]
  for (const [what, bytes, reason] of cases) {
    const why = left(decodeNifti(bytes))
    t.match(why, reason, what)
    t.notOk(why.includes('\n'), `${what}: one line`)
    if (why.startsWith('not a NIfTI-1 file'))
      t.notOk(isNifti(bytes), `${what}: not sniffed as NIfTI`)
  }
  // The header-level reasons are found by peeking too, gzipped or not.
  for (const what of ['absurd dims', 'negative dims', 'int8', '5D']) {
    const [, bytes, reason] = cases.find(([w]) => w === what)!
    t.match(left(peekNiftiHeader(bytes)), reason, `peek: ${what}`)
    t.match(left(peekNiftiHeader(gzipSync(bytes))), reason, `peek gz: ${what}`)
  }
})

t.test(
  'a header claiming 10^12 voxels is refused without allocating, even with no limits',
  async (t) => {
    const claim = handMade({
      dim: [3, 10000, 10000, 10000],
      datatype: 2,
      voxels: new Uint8Array(1000),
    })
    const unlimited = { maxVoxels: Infinity, maxBytes: Infinity }
    const before = process.memoryUsage().arrayBuffers
    // Allocating 1 TB would throw or report 'cannot allocate'; a truncation reason shows none was tried.
    t.match(
      left(decodeNifti(claim, unlimited)),
      /^truncated: header says 1\.0e\+12 voxels of uint8 .* but the file holds 1,000 bytes$/,
    )
    t.match(
      left(decodeNifti(gzipSync(claim), unlimited)),
      /^truncated: header says 1\.0e\+12 voxels .* but the file holds 1,000 bytes$/,
    )
    t.ok(process.memoryUsage().arrayBuffers - before < 64 * 2 ** 20)
  },
)

t.test('limits can be lowered, e.g. for a server', async (t) => {
  const file = encodeNifti(
    volumeOf({ dims: [64, 64, 4], data: new Uint8Array(16384), spacing: [1, 1, 1] }),
    { gzip: true },
  )
  t.match(
    left(peekNiftiHeader(file, { maxVoxels: 10000 })),
    /^16,384 voxels \(dims 64x64x4\) exceeds the limit of 10,000 voxels$/,
  )
  t.match(
    left(decodeNifti(file, { maxBytes: 4096 })),
    /^16,384 voxels of uint8 \(16\.0 KiB\) exceeds the limit of 4\.0 KiB$/,
  )
  t.ok(E.isRight(decodeNifti(file, { maxVoxels: 16384, maxBytes: 352 + 16384 })))
})
