/**
 * `maco export RUN_DIR -o MODEL.onnx`: a trained run's checkpoint as an ONNX file plus its
 * model card `MODEL.json` (classes, input spacing and size, normalisation, training recipe
 * and data, validation Dice per class, the ONNX file's SHA-256), both written atomically.
 * The card is checked with the codec the server and `maco predict` load it with.
 *
 * @example
 * maco export runs/acdc-cpu -o models/acdc.onnx --name acdc-maco
 * maco serve --models models      # then POST a NIfTI to /v1/models/acdc-maco/segment
 */
import * as E from 'fp-ts/lib/Either.js'
import { join } from 'node:path'
import { exportOnnx } from '../model/onnx-export.ts'
import { decodeModelCard, type ModelCard, type Postprocess, type Tta } from '../serve/model-card.ts'
import { postprocessOption, ttaOption } from './predict.ts'
import { sha256Hex } from '../serve/models.ts'
import type { Checkpoint } from '../train/checkpoint.ts'
import { modelWeights, readCheckpoint } from '../train/checkpoint.ts'
import { networkSpec } from '../train/recipe.ts'
import { CHECKPOINTS, Progress } from '../train/trainer.ts'
import { writeFileAtomic } from '../util/atomic.ts'
import {
  flag,
  inputError,
  modelOutput,
  numberOption,
  optionalString,
  positionals,
  requireString,
  usageError,
  type Command,
} from './command.ts'

/** The card of a checkpoint's model; validation only when it scored these very weights. */
export const modelCard = (
  name: string,
  c: Checkpoint<Progress>,
  sha256: string,
  inference: { readonly postprocess?: Postprocess; readonly tta?: Tta } = {},
): E.Either<string, ModelCard> => {
  const { config, origin, validation, epoch, stepInEpoch, step } = c.meta
  const scored = validation !== null && validation.epoch === epoch && stepInEpoch === 0
  return decodeModelCard({
    name,
    classes: config.classes.map((n, value) => ({ name: n, value })),
    input: { spacing: config.input.spacing, size: config.input.size },
    normalisation: 'zscore-slice',
    training: {
      recipe: `${origin.recipe} (${origin.pipeline}), ${epoch} epochs, ${step} steps`,
      data: origin.data,
    },
    ...(scored
      ? {
          validation: {
            dice: validation.classes,
            data: `${validation.volumes} validation volumes after epoch ${validation.epoch}`,
          },
        }
      : {}),
    onnx: { sha256 },
    ...(inference.postprocess ? { postprocess: inference.postprocess } : {}),
    ...(inference.tta ? { tta: inference.tta } : {}),
  })
}

/** Writes MODEL.onnx and MODEL.json for a checkpoint; returns the card. */
export const exportModel = async (
  runDir: string,
  out: string,
  o: {
    readonly name?: string
    readonly checkpoint?: 'best' | 'last'
    readonly opset?: number
    readonly postprocess?: Postprocess
    readonly tta?: Tta
  } = {},
): Promise<{ readonly card: ModelCard; readonly onnx: string; readonly cardPath: string }> => {
  const target = modelOutput(out)
  const name = o.name ?? target.name
  const path = join(runDir, CHECKPOINTS[o.checkpoint ?? 'best'])
  const checkpoint = await readCheckpoint(path, Progress)()
  if (E.isLeft(checkpoint)) throw inputError(checkpoint.left)
  const c = checkpoint.right
  let bytes: Uint8Array
  try {
    bytes = exportOnnx(networkSpec(c.meta.config), modelWeights(c), {
      opset: o.opset ?? 17,
      metadata: {
        'maco.recipe': c.meta.origin.recipe,
        'maco.classes': c.meta.config.classes.join(','),
      },
    })
  } catch (e) {
    throw inputError(`${path}: ${(e as Error).message}`)
  }
  const card = modelCard(name, c, await sha256Hex(bytes), o)
  if (E.isLeft(card)) throw usageError(card.left)
  await writeFileAtomic(target.onnx, bytes)
  await writeFileAtomic(target.card, `${JSON.stringify(card.right, null, 2)}\n`)
  return { card: card.right, onnx: target.onnx, cardPath: target.card }
}

export const exportCommand: Command = {
  name: 'export',
  summary: 'export a trained run as ONNX plus its model card',
  usage: 'maco export RUN_DIR -o MODEL.onnx [--name NAME] [--checkpoint best|last]',
  details: [
    'Options:',
    '  -o, --out MODEL.onnx  the ONNX file; the card goes beside it as MODEL.json',
    '  --name NAME           the model name (default: the file name without .onnx)',
    '  --checkpoint C        best (default: best validation Dice) or last',
    '  --opset N             ONNX opset, 17 (default) to 21',
    '  --postprocess P       none (default) or largest-component: what predict and serve',
    "                        apply to this model's masks (recorded on the card)",
    '  --tta T               none (default), flip or dihedral: the test-time augmentation',
    '                        predict and serve run for this model (recorded on the card)',
    '  --json                print {onnx, card, name, sha256, classes, validation} on stdout',
    '',
    'Serve the folder with `maco serve --models DIR`, or segment files with `maco predict`.',
  ].join('\n'),
  options: {
    out: { type: 'string', short: 'o' },
    name: { type: 'string' },
    checkpoint: { type: 'string' },
    opset: { type: 'string' },
    postprocess: { type: 'string' },
    tta: { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async (args, io) => {
    const [runDir] = positionals(args, 1, 'one run folder (made by maco train)')
    const out = requireString(args, 'out')
    const checkpoint = optionalString(args, 'checkpoint') ?? 'best'
    if (checkpoint !== 'best' && checkpoint !== 'last')
      throw usageError(`--checkpoint must be best or last, got '${checkpoint}'`)
    const opset = numberOption(args, 'opset', 17, (n) => Number.isInteger(n) && n >= 17 && n <= 21)
    const r = await exportModel(runDir, out, {
      name: optionalString(args, 'name'),
      checkpoint,
      opset,
      postprocess: postprocessOption(args),
      tta: ttaOption(args),
    })
    if (flag(args, 'json'))
      io.out(
        `${JSON.stringify({ onnx: r.onnx, card: r.cardPath, name: r.card.name, sha256: r.card.onnx.sha256, classes: r.card.classes, validation: r.card.validation ?? null })}\n`,
      )
    else io.out(`${r.onnx}\n${r.cardPath}\n`)
  },
}
