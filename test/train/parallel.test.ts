import t from 'tap'
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
