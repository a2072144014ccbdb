/**
 * Benchmark: continuous pseudo labels of a 256 x 256 slice with 4 classes (the training
 * loop computes one per image). Uses the ACDC training scribbles when ../shared/data is
 * there, preprocessed as the network sees them (1.37 mm, 256 x 256), else a synthetic
 * annotator-like scribble. Prints one JSON line; the figure is the median of several timed rounds.
 *
 * @example
 * node --import tsx bench/cpl.ts   // {"size":256,"classes":4,"source":"acdc",...,"msPerSlice":...}
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { continuousPseudoLabeller, type ScribbleSlice } from '../src/maco/cpl.ts'
import { decodeNifti } from '../src/volume/nifti.ts'
import { preprocessVolume } from '../src/volume/preprocess.ts'
import { sliceCount } from '../src/volume/slice.ts'
import { sharedData } from '../test/helpers/data.ts'

const SIZE = 256
const UNLABELLED = 4

const acdcSlices = (dir: string, volumes: number): ScribbleSlice[] =>
  readdirSync(dir)
    .filter((f) => f.endsWith('_scribble.nii.gz'))
    .sort()
    .slice(0, volumes)
    .flatMap((f) => {
      const v = decodeNifti(new Uint8Array(readFileSync(join(dir, f))))
      if (E.isLeft(v)) throw new Error(`${f}: ${v.left}`)
      const p = preprocessVolume(v.right, {
        spacing: [1.37, 1.37],
        size: [SIZE, SIZE],
        kind: 'label',
        fill: UNLABELLED,
      })
      return Array.from({ length: sliceCount(p) }, (_, k) =>
        p.data.subarray(k * SIZE * SIZE, (k + 1) * SIZE * SIZE),
      )
    })

/** A background loop around the heart, an RV arc, a MYO ring and an LV stroke. */
const synthetic = (): ScribbleSlice => {
  const s = new Uint8Array(SIZE * SIZE).fill(UNLABELLED)
  const arc = (cx: number, cy: number, r: number, from: number, to: number, c: number) => {
    for (let a = from; a <= to; a += 0.002) {
      const x = Math.round(cx + r * Math.cos(a))
      const y = Math.round(cy + r * Math.sin(a))
      s[y * SIZE + x] = c
    }
  }
  arc(128, 128, 90, 0, 2 * Math.PI, 0)
  arc(100, 120, 40, 2.2, 4.2, 1)
  arc(140, 130, 28, 0, 2 * Math.PI, 2)
  arc(140, 130, 8, 0, 3, 3)
  return s
}

const data = sharedData('acdc/train')
const slices = data.path ? acdcSlices(data.path, 20) : [synthetic()]
const label = continuousPseudoLabeller(SIZE, SIZE, { classes: 4 })
const out = new Float32Array(4 * SIZE * SIZE)
const perRound = Math.max(200, slices.length)
for (let i = 0; i < 50; i++) label(slices[i % slices.length], out)
const rounds: number[] = []
for (let r = 0; r < 7; r++) {
  const t0 = performance.now()
  for (let i = 0; i < perRound; i++) label(slices[i % slices.length], out)
  rounds.push((performance.now() - t0) / perRound)
}
rounds.sort((a, b) => a - b)
console.log(
  JSON.stringify({
    size: SIZE,
    classes: 4,
    source: data.path ? 'acdc' : 'synthetic',
    slices: slices.length,
    msPerSlice: Number(rounds[3].toFixed(3)),
    minMsPerSlice: Number(rounds[0].toFixed(3)),
  }),
)
