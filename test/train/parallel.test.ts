import * as tf from '@tensorflow/tfjs-core'
import t from 'tap'
import { DEFAULT_LOSS } from '../../src/maco/losses.ts'
import { initialWeights, toParams } from '../../src/model/tfjs-unet.ts'
import { parameterShapes, unetSpec } from '../../src/model/unet.ts'
import { pack, singlePasses, unpack, workerPasses } from '../../src/train/parallel.ts'
import { inProcess, type Passes } from '../../src/train/step.ts'
import { installed } from '../../src/util/installed.ts'
import { use } from '../helpers/conv-cases.ts'
import { trainSteps } from '../helpers/pass-compare.ts'

// wasm: the cpu backend's filter gradient is ~20x slower, and wasm is always there.
await use('wasm')

const tiny = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] })

const run = (passes: Passes, steps: number) => trainSteps(tiny, passes, steps)

// onnxruntime: its passes as onnxruntime graphs, where onnxruntime-node is installed.
for (const name of [
  'wasm',
  ...(installed('onnxruntime-node') ? ['onnxruntime' as const] : []),
] as const)
  t.test(
    `two worker threads give exactly the single-threaded step on ${name} (same losses, same weights)`,
    async (t) => {
      await use(name)
      // This thread's passes for the engine: tfjs on wasm, onnxruntime graphs on onnxruntime.
      const reference = await run(await singlePasses(tiny, name), 3)
      const passes = await workerPasses(tiny, name, 2)
      try {
        const parallel = await run(passes, 3)
        t.same(parallel.losses, reference.losses)
        for (const p of parameterShapes(tiny))
          t.ok(
            parallel.weights[p.name].every((v, i) => v === reference.weights[p.name][i]),
            p.name,
          )
        t.same(
          new Set(parallel.counts).size,
          1,
          `main-thread tensors flat: ${parallel.counts.join(' ')}`,
        )
      } finally {
        await passes.close()
        await use('wasm')
      }
    },
  )

// The MaCo loss as data runs each branch where its pass ran: on two workers, on the workers.
for (const name of [
  'wasm',
  ...(installed('onnxruntime-node') ? ['onnxruntime' as const] : []),
] as const)
  t.test(
    `the MaCo loss on the workers gives exactly its closure on this thread, on ${name}`,
    async (t) => {
      await use(name)
      const single = await singlePasses(tiny, name)
      const reference = await trainSteps(tiny, single, 3, 'maco-closure')
      const here = await trainSteps(tiny, single, 3, 'maco-data')
      const passes = await workerPasses(tiny, name, 2)
      t.ok(passes.withLoss, 'two workers evaluate the loss themselves')
      try {
        const there = await trainSteps(tiny, passes, 3, 'maco-data')
        for (const [what, r] of [
          ['on this thread', here],
          ['on the workers', there],
        ] as const) {
          t.same(r.losses, reference.losses, `losses ${what}`)
          t.same(r.terms, reference.terms, `terms ${what}`)
          const differ = parameterShapes(tiny).filter(
            (p) => !r.weights[p.name].every((v, i) => v === reference.weights[p.name][i]),
          )
          t.same(differ, [], `every weight the same ${what}`)
          t.equal(new Set(r.counts).size, 1, `tensors flat ${what}: ${r.counts.join(' ')}`)
        }
        t.ok(reference.terms[0].mcm! > 0 && reference.terms[0].cpl! > 0, 'every term in play')
      } finally {
        await passes.close()
        await use('wasm')
      }
    },
  )

t.test(
  'a whole pass that fails on one worker fails the step with its reason; the next step runs',
  async (t) => {
    const passes = await workerPasses(tiny, 'wasm', 2)
    const params = toParams(tiny, initialWeights(tiny, 1))
    const good = tf.zeros([1, 32, 32, 1]) as tf.Tensor4D
    // 6 px does not halve twice into whole pixels: the original pass cannot run.
    const bad = tf.zeros([1, 6, 6, 1]) as tf.Tensor4D
    const targets = { scribbles: new Uint8Array(1024), unlabelled: 4 }
    const config = { ...DEFAULT_LOSS, cpl: false, gc: false }
    try {
      await t.rejects(
        passes.withLoss!(params, [bad, good], [[1], [2]], { config, targets }),
        /could not be broadcast/,
        "the step rejects with the original pass's reason",
      )
      // Both workers answer the next step: neither still waits on the failed one.
      const r = await passes.withLoss!(params, [good, good], [[1], [2]], { config, targets })
      t.equal(r.grads.length, 2)
      tf.dispose([
        ...r.grads.flatMap((g) => Object.values(g)),
        ...r.stats.flatMap((s) => Object.values(s).flatMap((b) => [b.mean, b.variance])),
      ])
    } finally {
      tf.dispose([good, bad, ...Object.values(params)])
      await passes.close()
    }
  },
)

t.test('one worker runs both passes in turn', async (t) => {
  const reference = await run(inProcess(tiny), 1)
  const passes = await workerPasses(tiny, 'wasm', 1)
  try {
    t.same((await run(passes, 1)).losses, reference.losses)
  } finally {
    await passes.close()
  }
})

t.test('a worker that cannot load its engine fails the start with its reason', async (t) => {
  await t.rejects(workerPasses(tiny, 'tensorflow', 1), /engine 'tensorflow' is not available/)
})

t.test('pack and unpack are inverse over the shapes given', async (t) => {
  const shapes = [
    { name: 'a', shape: [2, 3] },
    { name: 'b', shape: [4] },
  ]
  const values = { a: Float32Array.from([1, 2, 3, 4, 5, 6]), b: Float32Array.from([7, 8, 9, 10]) }
  const packed = pack(shapes, (n) => values[n as 'a' | 'b'])
  t.same(Array.from(packed), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
  const back = unpack(shapes, packed)
  t.same(Array.from(back.b), [7, 8, 9, 10])
})
