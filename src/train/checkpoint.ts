/**
 * Checkpoints: the network's weights (batch-norm moving statistics included), Adam's state,
 * the weights' moving average where the run keeps one (`modelWeights` picks which of the two
 * the model is), and a JSON header (what the trainer needs to resume: config, counters, best
 * score) in one file, written atomically, so a crash mid-write leaves the previous
 * checkpoint intact.
 *
 * Layout: `MACOCKPT`, the header's byte length (uint32 LE), the header (UTF-8 JSON:
 * `{version, meta, tensors: [{name, group, shape}], sha256}`, group one of weight, m, v,
 * average), zero padding to a multiple of 4, then every tensor's float32 values (LE) in
 * header order. The SHA-256 covers those values, so a truncated or altered file is refused
 * with a one-line reason, never loaded.
 *
 * @example
 * await writeCheckpoint('run/last.ckpt', { meta, ...(await saveState(state)) })()
 * const c = await readCheckpoint('run/last.ckpt', Progress)() // Either<string, Checkpoint<Progress>>
 * const state = restoreState(c.right)
 */
import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Params } from '../model/tfjs-unet.ts'
import type { UNetWeights } from '../model/unet.ts'
import { describeErrors } from '../pipeline/decode.ts'
import { writeFileAtomic } from '../util/atomic.ts'
import type { TrainState } from './step.ts'
import { elementCount } from '../util/shape.ts'

export const CHECKPOINT_VERSION = 1
const MAGIC = 'MACOCKPT'
/** Where the header starts: after the magic and its uint32 length. */
const HEADER_AT = MAGIC.length + 4

type Arrays = Readonly<Record<string, Float32Array>>

/** The optimizer's state as arrays: Adam's step count and moments per trainable weight. */
export interface SavedAdam {
  readonly step: number
  readonly m: Arrays
  readonly v: Arrays
}

export interface Checkpoint<M> {
  readonly meta: M
  /** Every weight of the network, moving statistics included, with its shape. */
  readonly weights: UNetWeights
  readonly shapes: Readonly<Record<string, readonly number[]>>
  readonly adam: SavedAdam
  /** The weights' moving average (config `ema`): what the run validated and exports. */
  readonly average?: Arrays
}

/** The weights a checkpoint's model is: the moving average where the run kept one. */
export const modelWeights = (c: Pick<Checkpoint<unknown>, 'weights' | 'average'>): Arrays =>
  c.average ?? c.weights

const GROUPS = ['weight', 'm', 'v', 'average'] as const
type Group = (typeof GROUPS)[number]

const Header = t.type({
  version: t.number,
  meta: t.unknown,
  adamStep: t.number,
  tensors: t.array(
    t.type({
      name: t.string,
      group: t.keyof({ weight: null, m: null, v: null, average: null }),
      shape: t.array(t.number),
    }),
  ),
  sha256: t.string,
})

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

/** The file's bytes. */
export const encodeCheckpoint = <M>(c: Checkpoint<M>): Uint8Array => {
  const entries = GROUPS.flatMap((group) =>
    Object.entries(
      group === 'weight' ? c.weights : group === 'average' ? (c.average ?? {}) : c.adam[group],
    ).map(([name, values]) => {
      const shape = c.shapes[name]
      if (!shape) throw new RangeError(`no shape for '${name}'`)
      if (elementCount(shape) !== values.length)
        throw new RangeError(`'${name}' has ${values.length} values for shape ${shape.join('x')}`)
      return { name, group, shape, values }
    }),
  )
  const payload = new Uint8Array(entries.reduce((n, e) => n + e.values.length * 4, 0))
  const view = new DataView(payload.buffer)
  let offset = 0
  for (const e of entries)
    for (let i = 0; i < e.values.length; i++, offset += 4)
      view.setFloat32(offset, e.values[i], true)
  const header = new TextEncoder().encode(
    JSON.stringify({
      version: CHECKPOINT_VERSION,
      meta: c.meta,
      adamStep: c.adam.step,
      tensors: entries.map(({ name, group, shape }) => ({ name, group, shape })),
      sha256: sha256(payload),
    }),
  )
  const start = Math.ceil((HEADER_AT + header.length) / 4) * 4
  const out = new Uint8Array(start + payload.length)
  out.set(new TextEncoder().encode(MAGIC), 0)
  new DataView(out.buffer).setUint32(MAGIC.length, header.length, true)
  out.set(header, HEADER_AT)
  out.set(payload, start)
  return out
}

/** A checkpoint from its bytes, its header's `meta` decoded by `metaCodec`; Left: why not. */
export const decodeCheckpoint = <M>(
  bytes: Uint8Array,
  metaCodec: t.Decoder<unknown, M>,
): E.Either<string, Checkpoint<M>> => {
  if (
    bytes.length < HEADER_AT ||
    new TextDecoder().decode(bytes.subarray(0, MAGIC.length)) !== MAGIC
  )
    return E.left('not a MaCo checkpoint')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const headerLength = view.getUint32(MAGIC.length, true)
  const start = Math.ceil((HEADER_AT + headerLength) / 4) * 4
  if (start > bytes.length) return E.left(`truncated (${bytes.length} bytes, header unfinished)`)
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder().decode(bytes.subarray(HEADER_AT, HEADER_AT + headerLength)))
  } catch {
    return E.left('its header is not valid JSON')
  }
  const header = Header.decode(json)
  if (E.isLeft(header)) return E.left(`bad header: ${describeErrors(header.left)}`)
  const h = header.right
  if (h.version !== CHECKPOINT_VERSION)
    return E.left(`version ${h.version}, this toolkit reads version ${CHECKPOINT_VERSION}`)
  const expected = start + h.tensors.reduce((n, e) => n + elementCount(e.shape) * 4, 0)
  if (bytes.length !== expected)
    return E.left(`truncated or padded (${bytes.length} bytes, expected ${expected})`)
  const payload = bytes.subarray(start)
  if (sha256(payload) !== h.sha256) return E.left('corrupt (its checksum does not match)')
  const meta = metaCodec.decode(h.meta)
  if (E.isLeft(meta)) return E.left(`bad header: meta.${describeErrors(meta.left)}`)
  const groups: Record<Group, Record<string, Float32Array>> = {
    weight: {},
    m: {},
    v: {},
    average: {},
  }
  const shapes: Record<string, readonly number[]> = {}
  const payloadView = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  let offset = 0
  for (const e of h.tensors) {
    const values = new Float32Array(elementCount(e.shape))
    for (let i = 0; i < values.length; i++, offset += 4)
      values[i] = payloadView.getFloat32(offset, true)
    groups[e.group][e.name] = values
    shapes[e.name] = e.shape
  }
  return E.right({
    meta: meta.right,
    weights: groups.weight,
    shapes,
    adam: { step: h.adamStep, m: groups.m, v: groups.v },
    ...(Object.keys(groups.average).length > 0 ? { average: groups.average } : {}),
  })
}

/** Writes a checkpoint atomically (temporary file, then rename). */
export const writeCheckpoint = <M>(path: string, c: Checkpoint<M>): TE.TaskEither<string, void> =>
  TE.tryCatch(
    () => writeFileAtomic(path, encodeCheckpoint(c)),
    (e) => `cannot write checkpoint ${path}: ${(e as Error).message.split('\n')[0]}`,
  )

/** Reads and checks a checkpoint; every failure is one line naming the file. */
export const readCheckpoint = <M>(
  path: string,
  metaCodec: t.Decoder<unknown, M>,
): TE.TaskEither<string, Checkpoint<M>> =>
  pipe(
    TE.tryCatch(
      () => readFile(path),
      (e) =>
        (e as NodeJS.ErrnoException).code === 'ENOENT'
          ? `no checkpoint at ${path}`
          : `cannot read checkpoint ${path}: ${(e as Error).message.split('\n')[0]}`,
    ),
    TE.chainEitherK((bytes) =>
      pipe(
        decodeCheckpoint(
          new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
          metaCodec,
        ),
        E.mapLeft((why) => `checkpoint ${path} is unusable: ${why}`),
      ),
    ),
  )

const read = async (ts: Params): Promise<Record<string, Float32Array>> =>
  Object.fromEntries(
    await Promise.all(
      Object.entries(ts).map(
        async ([n, x]) => [n, Float32Array.from((await x.data()) as Float32Array)] as const,
      ),
    ),
  )

/** The training state's tensors as arrays (copies), for `writeCheckpoint`. */
export const saveState = async (
  state: TrainState,
): Promise<Pick<Checkpoint<unknown>, 'weights' | 'shapes' | 'adam' | 'average'>> => ({
  weights: await read(state.params),
  shapes: Object.fromEntries(Object.entries(state.params).map(([n, x]) => [n, x.shape])),
  adam: { step: state.adam.step, m: await read(state.adam.m), v: await read(state.adam.v) },
  ...(state.average ? { average: await read(state.average) } : {}),
})

/** Tensors again; the moments and the average must belong to weights of the checkpoint. */
export const restoreState = (
  c: Pick<Checkpoint<unknown>, 'weights' | 'shapes' | 'adam' | 'average'>,
): TrainState => {
  const tensors = (arrays: Arrays) =>
    Object.fromEntries(
      Object.entries(arrays).map(([n, a]) => {
        const shape = c.shapes[n]
        if (!shape) throw new RangeError(`optimizer state for unknown weight '${n}'`)
        return [n, tf.tensor(a, [...shape])]
      }),
    )
  return {
    params: tensors(c.weights),
    adam: { step: c.adam.step, m: tensors(c.adam.m), v: tensors(c.adam.v) },
    ...(c.average ? { average: tensors(c.average) } : {}),
  }
}
