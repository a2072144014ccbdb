/**
 * Benchmark: continuous pseudo labels of a 256 x 256 slice with 4 classes (the training
 * loop computes one per image), against scipy's 5.9 ms (src/bench/cpl.ts; `maco bench cpl`
 * runs the same). Uses the ACDC training scribbles when ../shared/data is there,
 * preprocessed as the network sees them (1.37 mm, 256 x 256), else synthetic phantoms'.
 * Prints one JSON line; the figure is the median of several timed rounds.
 *
 * @example
 * node --import tsx bench/cpl.ts   // {"size":256,"classes":4,"source":"...","msPerSlice":...,"ratio":...}
 */
import * as E from 'fp-ts/lib/Either.js'
import { cplBench, phantomScribbles, scribbleSlices } from '../src/bench/cpl.ts'
import { sharedData } from '../test/helpers/data.ts'

const SIZE = 256
const data = sharedData('acdc/train')
const slices = data.path ? scribbleSlices(data.path, 20, SIZE) : E.right(phantomScribbles(SIZE, 10))
if (E.isLeft(slices)) {
  console.error(slices.left)
  process.exitCode = 1
} else
  console.log(
    JSON.stringify(
      cplBench(slices.right, { size: SIZE, source: data.path ?? 'synthetic', rounds: 7 }),
    ),
  )
