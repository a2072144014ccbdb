/**
 * The network the inference and serving benchmarks run, as a one-model store: a given
 * `.onnx` file with its card beside it, else the shipped `models/acdc-maco.onnx` when it
 * exists, else the default UNet (DESIGN.md, 1,813,764 parameters) with seeded random
 * weights. Random weights cost what trained ones do, so the timings still stand; the
 * results say which it was.
 *
 * @example
 * const model = await benchModel(undefined, 256)()  // Right({ store, base: 'acdc-maco', trained: true }) or the random UNet
 * await model.store.read(`${model.base}.onnx`)     // the ONNX bytes
 */
import { existsSync } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { CARDIAC_CLASSES } from '../data/dataset.ts'
import { exportOnnx } from '../model/onnx-export.ts'
import { initialWeights } from '../model/tfjs-unet.ts'
import { unetSpec } from '../model/unet.ts'
import { decodeModelCard } from '../serve/model-card.ts'
import { sha256Hex, type ModelStore } from '../serve/models.ts'
import { directoryStore } from '../serve/node.ts'

export const SHIPPED_MODEL = fileURLToPath(new URL('../../models/acdc-maco.onnx', import.meta.url))

/** Pass as the model choice to force the random-weight UNet. */
export const RANDOM_MODEL = 'random'

export interface BenchModel {
  /** Holds exactly `BASE.onnx` and `BASE.json`. */
  readonly store: ModelStore
  readonly base: string
  readonly trained: boolean
  /** What to give `benchModel` to get this model again (another process does, for infer). */
  readonly choice: string
}

const cardPath = (onnx: string) => onnx.replace(/\.onnx$/i, '.json')

/** The default UNet with seeded random weights, its card saying so, `size` px at 1.37 mm. */
const randomModel = async (size: number): Promise<BenchModel> => {
  const spec = unetSpec()
  const onnx = exportOnnx(spec, initialWeights(spec, 'bench'))
  const card = decodeModelCard({
    name: 'random-unet',
    classes: CARDIAC_CLASSES.map((name, value) => ({ name, value })),
    input: { spacing: [1.37, 1.37], size: [size, size] },
    normalisation: 'zscore-slice',
    training: { recipe: 'none: seeded random weights (benchmark)', data: 'none' },
    onnx: { sha256: await sha256Hex(onnx) },
  })
  if (E.isLeft(card)) throw new RangeError(card.left)
  const files: Readonly<Record<string, Uint8Array>> = {
    'random-unet.onnx': onnx,
    'random-unet.json': new TextEncoder().encode(JSON.stringify(card.right)),
  }
  return {
    store: { where: 'memory', list: async () => Object.keys(files), read: async (f) => files[f] },
    base: 'random-unet',
    trained: false,
    choice: RANDOM_MODEL,
  }
}

/** `FILE.onnx` and its card `FILE.json`, and nothing else of their folder. */
const fileModel = (onnx: string): BenchModel => {
  const folder = directoryStore(dirname(onnx))
  const base = basename(onnx).replace(/\.onnx$/i, '')
  const files = [`${base}.onnx`, `${base}.json`]
  return {
    store: { ...folder, list: async () => files },
    base,
    trained: true,
    choice: resolve(onnx),
  }
}

/**
 * Whether `choice` names a usable model: `random`, `undefined` (the default), or an existing
 * `.onnx` file with its card beside it. Left: why not, in a line.
 */
export const checkModelChoice = (
  choice: string | undefined,
): E.Either<string, string | undefined> =>
  choice === undefined || choice === RANDOM_MODEL
    ? E.right(choice)
    : !/\.onnx$/i.test(choice)
      ? E.left(`--model must be an .onnx file or '${RANDOM_MODEL}', got ${choice}`)
      : !existsSync(choice)
        ? E.left(`--model ${choice}: no such file`)
        : !existsSync(cardPath(choice))
          ? E.left(`--model ${choice}: no model card ${cardPath(choice)} beside it`)
          : E.right(choice)

/**
 * `choice`: an `.onnx` file, `random`, or `undefined` for the shipped model when there is
 * one (else random). `size` is the random model's input size. Left: why a file cannot be used.
 */
export const benchModel =
  (choice: string | undefined, size: number): TE.TaskEither<string, BenchModel> =>
  async () => {
    const checked = checkModelChoice(choice)
    if (E.isLeft(checked)) return checked
    const file =
      checked.right ??
      (existsSync(SHIPPED_MODEL) && existsSync(cardPath(SHIPPED_MODEL)) ? SHIPPED_MODEL : undefined)
    return E.right(
      file === undefined || file === RANDOM_MODEL ? await randomModel(size) : fileModel(file),
    )
  }
