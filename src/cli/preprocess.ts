/**
 * `maco preprocess IMAGE -o OUT.nii.gz`: what the network sees of a volume: every slice
 * resampled in-plane to the target spacing, centre cropped/padded to the target size and
 * (images) z-scored, written with the affine that keeps each voxel at its world point, so a
 * viewer overlays it on the original.
 *
 * @example
 * maco preprocess patient001_frame01_image.nii.gz -o image-256.nii.gz
 * maco preprocess patient001_frame01_scribble.nii.gz -o scribble-256.nii.gz --label --fill 4
 */
import * as E from 'fp-ts/lib/Either.js'
import { DEFAULT_LIMITS } from '../volume/nifti.ts'
import { readNiftiFile, writeNiftiFile } from '../volume/nifti-file.ts'
import { preprocessVolume } from '../volume/preprocess.ts'
import { sliceCount } from '../volume/slice.ts'
import {
  flag,
  inputError,
  niftiPath,
  numberOption,
  positionals,
  runFailed,
  type Command,
} from './command.ts'

const DEFAULT_SPACING = 1.37
const DEFAULT_SIZE = 256
const MAX_SIZE = 4096

export const preprocess: Command = {
  name: 'preprocess',
  summary: 'resample, crop/pad and normalise a volume as the network sees it (NIfTI out)',
  usage:
    'maco preprocess IMAGE -o OUT.nii.gz [--spacing MM] [--size PX] [--label] [--fill V] [--json]',
  details: [
    'Per slice: resample in-plane to MM x MM pixels (bilinear; nearest with --label), centre',
    'crop/pad to PX x PX, z-score (images only). The output keeps the slice spacing and gets',
    'an affine that puts every voxel at the same world point as the input: the centre of the',
    "input's field of view is the centre of the output.",
    '',
    'Options:',
    '  -o, --out FILE   output NIfTI (.nii or .nii.gz)',
    `  --spacing MM     in-plane pixel size in mm (default ${DEFAULT_SPACING})`,
    `  --size PX        output width and height in pixels, 1..${MAX_SIZE} (default ${DEFAULT_SIZE})`,
    '  --label          a label map or scribbles: nearest neighbour, no normalisation, stored',
    '                   values and datatype kept (uint8 stays uint8)',
    '  --fill V         value where the output lies outside the input field of view (default 0;',
    '                   for scribbles give the unlabelled value, e.g. 4); images: before z-score',
    '  --json           print a JSON summary on stdout',
  ].join('\n'),
  options: {
    out: { type: 'string', short: 'o' },
    spacing: { type: 'string' },
    size: { type: 'string' },
    label: { type: 'boolean' },
    fill: { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    const [input] = positionals(args, 1, 'one NIfTI file')
    const out = niftiPath(args, 'out')
    const spacing = numberOption(args, 'spacing', DEFAULT_SPACING, (n) => n > 0)
    const size = numberOption(
      args,
      'size',
      DEFAULT_SIZE,
      (n) => Number.isInteger(n) && n >= 1 && n <= MAX_SIZE,
    )
    const fill = numberOption(args, 'fill', 0)
    const kind = flag(args, 'label') ? 'label' : 'image'
    const read = await readNiftiFile(input)()
    if (E.isLeft(read)) throw inputError(read.left)
    const v = read.right
    if (v.dims.length < 2)
      throw inputError(`${input}: needs at least 2 dimensions, has ${v.dims.length}`)
    const voxels = sliceCount(v) * size * size
    if (voxels > DEFAULT_LIMITS.maxVoxels)
      throw inputError(
        `${input}: ${sliceCount(v)} slices at ${size} x ${size} make ${voxels} voxels, more than the limit of ${DEFAULT_LIMITS.maxVoxels}`,
      )
    const result = preprocessVolume(v, {
      spacing: [spacing, spacing],
      size: [size, size],
      kind,
      fill,
    })
    const written = await writeNiftiFile(out, result)()
    if (E.isLeft(written)) throw runFailed(written.left)
    const { spacing: outSpacing, affine } = result.geometry
    if (flag(args, 'json'))
      io.out(
        `${JSON.stringify({ output: out, kind, dims: result.dims, spacing: outSpacing, affine, datatype: result.datatype })}\n`,
      )
    else
      io.out(
        `wrote ${out}: ${result.dims.join(' x ')} ${result.datatype}, spacing ${outSpacing.map((s) => +s.toFixed(4)).join(' x ')} mm\n`,
      )
  },
}
