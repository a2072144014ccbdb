/**
 * Benchmark: attention-based masking of one 256 x 256 slice (patch weights from the
 * scribble, sampling round(r K) patches, zeroing them), done once per image per training
 * step. A phantom's annotator-like scribble (src/bench/cpl.ts) and a random image; prints
 * one JSON line with the median over several timed rounds, overall and per stage.
 *
 * @example
 * node --import tsx bench/masking.ts   // {"size":256,"patch":16,"msPerSlice":...,...}
 */
import * as E from 'fp-ts/lib/Either.js'
import { phantomScribbles } from '../src/bench/cpl.ts'
import { median } from '../src/bench/stats.ts'
import { maskImage, maskingOptions, patchWeights, samplePatches } from '../src/maco/masking.ts'
import { seeded } from '../src/util/rng.ts'

const SIZE = 256
const ROUNDS = 7
const PER_ROUND = 300

const [scribble] = phantomScribbles(SIZE, 1)
const noise = seeded(0, 'bench-image')
const image = Float32Array.from({ length: SIZE * SIZE }, () => noise.normal())
const options = E.getOrElseW((e: string) => {
  throw new Error(e)
})(maskingOptions({ size: SIZE }))
const rng = seeded(0, 'bench-mask')

const stages = { weights: [] as number[], sampling: [] as number[], masking: [] as number[] }
const total: number[] = []
let sink = 0
for (let round = 0; round < ROUNDS + 1; round++) {
  const spent = { weights: 0, sampling: 0, masking: 0 }
  const start = performance.now()
  for (let i = 0; i < PER_ROUND; i++) {
    const t0 = performance.now()
    const weights = patchWeights(scribble, SIZE, SIZE, options)
    const t1 = performance.now()
    const mask = samplePatches(weights, Math.round(options.ratio * weights.length), rng)
    const t2 = performance.now()
    sink += maskImage(image, SIZE, SIZE, mask, options.patch)[i]
    const t3 = performance.now()
    spent.weights += t1 - t0
    spent.sampling += t2 - t1
    spent.masking += t3 - t2
  }
  if (round === 0) continue // warm-up
  total.push((performance.now() - start) / PER_ROUND)
  for (const k of Object.keys(stages) as (keyof typeof stages)[])
    stages[k].push(spent[k] / PER_ROUND)
}
const round3 = (x: number) => Math.round(x * 1000) / 1000
console.log(
  JSON.stringify({
    size: SIZE,
    patch: options.patch,
    ratio: options.ratio,
    msPerSlice: round3(median(total)),
    weightsMs: round3(median(stages.weights)),
    samplingMs: round3(median(stages.sampling)),
    maskingMs: round3(median(stages.masking)),
  }),
)
