import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { syntheticCases, syntheticSlices } from '../../pipelines/synthetic.ts'
import type { RunProgress } from '../../src/pipeline/run.ts'

const options = { train: 3, val: 2, seed: 4, phantom: { size: [64, 64], slices: 4 } } as const

t.test('phantoms split into train and val, then one record per slice', async (t) => {
  const cases = syntheticCases(options)
  t.same(
    cases.map((c) => [c.case, c.split]),
    [
      ['phantom000', 'train'],
      ['phantom001', 'train'],
      ['phantom002', 'train'],
      ['phantom003', 'val'],
      ['phantom004', 'val'],
    ],
  )
  const seen: RunProgress[] = []
  const out = await syntheticSlices(options, { onProgress: (p) => seen.push(p) })()
  if (E.isLeft(out)) return t.fail(out.left.message)
  t.equal(out.right.length, 5 * 4)
  t.same(
    seen.map((p) => p.done),
    [1, 2, 3, 4, 5],
  )
  const r = out.right[6]
  t.same([r.case, r.split, r.slice], ['phantom001', 'train', 2])
  t.same([r.image.width, r.image.height, r.image.data.length], [64, 64, 64 * 64])
  // The slice holds slice 2 of the volumes, as real values.
  const n = 64 * 64
  t.same([...r.label.data], [...cases[1].label.data.subarray(2 * n, 3 * n)])
  t.same([...r.scribble.data], [...cases[1].scribble.data.subarray(2 * n, 3 * n)])
  t.ok(r.scribble.data.some((v) => v === 4) && r.scribble.data.some((v) => v === 0))
})
