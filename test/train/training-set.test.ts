import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import t from 'tap'
import { phantomCase } from '../../src/data/phantom.ts'
import { start, then } from '../../src/pipeline/pipeline.ts'
import { runPipeline } from '../../src/pipeline/run.ts'
import { formatStageError } from '../../src/pipeline/stage.ts'
import {
  batchArrays,
  prepareSlices,
  shrinkScribbles,
  validationVolume,
  type PrepareOptions,
  type TrainingSlice,
} from '../../src/train/training-set.ts'
import { preprocessPlan } from '../../src/volume/preprocess.ts'
import { volumeOf } from '../../src/volume/volume.ts'

const options: PrepareOptions = {
  input: { spacing: [3, 3], size: [64, 64] },
  classes: 4,
  unlabelled: 4,
  cpl: { alpha: 0.1, floor: 0.05 },
  shrink: { ratio: 0, scope: 'slice' },
}

/** A phantom whose 120 mm field of view is smaller than the network's 192 mm: padding shows. */
const phantom = phantomCase(3, { size: [40, 40], slices: 3, spacing: [3, 3, 8] })

const prepare = async (o: PrepareOptions = options): Promise<TrainingSlice[]> => {
  const r = await runPipeline(prepareSlices(o), [phantom], { seed: 1 })()
  if (E.isLeft(r)) throw new Error(formatStageError(r.left))
  return [...r.right]
}

t.test(
  'training slices are on the network grid: nearest scribbles, unlabelled padding',
  async (t) => {
    const slices = await prepare()
    t.equal(slices.length, 3)
    const plan = preprocessPlan({ dims: [40, 40], spacing: [3, 3, 8] }, options.input)
    const [nx] = phantom.scribble.dims
    for (const s of slices) {
      t.same(Object.keys(s).sort(), ['case', 'cpl', 'gc', 'image', 'scribble', 'slice'])
      const native = phantom.scribble.data.subarray(s.slice * 1600, (s.slice + 1) * 1600)
      let mismatches = 0
      for (let v = 0; v < 64; v++)
        for (let u = 0; u < 64; u++) {
          const x = plan.x.origin + u * plan.x.step
          const y = plan.y.origin + v * plan.y.step
          const inside = x >= -0.5 && x <= 39.5 && y >= -0.5 && y <= 39.5
          const expected = inside ? native[Math.floor(y + 0.5) * nx + Math.floor(x + 0.5)] : 4
          if (s.scribble[v * 64 + u] !== expected) mismatches++
        }
      t.equal(
        mismatches,
        0,
        `slice ${s.slice}: every pixel is its nearest native scribble, or unlabelled`,
      )
      const mean = s.image.reduce((a, b) => a + b, 0) / s.image.length
      const variance = s.image.reduce((a, b) => a + (b - mean) ** 2, 0) / s.image.length
      t.ok(Math.abs(mean) < 1e-5 && Math.abs(variance - 1) < 1e-4, 'z-scored over the padded slice')
      t.equal(new Set([s.image[0], s.image[63], s.image[64 * 63]]).size, 1, 'padding is one value')
    }
  },
)

t.test('every foreground scribble pixel lies in the GC region', async (t) => {
  for (const s of await prepare()) {
    const inside = s.gc.filter((g) => g === 1).length
    t.ok(inside > 100 && inside < 64 * 64 - 1000, `slice ${s.slice}: a region, not everything`)
    const outside = [...s.scribble.keys()].filter(
      (i) => s.scribble[i] >= 1 && s.scribble[i] <= 3 && s.gc[i] !== 1,
    )
    t.same(outside, [])
  }
})

t.test(
  'CPL equals exp(-0.1 d) to the nearest scribble of each class, by brute force',
  async (t) => {
    const slices = await prepare()
    t.same(new Set(slices.flatMap((s) => [...s.scribble])), new Set([0, 1, 2, 3, 4]), 'all drawn')
    const n = 64 * 64
    for (const s of slices)
      for (let c = 0; c < 4; c++) {
        const strokes = [...s.scribble.keys()].filter((i) => s.scribble[i] === c)
        let worst = 0
        for (let i = 0; i < n; i++) {
          // no stroke of the class: d is infinite and Y is 0 everywhere
          let d2 = Infinity
          for (const j of strokes)
            d2 = Math.min(d2, ((i % 64) - (j % 64)) ** 2 + (((i / 64) | 0) - ((j / 64) | 0)) ** 2)
          const y = Math.exp(-0.1 * Math.sqrt(d2))
          worst = Math.max(worst, Math.abs(s.cpl[c * n + i] - (y >= 0.05 ? y : 0)))
        }
        t.ok(worst < 1e-6, `slice ${s.slice} class ${c} (${strokes.length} px): max error ${worst}`)
      }
  },
)

t.test(
  'shrinking removes the asked fraction of each slice, seeded by run, case and slice',
  async (t) => {
    const data = Float32Array.from(phantom.scribble.data.subarray(0, 1600))
    const rec = {
      case: 'p',
      slice: 0,
      scribble: { width: 40, height: 40, data, spacing: [3, 3] as const },
    }
    const run = (seed: number, ratio: number) =>
      pipe(
        start<typeof rec>(),
        then(shrinkScribbles({ shrink: { ratio, scope: 'slice' }, unlabelled: 4 })),
      ).run(rec)({ seed })()
    const count = (data: Float32Array) => data.filter((v) => v !== 4).length
    const before = count(rec.scribble.data)
    const half = await run(1, 0.5)
    const again = await run(1, 0.5)
    const other = await run(2, 0.5)
    if (E.isLeft(half) || E.isLeft(again) || E.isLeft(other)) throw new Error('shrink failed')
    t.equal(count(half.right[0].scribble.data), before - Math.round(0.5 * before))
    t.same(half.right[0].scribble.data, again.right[0].scribble.data, 'reproducible')
    t.notSame(
      half.right[0].scribble.data,
      other.right[0].scribble.data,
      'another seed, other strokes',
    )
    const none = await run(1, 0)
    t.same(E.isRight(none) && none.right[0].scribble.data, rec.scribble.data)
  },
)

t.test('a validation volume keeps the native label and the way back to it', async (t) => {
  const r = await runPipeline(
    pipe(start<typeof phantom>(), then(validationVolume(options.input))),
    [phantom],
    { seed: 1 },
  )()
  if (E.isLeft(r)) throw new Error(formatStageError(r.left))
  const v = r.right[0]
  t.same(v.dims, [40, 40, 3])
  t.same(v.spacing, [3, 3, 8])
  t.same(v.label, phantom.label.data)
  t.equal(v.image.length, 3 * 64 * 64)
  t.same([v.plan.x.source, v.plan.x.size], [40, 64])
  const odd = {
    ...phantom,
    label: volumeOf({ dims: [40, 40, 2], data: new Uint8Array(3200), spacing: [3, 3, 8] }),
  }
  const bad = await runPipeline(
    pipe(start<typeof odd>(), then(validationVolume(options.input))),
    [odd],
    { seed: 1 },
  )()
  t.same(
    E.isLeft(bad) && formatStageError(bad.left),
    "stage 'validation volume' failed on phantom-3: image dims 40x40x3 differ from label dims 40x40x2",
  )
})

t.test('batches are NHWC: CPL goes from class-major to class-last', async (t) => {
  const slice = (k: number): TrainingSlice => ({
    case: 'c',
    slice: k,
    image: Float32Array.from([1, 2, 3, 4], (v) => v + 10 * k),
    scribble: Uint8Array.from([0, 1, 2, 2]),
    gc: Uint8Array.from([1, 1, 0, 0]),
    // class 0 plane then class 1 plane
    cpl: Float32Array.from([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], (v) => v + k),
  })
  const b = batchArrays([slice(0), slice(1), slice(2)], [2, 0], 2)
  t.same([...b.image], [21, 22, 23, 24, 1, 2, 3, 4])
  t.same([...b.gc], [1, 1, 0, 0, 1, 1, 0, 0])
  t.same(
    [...b.cpl].map((v) => Math.round(v * 10) / 10),
    [2.1, 2.5, 2.2, 2.6, 2.3, 2.7, 2.4, 2.8, 0.1, 0.5, 0.2, 0.6, 0.3, 0.7, 0.4, 0.8],
  )
})
