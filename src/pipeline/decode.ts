/**
 * Decoding plain JSON (pipeline configs, dataset configs, stage parameters) with io-ts, with
 * errors a user can act on: "spacing must be a positive number, got -1", "unknown option
 * 'spacng' (options: spacing, mode)", never io-ts's raw context dump.
 *
 * @example
 * const Params = t.type({ spacing: positive, mode: t.keyof({ bilinear: null, nearest: null }) })
 * decodeStrict(Params)({ spacing: -1, mode: 'nearest' })
 * // Left('spacing must be a positive number, got -1')
 * decodeTagged('kind', { acdc: Acdc, folder: Folder })({ kind: 'acdc', root: 'data/acdc' })
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'

const PRIMITIVE_WORDS: Readonly<Record<string, string>> = {
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  UnknownRecord: 'an object',
  UnknownArray: 'a list',
}

const isLiteralUnion = (d: t.Decoder<unknown, unknown>): d is t.UnionType<t.LiteralC<string>[]> =>
  d instanceof t.UnionType && d.types.every((m: unknown) => m instanceof t.LiteralType)

/** What a codec expects, in words. */
export const words = (d: t.Decoder<unknown, unknown>): string =>
  d instanceof t.KeyofType
    ? `one of ${Object.keys(d.keys)
        .map((k) => JSON.stringify(k))
        .join(', ')}`
    : isLiteralUnion(d)
      ? `one of ${d.types.map((m) => JSON.stringify(m.value)).join(', ')}`
      : d instanceof t.ArrayType
        ? `a list of ${plural(d.type)}`
        : propsOf(d) !== undefined
          ? 'an object'
          : (PRIMITIVE_WORDS[d.name] ?? d.name)

/** "a positive number" -> "positive numbers", for lists. */
const plural = (d: t.Decoder<unknown, unknown>): string => `${words(d).replace(/^an? /, '')}s`

const show = (u: unknown): string => {
  const s = JSON.stringify(u) ?? String(u)
  return s.length > 60 ? `${s.slice(0, 57)}...` : s
}

/** A codec that narrows `base` by `ok`; `name` is what error messages say was expected. */
export const refine = <A, O>(base: t.Type<A, O, unknown>, ok: (a: A) => boolean, name: string) =>
  new t.Type<A, O, unknown>(
    name,
    (u): u is A => base.is(u) && ok(u),
    (u, c) =>
      pipe(
        base.validate(u, c),
        E.chain((a) => (ok(a) ? t.success(a) : t.failure(u, c))),
      ),
    base.encode,
  )

export const positive = refine(t.number, (n) => Number.isFinite(n) && n > 0, 'a positive number')
export const positiveInt = refine(
  t.number,
  (n) => Number.isInteger(n) && n > 0,
  'a whole number >= 1',
)
export const nonNegativeInt = refine(
  t.number,
  (n) => Number.isInteger(n) && n >= 0,
  'a whole number >= 0',
)
export const nonEmptyString = refine(t.string, (s) => s.length > 0, 'a non-empty string')
export const nonEmptyArray = <A, O>(item: t.Type<A, O, unknown>) =>
  refine(t.array(item), (xs) => xs.length > 0, `a non-empty list of ${plural(item)}`)

/** One error as "path must be X, got Y", the path in the user's terms (no union member indices). */
const describeError = (e: t.ValidationError): { path: string; text: string } => {
  let path = ''
  let expected = e.context[0]?.type
  for (let i = 1; i < e.context.length; i++) {
    const parent = e.context[i - 1].type
    if (parent instanceof t.UnionType || parent instanceof t.IntersectionType) continue
    const { key } = e.context[i]
    path += /^\d+$/.test(key) ? `[${key}]` : path === '' ? key : `.${key}`
    expected = e.context[i].type
  }
  const want = expected ? words(expected) : 'valid'
  const text =
    e.value === undefined
      ? `${path || 'value'} is missing (expected ${want})`
      : `${path || 'value'} must be ${want}, got ${show(e.value)}`
  return { path, text }
}

/** io-ts errors as one line; one message per path (a failed union reports once). */
export const describeErrors = (errors: t.Errors): string => {
  const seen = new Map<string, string>()
  for (const e of errors) {
    const d = describeError(e)
    if (!seen.has(d.path)) seen.set(d.path, d.text)
  }
  return [...seen.values()].join('; ')
}

type Props = Readonly<Record<string, t.Decoder<unknown, unknown>>>

/** The fields a codec for an object knows, or `undefined` when it cannot say (then any key goes). */
const propsOf = (d: t.Decoder<unknown, unknown>): Props | undefined => {
  if (d instanceof t.InterfaceType || d instanceof t.PartialType) return d.props as Props
  if (d instanceof t.ExactType || d instanceof t.ReadonlyType || d instanceof t.RefinementType)
    return propsOf(d.type)
  if (d instanceof t.IntersectionType) {
    const parts = (d.types as t.Decoder<unknown, unknown>[]).map(propsOf)
    return parts.every((p) => p !== undefined) ? Object.assign({}, ...parts) : undefined
  }
  return undefined
}

export const isObject = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === 'object' && u !== null && !Array.isArray(u)

/** The first key of `u`, at any depth of nested objects, that `d` does not know. */
const unknownKeysError = (
  d: t.Decoder<unknown, unknown>,
  u: unknown,
  ignore: readonly string[],
  path = '',
): string | undefined => {
  const props = propsOf(d)
  if (props === undefined || !isObject(u)) return undefined
  const known = Object.keys(props)
  const extra = Object.keys(u).filter((k) => !known.includes(k) && !ignore.includes(k))
  if (extra.length > 0) {
    const list = known.length > 0 ? ` (options: ${known.join(', ')})` : ' (it takes none)'
    const keys = extra.map((k) => `'${k}'`).join(', ')
    return `${path === '' ? '' : `${path}: `}unknown option${extra.length > 1 ? 's' : ''} ${keys}${list}`
  }
  for (const k of known) {
    const inner = unknownKeysError(props[k], u[k], [], path === '' ? k : `${path}.${k}`)
    if (inner !== undefined) return inner
  }
  return undefined
}

/**
 * Decodes with `codec` and rejects keys it does not know (a typo is an error, not a silently
 * ignored option). `ignore` lists keys that belong to the caller, such as a `kind` tag.
 */
export const decodeStrict =
  <A>(codec: t.Decoder<unknown, A>, ignore: readonly string[] = []) =>
  (u: unknown): E.Either<string, A> => {
    const extra = unknownKeysError(codec, u, ignore)
    return extra !== undefined ? E.left(extra) : pipe(codec.decode(u), E.mapLeft(describeErrors))
  }

/**
 * Decodes an object whose `tag` key picks its codec: `{ kind: 'acdc', ... }`. Reports an
 * unknown or missing tag by listing the known ones, then decodes strictly.
 */
type Decoded<D> = D extends t.Decoder<unknown, infer A> ? A : never

export const decodeTagged =
  <Codecs extends Readonly<Record<string, t.Decoder<unknown, unknown>>>>(
    tag: string,
    codecs: Codecs,
  ) =>
  (u: unknown): E.Either<string, { [K in keyof Codecs]: Decoded<Codecs[K]> }[keyof Codecs]> => {
    const known = Object.keys(codecs).join(', ')
    if (typeof u !== 'object' || u === null || Array.isArray(u))
      return E.left(`expected an object with a '${tag}' (one of ${known}), got ${show(u)}`)
    const value = (u as Record<string, unknown>)[tag]
    if (typeof value !== 'string' || !Object.hasOwn(codecs, value))
      return E.left(
        value === undefined
          ? `'${tag}' is missing (one of ${known})`
          : `unknown ${tag} ${show(value)} (one of ${known})`,
      )
    return decodeStrict(codecs[value], [tag])(u) as E.Either<
      string,
      { [K in keyof Codecs]: Decoded<Codecs[K]> }[keyof Codecs]
    >
  }
