/**
 * `maco figure`: one PNG for a report, a row per slice and a column per layer: the image,
 * the image with the scribbles, with the ground truth and with each prediction. The
 * composition is `figure` in src/eval/figure.ts; this reads the files, names them in errors
 * and writes the PNG atomically.
 *
 * @example
 * maco figure --image case_image.nii.gz --scribble case_scribble.nii.gz \
 *   --label case_label.nii.gz --pred MaCo=pred/case.nii.gz --slices auto -o case.png
 */
import * as E from 'fp-ts/lib/Either.js'
import { PNG } from 'pngjs'
import { DEFAULT_FIGURE, figure, type Overlay } from '../eval/figure.ts'
import { writeFileAtomic } from '../util/atomic.ts'
import { readNiftiFile } from '../volume/nifti-file.ts'
import type { Volume } from '../volume/volume.ts'
import {
  flag,
  inputError,
  numberOption,
  optionalString,
  positionals,
  requireString,
  runFailed,
  usageError,
  type Command,
  type Parsed,
} from './command.ts'

const read = async (path: string): Promise<Volume> => {
  const r = await readNiftiFile(path)()
  if (E.isLeft(r)) throw inputError(r.left)
  return r.right
}

/** `NAME=PATH` names a prediction's column; a bare path (or one whose prefix holds a `/`) is unnamed. */
const predictionArg = (arg: string): { title?: string; path: string } => {
  const m = /^([^=/\\]+)=(.+)$/.exec(arg)
  return m ? { title: m[1], path: m[2] } : { path: arg }
}

const strings = (args: Parsed, name: string): string[] => {
  const v = args.values[name]
  return (Array.isArray(v) ? v : v === undefined ? [] : [v]).map(String)
}

const sliceNumber = (s: string): number => {
  const z = Number(s)
  if (s.trim() === '' || !Number.isInteger(z) || z < 0)
    throw usageError(`a slice must be a z index (0, 1, ...), got '${s}'`)
  return z
}

/** --slice Z (repeatable) or --slices auto|Z,Z,...; auto when neither is given. */
const slicesArg = (args: Parsed): readonly number[] | 'auto' => {
  const single = strings(args, 'slice')
  const list = optionalString(args, 'slices')
  if (single.length > 0 && list !== undefined)
    throw usageError('give either --slice or --slices, not both')
  if (single.length > 0) return single.map(sliceNumber)
  if (list === undefined || list === 'auto') return 'auto'
  return list.split(',').map(sliceNumber)
}

export const figureCommand: Command = {
  name: 'figure',
  summary: 'a PNG of slices: image, scribbles, ground truth and predictions side by side',
  usage:
    'maco figure --image IMG.nii.gz [--scribble S.nii.gz] [--label GT.nii.gz] [--pred [NAME=]P.nii.gz ...] [--slice Z ... | --slices auto|Z,Z,...] -o OUT.png [--title T] [--json]',
  details: [
    'One row per slice; columns: the image alone (grey, windowed to the 1st-99th percentile of',
    'the volume), the scribble strokes over it (background yellow, RV red, MYO green, LV blue;',
    'unlabelled left out), the ground truth and each prediction over it (classes 1.. in the',
    'same colours, partly transparent; background left out). Orientation: voxel order, x to the',
    'right and y down (not reoriented to the scanner axes). Panels keep the in-plane aspect of the',
    'voxel spacing and are upscaled by an integer (nearest) factor to at least --min-height px.',
    '',
    'Options:',
    '  --image FILE        the image (NIfTI); every other volume must have its dims',
    '  --scribble FILE     scribbles (classes 0.., --unlabelled for unannotated pixels)',
    '  --label FILE        ground truth label map (0 background)',
    '  --pred [NAME=]FILE  a predicted label map, repeatable; NAME heads its column',
    '                      (default "prediction", numbered when there are several)',
    '  --slice Z           a z index to show (0-based), repeatable, rows in the order given',
    '  --slices auto|LIST  auto (the default): 3 slices spread through the heart, found from the',
    '                      label, else the scribble, else the whole stack; or z indices "2,5,8"',
    '  -o, --out FILE      the PNG to write',
    '  --title T           a line of text above the figure (upper case, A-Z 0-9 and -_.,:=()/+%)',
    `  --unlabelled V      scribble value of unannotated pixels (default ${DEFAULT_FIGURE.unlabelled})`,
    `  --min-height PX     smallest panel height (default ${DEFAULT_FIGURE.minPanelHeight})`,
    '  --json              print {"output","width","height","slices","columns","window"} on stdout',
  ].join('\n'),
  options: {
    image: { type: 'string' },
    scribble: { type: 'string' },
    label: { type: 'string' },
    pred: { type: 'string', multiple: true },
    slice: { type: 'string', multiple: true },
    slices: { type: 'string' },
    out: { type: 'string', short: 'o' },
    title: { type: 'string' },
    unlabelled: { type: 'string' },
    'min-height': { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    positionals(args, 0, 'options only (--image ... -o OUT.png)')
    const imagePath = requireString(args, 'image')
    const out = requireString(args, 'out')
    if (!/\.png$/i.test(out)) throw usageError(`--out must end in .png, got '${out}'`)
    const slices = slicesArg(args)
    const unlabelled = numberOption(args, 'unlabelled', DEFAULT_FIGURE.unlabelled, Number.isInteger)
    const minPanelHeight = numberOption(
      args,
      'min-height',
      DEFAULT_FIGURE.minPanelHeight,
      (n) => Number.isInteger(n) && n >= 1 && n <= 4096,
    )
    const predictions = strings(args, 'pred').map(predictionArg)
    const scribble = optionalString(args, 'scribble')
    const label = optionalString(args, 'label')
    const wanted: { title: string; kind: Overlay['kind']; path: string }[] = [
      ...(scribble !== undefined
        ? [{ title: 'scribble', kind: 'strokes' as const, path: scribble }]
        : []),
      ...(label !== undefined
        ? [{ title: 'ground truth', kind: 'mask' as const, path: label }]
        : []),
      ...predictions.map((p, i) => ({
        title: p.title ?? (predictions.length > 1 ? `prediction ${i + 1}` : 'prediction'),
        kind: 'mask' as const,
        path: p.path,
      })),
    ]
    const image = await read(imagePath)
    const overlays: Overlay[] = []
    for (const w of wanted)
      overlays.push({ title: w.title, kind: w.kind, volume: await read(w.path), source: w.path })
    const title = optionalString(args, 'title')
    const made = figure({
      image,
      overlays,
      slices,
      options: { unlabelled, minPanelHeight, ...(title !== undefined ? { title } : {}) },
    })
    if (E.isLeft(made)) throw inputError(made.left)
    const f = made.right
    const png = new PNG({ width: f.width, height: f.height })
    png.data.set(f.rgba)
    await writeFileAtomic(out, PNG.sync.write(png)).catch((e: Error) => {
      throw runFailed(`${out}: ${e.message.split('\n')[0]}`)
    })
    const columns = ['image', ...overlays.map((o) => o.title)]
    if (flag(args, 'json'))
      io.out(
        `${JSON.stringify({ output: out, width: f.width, height: f.height, slices: f.slices, columns, window: f.window })}\n`,
      )
    else
      io.out(
        `wrote ${out}: ${f.width} x ${f.height} px, slices ${f.slices.join(', ')}; columns ${columns.join(', ')}\n`,
      )
  },
}
