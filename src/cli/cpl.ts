/**
 * `maco cpl SCRIBBLE -o OUT.nii.gz`: the continuous pseudo labels of every slice of a scribble
 * volume at its own resolution, as a float32 NIfTI (x, y, z, class) with the scribble's
 * geometry; `--png DIR` also draws each slice for a human to check.
 *
 * @example
 * maco cpl patient001_frame01_scribble.nii.gz -o cpl.nii.gz --png cpl-png
 */
import { basename, join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { PNG } from 'pngjs'
import {
  continuousPseudoLabelVolume,
  cplOptionsProblem,
  DEFAULT_CPL,
  type CplOptions,
} from '../maco/cpl.ts'
import { writeFileAtomic } from '../util/atomic.ts'
import { readNiftiFile, writeNiftiFile } from '../volume/nifti-file.ts'
import { isIdentityScaling, realValues, spatialDims, type Volume } from '../volume/volume.ts'
import {
  flag,
  inputError,
  niftiPath,
  numberOption,
  optionalString,
  positionals,
  runFailed,
  usageError,
  type Command,
} from './command.ts'
import { progress } from './progress.ts'

/** Stroke colours by class: background yellow, then red, green, blue (RV, MYO, LV), ... */
const PALETTE: readonly (readonly [number, number, number])[] = [
  [255, 210, 0],
  [255, 50, 50],
  [40, 220, 40],
  [60, 140, 255],
  [230, 60, 230],
  [0, 220, 220],
]
const colourOf = (c: number) => PALETTE[c % PALETTE.length]

const WHITE = [255, 255, 255] as const
const GAP = 4
const BAND = 6

/**
 * One slice as a PNG: a panel per class, side by side, each the class map in grey (white = 1,
 * black = 0) under a band in the class colour, with the scribble drawn over it: the panel's
 * own class at full colour, the other classes dimmed. x to the right, y down (voxel order).
 */
const slicePicture = (
  scribble: ArrayLike<number>,
  cpl: Float32Array,
  volumeSize: number,
  offset: number,
  width: number,
  height: number,
  classes: number,
): Uint8Array => {
  const scale = Math.max(1, Math.round(400 / Math.max(width, height)))
  const pw = width * scale
  const png = new PNG({ width: classes * pw + (classes - 1) * GAP, height: height * scale + BAND })
  png.data.fill(0)
  for (let i = 3; i < png.data.length; i += 4) png.data[i] = 255
  const put = (x: number, y: number, [r, g, b]: readonly [number, number, number]) => {
    const i = (y * png.width + x) * 4
    png.data[i] = r
    png.data[i + 1] = g
    png.data[i + 2] = b
  }
  for (let c = 0; c < classes; c++) {
    const left = c * (pw + GAP)
    for (let y = 0; y < BAND; y++) for (let x = 0; x < pw; x++) put(left + x, y, colourOf(c))
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        const i = y * width + x
        const s = scribble[offset + i]
        const y01 = cpl[c * volumeSize + offset + i]
        const tint = colourOf(c).map((v) => Math.round(v * y01)) as [number, number, number]
        const rgb: readonly [number, number, number] =
          Number.isInteger(s) && s >= 0 && s < classes
            ? s === c
              ? WHITE
              : (colourOf(s).map((v, k) => Math.round(v * 0.5 + tint[k] * 0.5)) as [
                  number,
                  number,
                  number,
                ])
            : tint
        for (let dy = 0; dy < scale; dy++)
          for (let dx = 0; dx < scale; dx++) put(left + x * scale + dx, BAND + y * scale + dy, rgb)
      }
  }
  return PNG.sync.write(png)
}

/** The first voxel value that is neither a class nor the unlabelled value, if any. */
const foreignValue = (values: ArrayLike<number>, o: CplOptions): number | undefined => {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (v !== o.unlabelled && !(Number.isInteger(v) && v >= 0 && v < o.classes)) return v
  }
  return undefined
}

const readScribble = async (path: string): Promise<Volume> => {
  const r = await readNiftiFile(path)()
  if (E.isLeft(r)) throw inputError(r.left)
  const v = r.right
  if (v.dims.length > 3 && v.dims.slice(3).some((n) => n > 1))
    throw inputError(
      `${path}: a scribble is a 2D or 3D label map, this file has dims ${v.dims.join('x')}`,
    )
  return v
}

export const cpl: Command = {
  name: 'cpl',
  summary: 'continuous pseudo labels of a scribble volume (4D NIfTI, optional PNGs)',
  usage:
    'maco cpl SCRIBBLE -o OUT.nii.gz [--alpha 0.1] [--floor 0.05] [--unlabelled 4] [--classes 4] [--png DIR] [--json]',
  details: [
    'Per slice and class c: Y_c = exp(-alpha * D_c), D_c the exact distance in pixels to the',
    'nearest scribble pixel of class c; 0 where below the floor or where c has no scribble.',
    '',
    'Options:',
    "  -o, --out FILE      output NIfTI (.nii or .nii.gz): float32 (x, y, z, class), the scribble's geometry",
    `  --alpha A           decay per pixel (default ${DEFAULT_CPL.alpha})`,
    `  --floor F           values below F become 0 (default ${DEFAULT_CPL.floor})`,
    `  --unlabelled V      scribble value of unannotated pixels (default ${DEFAULT_CPL.unlabelled})`,
    `  --classes N         classes 0..N-1, background included (default ${DEFAULT_CPL.classes})`,
    '  --png DIR           also write DIR/<case>_z<k>.png per slice: one panel per class (grey =',
    '                      the class map, white = 1) under a band in the class colour, scribbles',
    "                      drawn in their class colours (the panel's own class bright)",
    '  --json              print a JSON summary on stdout',
  ].join('\n'),
  options: {
    out: { type: 'string', short: 'o' },
    alpha: { type: 'string' },
    floor: { type: 'string' },
    unlabelled: { type: 'string' },
    classes: { type: 'string' },
    png: { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    const [input] = positionals(args, 1, 'one scribble file')
    const out = niftiPath(args, 'out')
    const options: CplOptions = {
      alpha: numberOption(args, 'alpha', DEFAULT_CPL.alpha),
      floor: numberOption(args, 'floor', DEFAULT_CPL.floor),
      unlabelled: numberOption(args, 'unlabelled', DEFAULT_CPL.unlabelled),
      classes: numberOption(args, 'classes', DEFAULT_CPL.classes),
    }
    const problem = cplOptionsProblem(options)
    if (problem) throw usageError(problem)
    const scribble = await readScribble(input)
    const values = isIdentityScaling(scribble.scaling) ? scribble.data : realValues(scribble)
    const foreign = foreignValue(values, options)
    if (foreign !== undefined)
      throw inputError(
        `${input}: holds the value ${foreign}, neither a class (0..${options.classes - 1}) nor unlabelled (${options.unlabelled}); see --classes and --unlabelled`,
      )
    const labels = continuousPseudoLabelVolume(scribble, options)
    const written = await writeNiftiFile(out, labels)()
    if (E.isLeft(written)) throw runFailed(written.left)
    const [nx, ny, nz] = spatialDims(scribble)
    const pngDir = optionalString(args, 'png')
    const pictures: string[] = []
    if (pngDir !== undefined) {
      const name = basename(input).replace(/\.nii(\.gz)?$/i, '')
      const p = progress({ label: 'png', total: nz, io })
      for (let z = 0; z < nz; z++) {
        const file = join(pngDir, `${name}_z${String(z).padStart(2, '0')}.png`)
        const bytes = slicePicture(
          values,
          labels.data,
          nx * ny * nz,
          z * nx * ny,
          nx,
          ny,
          options.classes,
        )
        await writeFileAtomic(file, bytes).catch((e: Error) => {
          throw runFailed(`${file}: ${e.message}`)
        })
        pictures.push(file)
        p.tick()
      }
      p.done()
    }
    if (flag(args, 'json'))
      io.out(`${JSON.stringify({ output: out, dims: labels.dims, options, png: pictures })}\n`)
    else
      io.out(
        `wrote ${out}: ${labels.dims.join(' x ')} float32${pictures.length ? `, ${pictures.length} PNGs in ${pngDir}` : ''}\n`,
      )
  },
}
