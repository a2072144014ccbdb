/**
 * 2D PNG in and out, in pure TypeScript on fflate, because pngjs needs Node streams and
 * the service also runs on Workers. Reads every PNG colour type and bit depth (Adam7
 * interlacing included) as grey levels; writes 8-bit grey masks. The header is read on its
 * own (`peekPng`) so that a server can refuse a huge image before inflating it, and the
 * inflate itself stops at the size the header promises (a zlib bomb cannot grow it).
 * Physical pixel size comes from the `pHYs` chunk (pixels per metre) when present.
 *
 * @example
 * const img = decodePng(bytes) // Right({ width, height, grey: Float32Array, spacing? })
 * encodePng({ width: 2, height: 1, data: new Uint8Array([0, 3]) }) // 8-bit grey PNG bytes
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import { Unzlib, zlibSync } from 'fflate'

export interface PngHeader {
  readonly width: number
  readonly height: number
  readonly bitDepth: number
  /** 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA. */
  readonly colorType: number
  readonly interlaced: boolean
}

export interface PngImage {
  readonly width: number
  readonly height: number
  /** Grey level per pixel (ITU-R BT.601 luma for colour), rows top to bottom, x fastest. */
  readonly grey: Float32Array
  /** Pixel size in mm from `pHYs` when its unit is the metre. */
  readonly spacing?: readonly [number, number]
}

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]

/** Samples per pixel of each colour type, with the bit depths the PNG spec allows for it. */
const COLOR_TYPES: Record<number, { channels: number; depths: readonly number[] }> = {
  0: { channels: 1, depths: [1, 2, 4, 8, 16] },
  2: { channels: 3, depths: [8, 16] },
  3: { channels: 1, depths: [1, 2, 4, 8] },
  4: { channels: 2, depths: [8, 16] },
  6: { channels: 4, depths: [8, 16] },
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

const crc32 = (bytes: Uint8Array): number => {
  let c = 0xffffffff
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

interface Chunk {
  readonly type: string
  readonly data: Uint8Array
}

const u32 = (b: Uint8Array, at: number): number =>
  ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0

/** Chunks up to IEND (or up to `stopAfter`), each CRC-checked. */
const readChunks = (bytes: Uint8Array, stopAfter?: string): E.Either<string, Chunk[]> => {
  if (!SIGNATURE.every((b, i) => bytes[i] === b)) return E.left('not a PNG file (bad signature)')
  const chunks: Chunk[] = []
  let at = 8
  for (;;) {
    if (at + 12 > bytes.length) return E.left('truncated PNG: the file ends before its IEND chunk')
    const length = u32(bytes, at)
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8))
    if (!/^[A-Za-z]{4}$/.test(type)) return E.left(`corrupt PNG: bad chunk type at byte ${at + 4}`)
    if (at + 12 + length > bytes.length)
      return E.left(`truncated PNG: chunk ${type} needs ${length} bytes, the file ends first`)
    if (crc32(bytes.subarray(at + 4, at + 8 + length)) !== u32(bytes, at + 8 + length))
      return E.left(`corrupt PNG: CRC mismatch in chunk ${type}`)
    chunks.push({ type, data: bytes.subarray(at + 8, at + 8 + length) })
    at += 12 + length
    if (type === 'IEND' || type === stopAfter) return E.right(chunks)
  }
}

const parseHeader = (chunks: readonly Chunk[]): E.Either<string, PngHeader> => {
  const ihdr = chunks[0]
  if (ihdr?.type !== 'IHDR' || ihdr.data.length !== 13) return E.left('corrupt PNG: IHDR missing')
  const d = ihdr.data
  const h = {
    width: u32(d, 0),
    height: u32(d, 4),
    bitDepth: d[8],
    colorType: d[9],
    interlaced: d[12] === 1,
  }
  const kind = COLOR_TYPES[h.colorType]
  if (h.width === 0 || h.height === 0 || h.width > 2 ** 31 - 1 || h.height > 2 ** 31 - 1)
    return E.left(`corrupt PNG: size ${h.width}x${h.height} is not valid`)
  if (kind === undefined || !kind.depths.includes(h.bitDepth))
    return E.left(
      `corrupt PNG: colour type ${h.colorType} with bit depth ${h.bitDepth} is not valid`,
    )
  if (d[10] !== 0 || d[11] !== 0 || d[12] > 1)
    return E.left('corrupt PNG: unknown compression, filter or interlace method')
  return E.right(h)
}

/** The header alone (signature and IHDR read; nothing inflated). */
export const peekPng = (bytes: Uint8Array): E.Either<string, PngHeader> =>
  pipe(readChunks(bytes, 'IHDR'), E.chain(parseHeader))

/** Adam7 passes: [x0, y0, dx, dy]; a non-interlaced image is the single pass [0, 0, 1, 1]. */
const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
] as const

interface Pass {
  readonly x0: number
  readonly y0: number
  readonly dx: number
  readonly dy: number
  readonly width: number
  readonly height: number
}

const passesOf = (h: PngHeader): Pass[] =>
  (h.interlaced ? ADAM7 : ([[0, 0, 1, 1]] as const)).map(([x0, y0, dx, dy]) => ({
    x0,
    y0,
    dx,
    dy,
    width: Math.ceil((h.width - x0) / dx),
    height: Math.ceil((h.height - y0) / dy),
  }))

const rowBytesOf = (h: PngHeader, width: number): number =>
  Math.ceil((width * COLOR_TYPES[h.colorType].channels * h.bitDepth) / 8)

const filteredSize = (h: PngHeader): number =>
  passesOf(h)
    .filter((p) => p.width > 0 && p.height > 0)
    .reduce((n, p) => n + p.height * (1 + rowBytesOf(h, p.width)), 0)

/** Inflates a zlib stream, refusing to produce more than `size` bytes. */
const inflateExactly = (deflated: Uint8Array, size: number): E.Either<string, Uint8Array> => {
  const out = new Uint8Array(size)
  let filled = 0
  let overflow = false
  const z = new Unzlib((chunk) => {
    if (filled + chunk.length > size) overflow = true
    else out.set(chunk, filled)
    filled += chunk.length
  })
  try {
    // Small input steps bound the work done before an over-long stream is noticed.
    const step = 1 << 14
    for (let at = 0; at < deflated.length && !overflow; at += step)
      z.push(deflated.subarray(at, at + step), at + step >= deflated.length)
  } catch {
    return E.left('corrupt PNG: the image data does not inflate')
  }
  return overflow
    ? E.left('corrupt PNG: the image data is longer than its header says')
    : filled < size
      ? E.left('truncated PNG: the image data is shorter than its header says')
      : E.right(out)
}

const paeth = (a: number, b: number, c: number): number => {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

/** Undoes the per-row filters in place; `raw` holds rows of [filter byte, rowBytes]. */
const unfilter = (
  raw: Uint8Array,
  offset: number,
  rows: number,
  rowBytes: number,
  bpp: number,
): E.Either<string, void> => {
  const stride = rowBytes + 1
  for (let y = 0; y < rows; y++) {
    const row = offset + y * stride + 1
    const prev = row - stride
    const filter = raw[row - 1]
    for (let i = 0; i < rowBytes; i++) {
      const a = i >= bpp ? raw[row + i - bpp] : 0
      const b = y > 0 ? raw[prev + i] : 0
      const c = y > 0 && i >= bpp ? raw[prev + i - bpp] : 0
      const predictor =
        filter === 0
          ? 0
          : filter === 1
            ? a
            : filter === 2
              ? b
              : filter === 3
                ? (a + b) >> 1
                : filter === 4
                  ? paeth(a, b, c)
                  : -1
      if (predictor < 0) return E.left(`corrupt PNG: unknown row filter ${filter}`)
      raw[row + i] = (raw[row + i] + predictor) & 0xff
    }
  }
  return E.right(undefined)
}

/** Sample `s` of pixel `x` in an unfiltered row, as an integer of the image's bit depth. */
const sampleAt = (
  raw: Uint8Array,
  row: number,
  x: number,
  s: number,
  channels: number,
  depth: number,
): number => {
  if (depth === 8) return raw[row + x * channels + s]
  if (depth === 16) {
    const at = row + (x * channels + s) * 2
    return (raw[at] << 8) | raw[at + 1]
  }
  const bit = x * depth
  return (raw[row + (bit >> 3)] >> (8 - depth - (bit & 7))) & ((1 << depth) - 1)
}

const luma = (r: number, g: number, b: number): number => 0.299 * r + 0.587 * g + 0.114 * b

const spacingOf = (chunks: readonly Chunk[]): readonly [number, number] | undefined => {
  const phys = chunks.find((c) => c.type === 'pHYs')
  if (phys === undefined || phys.data.length !== 9 || phys.data[8] !== 1) return undefined
  const [px, py] = [u32(phys.data, 0), u32(phys.data, 4)]
  return px > 0 && py > 0 ? [1000 / px, 1000 / py] : undefined
}

/** Decodes a PNG to grey levels; alpha is ignored. */
export const decodePng = (bytes: Uint8Array): E.Either<string, PngImage> =>
  pipe(
    readChunks(bytes),
    E.bindTo('chunks'),
    E.bind('header', ({ chunks }) => parseHeader(chunks)),
    E.bind('palette', ({ chunks, header }) => {
      const plte = chunks.find((c) => c.type === 'PLTE')?.data
      if (header.colorType !== 3) return E.right(undefined)
      return plte !== undefined && plte.length % 3 === 0 && plte.length > 0
        ? E.right(plte)
        : E.left('corrupt PNG: palette image without a valid PLTE chunk')
    }),
    E.bind('raw', ({ chunks, header }) => {
      const idat = chunks.filter((c) => c.type === 'IDAT')
      if (idat.length === 0) return E.left('corrupt PNG: no image data (IDAT)')
      const joined = new Uint8Array(idat.reduce((n, c) => n + c.data.length, 0))
      idat.reduce((at, c) => (joined.set(c.data, at), at + c.data.length), 0)
      return inflateExactly(joined, filteredSize(header))
    }),
    E.chain(({ chunks, header, palette, raw }) => {
      const { channels } = COLOR_TYPES[header.colorType]
      const bpp = Math.max(1, (channels * header.bitDepth) >> 3)
      const grey = new Float32Array(header.width * header.height)
      let offset = 0
      for (const p of passesOf(header)) {
        if (p.width === 0 || p.height === 0) continue
        const rowBytes = rowBytesOf(header, p.width)
        const unfiltered = unfilter(raw, offset, p.height, rowBytes, bpp)
        if (E.isLeft(unfiltered)) return unfiltered
        for (let y = 0; y < p.height; y++) {
          const row = offset + y * (rowBytes + 1) + 1
          const out = (p.y0 + y * p.dy) * header.width + p.x0
          for (let x = 0; x < p.width; x++) {
            const s = (c: number) => sampleAt(raw, row, x, c, channels, header.bitDepth)
            let v: number
            if (palette !== undefined) {
              const i = s(0) * 3
              if (i + 2 >= palette.length)
                return E.left(`corrupt PNG: palette index ${s(0)} out of range`)
              v = luma(palette[i], palette[i + 1], palette[i + 2])
            } else v = channels >= 3 ? luma(s(0), s(1), s(2)) : s(0)
            grey[out + x * p.dx] = v
          }
        }
        offset += p.height * (rowBytes + 1)
      }
      const spacing = spacingOf(chunks)
      return E.right({
        width: header.width,
        height: header.height,
        grey,
        ...(spacing ? { spacing } : {}),
      })
    }),
  )

const chunk = (type: string, data: Uint8Array): Uint8Array => {
  const out = new Uint8Array(12 + data.length)
  const view = new DataView(out.buffer)
  view.setUint32(0, data.length)
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i)
  out.set(data, 8)
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)))
  return out
}

const concat = (parts: readonly Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0)
  return out
}

/** An 8-bit grey PNG (rows top to bottom, x fastest), with `pHYs` when a spacing in mm is given. */
export const encodePng = (image: {
  width: number
  height: number
  data: Uint8Array
  spacing?: readonly [number, number]
}): Uint8Array => {
  const { width, height, data } = image
  if (data.length !== width * height)
    throw new RangeError(
      `a ${width}x${height} PNG needs ${width * height} pixels, got ${data.length}`,
    )
  const ihdr = new Uint8Array(13)
  const view = new DataView(ihdr.buffer)
  view.setUint32(0, width)
  view.setUint32(4, height)
  ihdr[8] = 8 // bit depth; colour type 0 (grey), compression, filter and interlace 0
  const filtered = new Uint8Array(height * (width + 1))
  for (let y = 0; y < height; y++)
    filtered.set(data.subarray(y * width, (y + 1) * width), y * (width + 1) + 1)
  const phys = image.spacing && new Uint8Array(9)
  if (phys && image.spacing) {
    const pv = new DataView(phys.buffer)
    pv.setUint32(0, Math.round(1000 / image.spacing[0]))
    pv.setUint32(4, Math.round(1000 / image.spacing[1]))
    phys[8] = 1
  }
  return concat([
    new Uint8Array(SIGNATURE),
    chunk('IHDR', ihdr),
    ...(phys ? [chunk('pHYs', phys)] : []),
    chunk('IDAT', zlibSync(filtered)),
    chunk('IEND', new Uint8Array(0)),
  ])
}
