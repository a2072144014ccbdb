/**
 * Benchmark: read and preprocess every ACDC training volume (image, scribble, label) to
 * 256 x 256 at 1.37 mm, as a training run does before its first epoch. Prints one JSON line:
 * seconds in total and per volume (a volume = its three files), split into reading
 * (file + gunzip + decode) and preprocessing. Needs ../shared/data (or MACO_DATA).
 *
 * @example
 * node --import tsx bench/preprocess.ts   // {"volumes":140,"seconds":...,"secondsPerVolume":...}
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { decodeNifti } from '../src/volume/nifti.ts'
import { preprocessVolume } from '../src/volume/preprocess.ts'
import type { Volume } from '../src/volume/volume.ts'
import { sharedData } from '../test/helpers/data.ts'

const TARGET = { spacing: [1.37, 1.37], size: [256, 256] } as const
const UNLABELLED = 4

const data = sharedData('acdc/train')
if (data.path === undefined) {
  console.error(data.skip)
  process.exit(2)
}
const dir: string = data.path
const cases = readdirSync(dir)
  .filter((f) => f.endsWith('_image.nii.gz'))
  .map((f) => f.replace(/_image\.nii\.gz$/, ''))
  .sort()

let reading = 0
let preprocessing = 0
let slices = 0
const read = (file: string): Volume => {
  const start = performance.now()
  const v = decodeNifti(new Uint8Array(readFileSync(join(dir, file))))
  reading += performance.now() - start
  if (E.isLeft(v)) throw new Error(`${file}: ${v.left}`)
  return v.right
}
const preprocess = (v: Volume, kind: 'image' | 'label', fill = 0): Volume => {
  const start = performance.now()
  const p = preprocessVolume(v, { ...TARGET, kind, fill })
  preprocessing += performance.now() - start
  return p
}

const start = performance.now()
for (const c of cases) {
  slices += preprocess(read(`${c}_image.nii.gz`), 'image').dims[2]
  preprocess(read(`${c}_scribble.nii.gz`), 'label', UNLABELLED)
  preprocess(read(`${c}_label.nii.gz`), 'label')
}
const seconds = (performance.now() - start) / 1000
console.log(
  JSON.stringify({
    volumes: cases.length,
    slices,
    seconds: +seconds.toFixed(2),
    secondsPerVolume: +(seconds / cases.length).toFixed(4),
    readSeconds: +(reading / 1000).toFixed(2),
    preprocessSeconds: +(preprocessing / 1000).toFixed(2),
    msPerSlice: +(preprocessing / (3 * slices)).toFixed(3),
  }),
)
