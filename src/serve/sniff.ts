/**
 * What a request body is, told by its magic bytes: clients send `.nii.gz` files as
 * `application/octet-stream`, `application/gzip` or nothing at all, so the Content-Type
 * header says little. Only the first bytes are looked at; whether a gzip stream really
 * holds a NIfTI header is for `peekNiftiHeader` to say.
 *
 * @example
 * sniff(new Uint8Array([0x1f, 0x8b, 8, 0])) // 'gzip'
 */

export type BodyKind =
  /** gzip stream; the server accepts it only when it holds a NIfTI-1 volume. */
  | 'gzip'
  /** Uncompressed NIfTI-1 single file (`n+1`) or header (`ni1`). */
  | 'nifti'
  | 'nifti2'
  | 'png'
  | 'empty'
  | 'unknown'

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]

/** sizeof_hdr = 348 in either byte order: a NIfTI-1 header even when cut short before its magic. */
const SIZEOF_HDR_LE = [0x5c, 0x01, 0, 0]
const SIZEOF_HDR_BE = [0, 0, 0x01, 0x5c]

const startsWith = (bytes: Uint8Array, magic: readonly number[], at = 0): boolean =>
  bytes.length >= at + magic.length && magic.every((b, i) => bytes[at + i] === b)

const ascii = (s: string): number[] => [...s].map((ch) => ch.charCodeAt(0))

export const sniff = (bytes: Uint8Array): BodyKind =>
  bytes.length === 0
    ? 'empty'
    : startsWith(bytes, [0x1f, 0x8b])
      ? 'gzip'
      : startsWith(bytes, PNG_SIGNATURE)
        ? 'png'
        : startsWith(bytes, ascii('n+1\0'), 344) ||
            startsWith(bytes, ascii('ni1\0'), 344) ||
            startsWith(bytes, SIZEOF_HDR_LE) ||
            startsWith(bytes, SIZEOF_HDR_BE)
          ? 'nifti'
          : startsWith(bytes, ascii('n+2\0'), 4) || startsWith(bytes, ascii('ni2\0'), 4)
            ? 'nifti2'
            : 'unknown'
