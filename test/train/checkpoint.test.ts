import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import * as iots from 'io-ts'
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tap from 'tap'
import {
  decodeCheckpoint,
  encodeCheckpoint,
  modelWeights,
  readCheckpoint,
  restoreState,
  saveState,
  writeCheckpoint,
  type Checkpoint,
} from '../../src/train/checkpoint.ts'
import { loadEngine } from '../../src/train/engine.ts'
import { startAverage } from '../../src/train/average.ts'
import { adamUpdate, disposeState, initialState } from '../../src/train/step.ts'
import { initialWeights, toParams } from '../../src/model/tfjs-unet.ts'
import { unetSpec } from '../../src/model/unet.ts'
import { seeded } from '../../src/util/rng.ts'
import { bytes } from '../helpers/bytes.ts'

const engine = await loadEngine('cpu')()
if (E.isLeft(engine)) throw new Error(engine.left)

const Meta = iots.type({ epoch: iots.number, note: iots.string })
type Meta = iots.TypeOf<typeof Meta>

const sample = (seed: number): Checkpoint<Meta> => {
  const rng = seeded(seed, 'checkpoint')
  const values = (n: number) => Float32Array.from({ length: n }, () => rng.normal())
  return {
    meta: { epoch: seed, note: 'é ✓' },
    weights: { 'a.kernel': values(6), 'a.bias': values(3) },
    shapes: { 'a.kernel': [1, 2, 1, 3], 'a.bias': [3] },
    adam: { step: 7, m: { 'a.kernel': values(6) }, v: { 'a.kernel': values(6) } },
  }
}

const tempDir = async (t: { teardown: (f: () => unknown) => void }) => {
  const dir = await mkdtemp(join(tmpdir(), 'maco-ckpt-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

tap.test('a checkpoint decodes to exactly what was encoded', async (t) => {
  const c = sample(1)
  const back = decodeCheckpoint(encodeCheckpoint(c), Meta)
  t.same(back, E.right(c))
  const encoded = encodeCheckpoint(c)
  t.equal(new TextDecoder().decode(encoded.subarray(0, 8)), 'MACOCKPT')
  t.equal(encoded.length % 4, 0, 'values start 4-byte aligned')
})

tap.test('a weight average travels with the checkpoint and is the model it holds', async (t) => {
  const c = sample(5)
  const rng = seeded(5, 'average')
  const average = {
    'a.kernel': Float32Array.from({ length: 6 }, () => rng.normal()),
    'a.bias': Float32Array.from({ length: 3 }, () => rng.normal()),
  }
  const back = decodeCheckpoint(encodeCheckpoint({ ...c, average }), Meta)
  t.same(back, E.right({ ...c, average }))
  t.same(E.isRight(back) && modelWeights(back.right), average, 'the average is the model')
  t.notSame(average, c.weights)
  const plain = decodeCheckpoint(encodeCheckpoint(c), Meta)
  t.notOk(E.isRight(plain) && 'average' in plain.right, 'no average: none decoded')
  t.equal(E.isRight(plain) && modelWeights(plain.right), E.isRight(plain) && plain.right.weights)
})

tap.test('damaged or foreign files are refused with one line, never loaded', async (t) => {
  const encoded = encodeCheckpoint(sample(2))
  const flipped = encoded.slice()
  flipped[encoded.length - 3] ^= 0x10
  const cases: [Uint8Array, string][] = [
    [new TextEncoder().encode('hello, this is not it'), 'not a MaCo checkpoint'],
    [encoded.subarray(0, 6), 'not a MaCo checkpoint'],
    [encoded.subarray(0, 40), 'truncated (40 bytes, header unfinished)'],
    [
      encoded.subarray(0, encoded.length - 8),
      `truncated or padded (${encoded.length - 8} bytes, expected ${encoded.length})`,
    ],
    [flipped, 'corrupt (its checksum does not match)'],
  ]
  for (const [b, why] of cases) t.same(decodeCheckpoint(b, Meta), E.left(why), why)
  t.same(
    decodeCheckpoint(encoded, iots.type({ epoch: iots.string })),
    E.left('bad header: meta.epoch must be a string, got 2'),
  )
})

tap.test('reading names the file and says what is wrong', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'last.ckpt')
  t.same(await readCheckpoint(path, Meta)(), E.left(`no checkpoint at ${path}`))
  await writeFile(path, encodeCheckpoint(sample(3)).subarray(0, 100))
  const r = await readCheckpoint(path, Meta)()
  t.match(r, { _tag: 'Left', left: `checkpoint ${path} is unusable: truncated` })
  t.notMatch(E.isLeft(r) ? r.left : '', /\n/)
  t.same(
    await readCheckpoint(dir, Meta)(),
    E.left(`cannot read checkpoint ${dir}: EISDIR: illegal operation on a directory, read`),
  )
})

tap.test('writes are atomic: a reader never sees a half-written checkpoint', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'last.ckpt')
  const big = (seed: number): Checkpoint<Meta> => {
    const c = sample(seed)
    const n = 1 << 18
    return {
      ...c,
      weights: { ...c.weights, big: new Float32Array(n).fill(seed) },
      shapes: { ...c.shapes, big: [n] },
    }
  }
  const first = await writeCheckpoint(path, big(1))()
  t.ok(E.isRight(first))
  let writing = true
  const reads: string[] = []
  const reader = (async () => {
    while (writing) {
      const r = await readCheckpoint(path, Meta)()
      reads.push(E.isRight(r) ? `ok ${r.right.meta.epoch}` : r.left)
    }
  })()
  for (let i = 2; i < 12; i++) t.ok(E.isRight(await writeCheckpoint(path, big(i))()))
  writing = false
  await reader
  t.ok(reads.length > 0)
  t.same(
    reads.filter((r) => !r.startsWith('ok')),
    [],
    'every read decoded',
  )
  t.same(await readdir(dir), ['last.ckpt'], 'no temporary files left behind')
  const failed = await writeCheckpoint(join(dir, 'last.ckpt', 'x.ckpt'), sample(1))()
  t.match(failed, { _tag: 'Left', left: /^cannot write checkpoint .*x\.ckpt: / })
  const kept = await readCheckpoint(path, Meta)()
  t.match(kept, { _tag: 'Right', right: { meta: { epoch: 11 } } })
})

tap.test('a training state survives saving and restoring, to the bit', async (t) => {
  const spec = unetSpec({ base: 2, levels: 2, dropout: [0, 0] })
  const before = tf.memory().numTensors
  let state = initialState(spec, toParams(spec, initialWeights(spec, 5)))
  const grads = Object.fromEntries(
    Object.entries(state.adam.m).map(([n, m]) => [n, tf.randomNormal(m.shape, 0, 1, 'float32', 3)]),
  )
  state = adamUpdate(state, grads)
  tf.dispose(Object.values(grads))
  const saved = await saveState(state)
  const encoded = encodeCheckpoint({ meta: { epoch: 1, note: '' }, ...saved })
  const back = decodeCheckpoint(encoded, Meta)
  if (E.isLeft(back)) throw new Error(back.left)
  const restored = restoreState(back.right)
  t.equal(restored.adam.step, 1)
  for (const [name, p] of Object.entries(state.params)) {
    t.same(restored.params[name].shape, p.shape)
    t.same(bytes(await restored.params[name].data()), bytes(await p.data()), name)
  }
  for (const name of Object.keys(state.adam.m))
    t.same(await restored.adam.v[name].data(), await state.adam.v[name].data())
  t.notOk('average' in restored, 'no average kept, none restored')
  const withAverage = { ...state, average: startAverage(state.params) }
  const savedAverage = await saveState(withAverage)
  const again = restoreState(savedAverage)
  t.same(Object.keys(again.average ?? {}), Object.keys(state.params))
  for (const [name, a] of Object.entries(withAverage.average))
    t.same(await again.average?.[name].data(), await a.data(), `average ${name}`)
  for (const s of [withAverage, restored, again]) disposeState(s)
  t.equal(tf.memory().numTensors, before)
  t.throws(
    () => restoreState({ ...saved, adam: { ...saved.adam, m: { ghost: new Float32Array(1) } } }),
    /optimizer state for unknown weight 'ghost'/,
  )
})

tap.test('encoding refuses values that do not fit their shape', async (t) => {
  const c = sample(4)
  t.throws(
    () => encodeCheckpoint({ ...c, shapes: { ...c.shapes, 'a.bias': [4] } }),
    /'a.bias' has 3 values for shape 4/,
  )
  t.throws(
    () => encodeCheckpoint({ ...c, shapes: { 'a.kernel': [1, 2, 1, 3] } }),
    /no shape for 'a.bias'/,
  )
  const dir = await tempDir(t)
  const path = join(dir, 'c.ckpt')
  await writeCheckpoint(path, c)()
  const before = await readFile(path)
  t.same(
    await writeCheckpoint(path, { ...c, shapes: {} })(),
    E.left(`cannot write checkpoint ${path}: no shape for 'a.kernel'`),
  )
  t.same(await readFile(path), before, 'a failed write leaves the previous checkpoint')
})
