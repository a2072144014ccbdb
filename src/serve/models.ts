/**
 * The model registry: which models a server offers, each an ONNX file with its model card
 * (`NAME.onnx` + `NAME.json`). Where the bytes live is abstracted as a `ModelStore` (a
 * folder in Node, an R2 bucket or static assets on Workers), so this module has no I/O of
 * its own and runs everywhere.
 *
 * Cards are read and checked when the registry loads, so a broken card stops a server at
 * start. A model's session is opened on first use (Workers pay only for what a request
 * needs), after checking the ONNX bytes against the card's SHA-256, and is shared by all
 * requests. Its runs are queued one after another: a session then never sees interleaved
 * calls (onnxruntime-web's wasm does not allow them), every request gets the answer it
 * would get alone, and the runtime's own threads still parallelise each run.
 *
 * @example
 * const registry = await loadRegistry(store, (bytes) => createSession(bytes, { runtime: 'auto' }))()
 * // Right({ cards: [...], find: (name) => Model | undefined, release })
 * const session = await registry.find('acdc-maco')!.session()
 */
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import type { Session } from './runtime.ts'
import { parseModelCard, type ModelCard } from './model-card.ts'
import { errorLine } from '../util/error-line.ts'

/** Read access to the files that hold models; `read` resolves `undefined` for a missing file. */
export interface ModelStore {
  /** File names in the store (no folders), e.g. `acdc.json`, `acdc.onnx`. */
  readonly list: () => Promise<readonly string[]>
  readonly read: (file: string) => Promise<Uint8Array | undefined>
  /** How to name the store in messages (a folder path, a bucket name). */
  readonly where: string
}

export type SessionFactory = (modelBytes: Uint8Array) => Promise<Session>

export interface Model {
  readonly card: ModelCard
  /** The shared session, opened on first call; runs are queued one at a time. */
  readonly session: () => Promise<Session>
  /** The ONNX bytes, read again on each call and checked against the card's SHA-256. */
  readonly onnx: () => Promise<Uint8Array>
}

export interface ModelRegistry {
  readonly cards: readonly ModelCard[]
  readonly find: (name: string) => Model | undefined
  /** Releases every opened session. */
  readonly release: () => Promise<void>
}

export const sha256Hex = async (bytes: Uint8Array): Promise<string> => {
  const digest = new Uint8Array(
    await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>),
  )
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')
}

/** The same session, its runs chained so that each starts when the previous one has ended. */
export const queued = (session: Session): Session => {
  let tail: Promise<unknown> = Promise.resolve()
  return {
    ...session,
    run: (input, dims) => {
      const result = tail.then(() => session.run(input, dims))
      tail = result.catch(() => undefined)
      return result
    },
  }
}

/** `bytes`, refused when they are not the ones the card's SHA-256 names. */
const checked = async (card: ModelCard, bytes: Uint8Array): Promise<Uint8Array> => {
  const actual = await sha256Hex(bytes)
  if (actual !== card.onnx.sha256)
    throw new Error(
      `the ONNX file's SHA-256 ${actual.slice(0, 12)}... differs from its card's ${card.onnx.sha256.slice(0, 12)}...`,
    )
  return bytes
}

/** A model whose session is opened once, on first use (a failed open is retried next time). */
export const modelOf = (
  card: ModelCard,
  bytes: () => Promise<Uint8Array>,
  createSession: SessionFactory,
): Model & { opened: () => Promise<Session> | undefined } => {
  let session: Promise<Session> | undefined
  return {
    card,
    session: () => {
      session ??= bytes()
        .then((b) => checked(card, b))
        .then(async (b) => queued(await createSession(b)))
        .catch((e: unknown) => {
          session = undefined
          throw new Error(`model '${card.name}' could not be opened: ${errorLine(e)}`)
        })
      return session
    },
    onnx: async () => checked(card, await bytes()),
    opened: () => session,
  }
}

/** `BASE.json` decoded as a card, with `BASE.onnx` as its bytes. */
export const loadModel = (store: ModelStore, base: string, createSession: SessionFactory) =>
  pipe(
    TE.tryCatch(() => store.read(`${base}.json`), errorLine),
    TE.chain(TE.fromNullable(`no model card ${store.where}/${base}.json`)),
    TE.chainEitherK((bytes) => parseModelCard(new TextDecoder().decode(bytes))),
    TE.mapLeft((why) =>
      why.startsWith('no model card') ? why : `${store.where}/${base}.json: ${why}`,
    ),
    TE.map((card) =>
      modelOf(
        card,
        async () => {
          const bytes = await store.read(`${base}.onnx`)
          if (bytes === undefined) throw new Error(`${store.where}/${base}.onnx is missing`)
          return bytes
        },
        createSession,
      ),
    ),
  )

/**
 * Every model of a store: each `NAME.json` that has a `NAME.onnx` beside it. A card that
 * does not decode, or two cards with one name, is an error naming the file.
 */
export const loadRegistry = (
  store: ModelStore,
  createSession: SessionFactory,
): TE.TaskEither<string, ModelRegistry> =>
  pipe(
    TE.tryCatch(
      () => store.list(),
      (e) => `cannot list models in ${store.where}: ${errorLine(e)}`,
    ),
    TE.map((files) =>
      files
        .filter((f) => f.endsWith('.json') && files.includes(f.replace(/\.json$/, '.onnx')))
        .map((f) => f.replace(/\.json$/, ''))
        .sort(),
    ),
    TE.chain(TE.traverseSeqArray((base) => loadModel(store, base, createSession))),
    TE.chainEitherK((models) => {
      const names = models.map((m) => m.card.name)
      const twice = names.find((n, i) => names.indexOf(n) !== i)
      return twice === undefined
        ? E.right(models)
        : E.left(`two model cards in ${store.where} are named '${twice}'`)
    }),
    TE.map((models) => ({
      cards: models.map((m) => m.card),
      find: (name) => models.find((m) => m.card.name === name),
      release: async () => {
        const opened = models.flatMap((m) => m.opened() ?? [])
        await Promise.all(opened.map((s) => s.then((x) => x.release()).catch(() => undefined)))
      },
    })),
  )
