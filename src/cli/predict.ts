/**
 * `maco predict --model MODEL.onnx --input IN -o OUT`: segments NIfTI volumes with an
 * exported model (its card, `MODEL.json`, beside it), writing uint8 masks with each
 * input's geometry. A folder in gives a folder out, one `<case>_pred.nii.gz` per image,
 * named so that `maco eval` pairs them with their labels.
 *
 * @example
 * maco predict --model models/acdc.onnx --input ../shared/data/acdc/val -o runs/pred --json
 */
import * as E from 'fp-ts/lib/Either.js'
import { readdir, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { isNiftiName, ROLE_SUFFIXES } from '../eval/cases.ts'
import { loadModel } from '../serve/models.ts'
import { directoryStore } from '../serve/node.ts'
import { createSession, type RuntimeChoice, type Session } from '../serve/runtime.ts'
import { checkDims, classSummary, segmentVolume, type ClassSummary } from '../serve/segment.ts'
import { readNiftiFile, writeNiftiFile } from '../volume/nifti-file.ts'
import {
  POSTPROCESS_NAMES,
  TTA_NAMES,
  type ModelCard,
  type Postprocess,
  type Tta,
} from '../serve/model-card.ts'
import {
  choice,
  flag,
  inputError,
  numberOption,
  optionalString,
  requireString,
  runFailed,
  usageError,
  type Command,
  type Parsed,
} from './command.ts'
import { progress } from './progress.ts'

const RUNTIMES: readonly RuntimeChoice[] = ['auto', 'web', 'node']

/** Files in a folder that are not images: masks (`_label`, `_pred`, ...) and scribbles. */
const NOT_IMAGES = [...ROLE_SUFFIXES, '_scribble']

const stem = (file: string): string => basename(file).replace(/\.nii(\.gz)?$/i, '')

/** The case an image belongs to: its name without `.nii(.gz)` and a trailing `_image`. */
export const imageCase = (file: string): string => stem(file).replace(/(.)_image$/, '$1')

const isImage = (file: string): boolean =>
  isNiftiName(file) && !NOT_IMAGES.some((s) => stem(file).endsWith(s))

export const runtimeOption = (args: Parsed): RuntimeChoice =>
  choice(args, 'runtime', RUNTIMES) ?? 'auto'

export const threadsOption = (args: Parsed): number =>
  numberOption(args, 'threads', 1, (n) => Number.isInteger(n) && n >= 1 && n <= 64)

const isFolder = async (path: string): Promise<boolean | undefined> =>
  stat(path).then(
    (s) => s.isDirectory(),
    () => undefined,
  )

/** [input, output] paths: one file, or every image of a folder. */
const plan = async (input: string, out: string): Promise<[string, string][]> => {
  const folder = await isFolder(input)
  if (folder === undefined) throw inputError(`--input ${input}: no such file or folder`)
  const target = (file: string, dir: string) => join(dir, `${imageCase(file)}_pred.nii.gz`)
  if (!folder) {
    const outIsFile = isNiftiName(out) && (await isFolder(out)) !== true
    return [[input, outIsFile ? out : target(input, out)]]
  }
  if (isNiftiName(out)) throw usageError(`--input is a folder, so -o must be a folder, not ${out}`)
  const images = (await readdir(input)).filter(isImage).sort()
  if (images.length === 0)
    throw inputError(`--input ${input}: no NIfTI images (.nii, .nii.gz) in this folder`)
  return images.map((f) => [join(input, f), target(f, out)])
}

interface CaseResult {
  readonly case: string
  readonly input: string
  readonly output: string
  readonly dims: readonly number[]
  readonly seconds: number
  readonly classes: readonly ClassSummary[]
}

const openModel = async (
  model: string,
  runtime: RuntimeChoice,
  threads: number,
): Promise<{ card: ModelCard; session: Session }> => {
  if (!/\.onnx$/i.test(model)) throw usageError(`--model must be an .onnx file, got ${model}`)
  const loaded = await loadModel(
    directoryStore(dirname(model)),
    basename(model).replace(/\.onnx$/i, ''),
    (bytes) => createSession(bytes, { runtime, threads }),
  )()
  if (E.isLeft(loaded)) throw inputError(loaded.left)
  const session = await loaded.right.session().catch((e: unknown) => {
    throw inputError((e as Error).message)
  })
  return { card: loaded.right.card, session }
}

/** `--postprocess`, checked against the names the model card knows. */
export const postprocessOption = (args: Parsed): Postprocess | undefined => {
  const value = optionalString(args, 'postprocess')
  if (value !== undefined && !(POSTPROCESS_NAMES as readonly string[]).includes(value))
    throw usageError(`--postprocess must be ${POSTPROCESS_NAMES.join(' or ')}, got '${value}'`)
  return value as Postprocess | undefined
}

/** `--tta`: test-time augmentation. */
export const ttaOption = (args: Parsed): Tta | undefined => choice(args, 'tta', TTA_NAMES)

export const predict: Command = {
  name: 'predict',
  summary: 'segment NIfTI volumes with an exported model (file or folder)',
  usage: 'maco predict --model MODEL.onnx --input FILE|DIR -o OUT [options]',
  details: [
    'Options:',
    '  --model MODEL.onnx    exported model; its card MODEL.json must be beside it',
    '  --input FILE|DIR      a .nii/.nii.gz volume, or a folder of them (files ending in',
    '                        _label, _pred, _manual, _gt, _seg or _scribble are skipped)',
    '  -o, --out OUT         mask file (.nii or .nii.gz), or a folder that gets',
    '                        <case>_pred.nii.gz per image (case: name without _image)',
    '  --runtime R           auto (default: onnxruntime-node if it loads, else web), web, node',
    '  --threads N           inference threads (default 1)',
    '  --batch N             slices per inference run (default 8)',
    "  --postprocess P       none or largest-component (keep each class's largest 3D",
    "                        26-connected component); default: the model card's, else none",
    '  --tta T               test-time augmentation: none, flip (average over the slice and',
    '                        its 3 mirror images: 4x the inference time) or dihedral (also',
    "                        the transposes: 8x); default: the model card's, else none",
    '  --json                print {model, runtime, cases: [...]} on stdout',
    '',
    'Masks are uint8 with the model card class values and the input dims, affine,',
    'qform/sform and pixdim. Progress goes to stderr.',
  ].join('\n'),
  options: {
    model: { type: 'string' },
    input: { type: 'string' },
    out: { type: 'string', short: 'o' },
    runtime: { type: 'string' },
    threads: { type: 'string' },
    batch: { type: 'string' },
    postprocess: { type: 'string' },
    tta: { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    const model = requireString(args, 'model')
    const input = requireString(args, 'input')
    const out = requireString(args, 'out')
    const runtime = runtimeOption(args)
    const threads = threadsOption(args)
    const batch = numberOption(args, 'batch', 8, (n) => Number.isInteger(n) && n >= 1 && n <= 256)
    const postprocess = postprocessOption(args)
    const tta = ttaOption(args)
    const jobs = await plan(input, out)
    const { card, session } = await openModel(model, runtime, threads)
    io.err(
      `predict: model ${card.name} on ${session.runtimeName} (${session.threads} thread${session.threads > 1 ? 's' : ''})` +
        `${session.fallbackReason ? `; ${session.fallbackReason}` : ''}, ${jobs.length} volume${jobs.length > 1 ? 's' : ''}\n`,
    )
    const bar = progress({ label: 'predict', total: jobs.length, io })
    const results: CaseResult[] = []
    try {
      for (const [from, to] of jobs) {
        const start = performance.now()
        const volume = await readNiftiFile(from)()
        if (E.isLeft(volume)) throw inputError(volume.left)
        const dims = checkDims(volume.right.dims)
        if (E.isLeft(dims)) throw inputError(`${from}: ${dims.left}`)
        const mask = await segmentVolume({ card, session }, volume.right, {
          batch,
          postprocess,
          tta,
        })
        const written = await writeNiftiFile(to, mask)()
        if (E.isLeft(written)) throw runFailed(written.left)
        const seconds = (performance.now() - start) / 1000
        results.push({
          case: imageCase(from),
          input: from,
          output: to,
          dims: mask.dims,
          seconds: Math.round(seconds * 1000) / 1000,
          classes: classSummary(card, mask.data, mask.geometry.spacing),
        })
        bar.tick(`${imageCase(from)} ${seconds.toFixed(1)}s`)
      }
    } finally {
      bar.done()
      await session.release()
    }
    if (flag(args, 'json'))
      io.out(
        `${JSON.stringify({ model: card.name, runtime: session.runtimeName, cases: results })}\n`,
      )
    else for (const r of results) io.out(`${r.output}\n`)
  },
}
