/**
 * The NIfTI codec of the toolkit (src/volume/nifti.ts, pure TypeScript) for the web page:
 * `page.ts` bundles this entry with esbuild when the server starts, so the browser reads
 * and writes volumes with the very code the server uses, and the user runs no build step.
 *
 * @example
 * import { readNifti, writeNifti, gunzip } from '/web/nifti.js'
 * const volume = readNifti(new Uint8Array(await file.arrayBuffer())) // throws a one-line reason
 * const bytes = writeNifti(volume, scribble)                         // uint8 .nii.gz, same geometry
 */
import * as E from 'fp-ts/lib/Either.js'
import { gunzipSync } from 'fflate'
import { decodeNifti, encodeNifti } from '../../volume/nifti.ts'
import { realValues, spatialDims, withData, type Volume } from '../../volume/volume.ts'

/** A `.nii` or `.nii.gz` as a volume; throws with the decoder's reason. */
export const readNifti = (bytes: Uint8Array): Volume => {
  const v = decodeNifti(bytes)
  if (E.isLeft(v)) throw new Error(v.left)
  return v.right
}

/** `data` (one value per voxel) with the geometry of `like`, as a gzipped NIfTI-1 file. */
export const writeNifti = (like: Volume, data: Uint8Array, description = ''): Uint8Array =>
  encodeNifti(withData(like, data, spatialDims(like)), {
    gzip: true,
    description,
  })

export { realValues, spatialDims }
export const gunzip = (bytes: Uint8Array): Uint8Array => gunzipSync(bytes)
