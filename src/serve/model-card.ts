/**
 * The model card: the JSON file next to an exported `.onnx` that says what the network
 * expects (in-plane spacing, input size, normalisation) and what it outputs (classes), how
 * it was trained and validated, and the SHA-256 of the ONNX bytes it describes. The server
 * and `maco predict` trust nothing about a model that is not on its card, so the card is
 * decoded with a codec and every error is reported in words.
 *
 * @example
 * pipe(JSON.parse(text), decodeModelCard) // Either<string, ModelCard>
 * // {"name":"acdc-maco","classes":[{"name":"background","value":0},{"name":"RV","value":1}],
 * //  "input":{"spacing":[1.37,1.37],"size":[256,256]},"normalisation":"zscore-slice",
 * //  "training":{"recipe":"maco","data":"acdc train35"},"onnx":{"sha256":"9f2c..."}}
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'

const positive = t.refinement(t.number, (n) => Number.isFinite(n) && n > 0, 'a positive number')
const pixels = t.refinement(
  t.number,
  (n) => Number.isInteger(n) && n > 0 && n <= 4096,
  'a size in pixels (1..4096)',
)
const classValue = t.refinement(
  t.number,
  (n) => Number.isInteger(n) && n >= 0 && n <= 255,
  'a label value 0..255',
)
const modelName = t.refinement(
  t.string,
  (s) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(s),
  'a model name (letters, digits, . _ -)',
)
const sha256 = t.refinement(t.string, (s) => /^[0-9a-f]{64}$/.test(s), 'a SHA-256 in lowercase hex')

const ClassCodec = t.type({ name: t.string, value: classValue })

/** Per-class metrics keyed by class name (e.g. `{"RV": 0.87, "MYO": 0.84}`). */
const PerClass = t.record(t.string, t.number)

export const ModelCardCodec = t.intersection([
  t.type({
    name: modelName,
    /** In output-channel order: channel c of the network is `classes[c]`. */
    classes: t.array(ClassCodec),
    input: t.type({
      /** Target in-plane spacing in mm, [sx, sy]. */
      spacing: t.tuple([positive, positive]),
      /** Network input [width, height] in pixels. */
      size: t.tuple([pixels, pixels]),
    }),
    normalisation: t.literal('zscore-slice'),
    training: t.type({ recipe: t.string, data: t.string }),
    onnx: t.type({ sha256 }),
  }),
  t.partial({
    /**
     * How the model scored on held-out volumes; without `dice` (a fine-tune on scribbles
     * only), `data` says why none was measured.
     */
    validation: t.partial({ dice: PerClass, hd95: PerClass, asd: PerClass, data: t.string }),
    /** The model this one was fine-tuned from (its name). */
    parent: t.string,
    /** Clean-up of the mask after the argmax (src/volume/components.ts); absent: none. */
    postprocess: t.keyof({ none: null, 'largest-component': null }),
    /** Test-time augmentation (src/serve/tta.ts); absent: none. */
    tta: t.keyof({ none: null, flip: null, dihedral: null }),
  }),
])

export type ModelCard = t.TypeOf<typeof ModelCardCodec>
export type Postprocess = NonNullable<ModelCard['postprocess']>
export const POSTPROCESS_NAMES: readonly Postprocess[] = ['none', 'largest-component']
export type Tta = NonNullable<ModelCard['tta']>
export const TTA_NAMES: readonly Tta[] = ['none', 'flip', 'dihedral']

/** `input.spacing.0`: field names and indices, skipping the intersection's member indices. */
const pathOf = (e: t.ValidationError): string =>
  e.context
    .filter((_, i) => i > 0 && !(e.context[i - 1].type instanceof t.IntersectionType))
    .map((c) => c.key)
    .join('.')

const describe = (e: t.ValidationError): string => {
  const where = pathOf(e)
  const expected = e.context[e.context.length - 1]?.type.name ?? 'a value'
  const got = e.value === undefined ? 'nothing' : JSON.stringify(e.value)?.slice(0, 40)
  return `${where || 'card'}: expected ${expected}, got ${got}`
}

/** Decodes a parsed card; the error names the first offending field. Classes must be distinct. */
export const decodeModelCard = (u: unknown): E.Either<string, ModelCard> =>
  pipe(
    ModelCardCodec.decode(u),
    E.mapLeft((errors) => `invalid model card: ${describe(errors[0])}`),
    E.filterOrElse(
      (card) => card.classes.length >= 2,
      () => 'invalid model card: classes: at least 2 classes are needed',
    ),
    E.filterOrElse(
      (card) => new Set(card.classes.map((c) => c.value)).size === card.classes.length,
      () => 'invalid model card: classes: values must be distinct',
    ),
  )

/** Parses card JSON text and decodes it. */
export const parseModelCard = (text: string): E.Either<string, ModelCard> =>
  pipe(
    E.tryCatch(
      () => JSON.parse(text) as unknown,
      (e) => `invalid model card: not JSON (${(e as Error).message.split('\n')[0]})`,
    ),
    E.chain(decodeModelCard),
  )
