import t from 'tap'
import { continuousPseudoLabeller } from '../../src/maco/cpl.ts'
import { seeded } from '../../src/util/rng.ts'
import { sliceAugmenter, WSL4MIS_AUGMENT, type AugmentOptions } from '../../src/train/augment.ts'
import type { TrainingSlice } from '../../src/train/training-set.ts'

const classes = 3
const unlabelled = 3
const cpl = { alpha: 0.1, floor: 0.05 }

/** A slice of size w x h with a few scribble strokes, GC a box, a random image. */
const sliceOf = (w: number, h: number, seed: number): TrainingSlice => {
  const rng = seeded(seed, 'augment-test')
  const scribble = new Uint8Array(w * h).fill(unlabelled)
  for (let k = 0; k < 12; k++) scribble[rng.int(w * h)] = rng.int(classes)
  const gc = Uint8Array.from({ length: w * h }, (_, i) =>
    i % w > 2 && i % w < w - 3 && i > 2 * w ? 1 : 0,
  )
  return {
    case: 'c',
    slice: 0,
    image: Float32Array.from({ length: w * h }, () => rng.normal()),
    scribble,
    gc,
    cpl: continuousPseudoLabeller(w, h, { classes, unlabelled, ...cpl })(scribble),
  }
}

/** An augmenter for a w x h grid of this file's classes. */
const augmenter = (w: number, h: number, options: AugmentOptions) =>
  sliceAugmenter({ width: w, height: h, classes, unlabelled, cpl }, options)

/** The 8 maps of the square's symmetry group, as pixel permutations built by brute force. */
const dihedral = (n: number) =>
  [
    (x: number, y: number) => [x, y],
    (x: number, y: number) => [n - 1 - y, x],
    (x: number, y: number) => [n - 1 - x, n - 1 - y],
    (x: number, y: number) => [y, n - 1 - x],
    (x: number, y: number) => [n - 1 - x, y],
    (x: number, y: number) => [x, n - 1 - y],
    (x: number, y: number) => [y, x],
    (x: number, y: number) => [n - 1 - y, n - 1 - x],
  ].map((f) => <A extends Float32Array | Uint8Array>(src: A, planes = 1): A => {
    const out = src.slice() as A
    for (let p = 0; p < planes; p++)
      for (let y = 0; y < n; y++)
        for (let x = 0; x < n; x++) {
          const [sx, sy] = f(x, y)
          out[p * n * n + y * n + x] = src[p * n * n + sy * n + sx]
        }
    return out
  })

t.test('quarter turns and flips permute every field exactly, CPL included', async (t) => {
  const n = 20
  const slice = sliceOf(n, n, 1)
  const augment = augmenter(n, n, { rotateFlip: 1, rotate: 0, maxDegrees: 0 })
  const seen = new Set<number>()
  for (let draw = 0; draw < 64; draw++) {
    const moved = augment(slice, seeded(2, draw))
    const which = dihedral(n).findIndex((map) => {
      const image = map(slice.image)
      return image.every((v, i) => v === moved.image[i])
    })
    t.ok(which >= 0, `draw ${draw} is one of the 8 symmetries`)
    const map = dihedral(n)[which]
    seen.add(which)
    t.same(moved.scribble, map(slice.scribble), 'scribble moved with the image')
    t.same(moved.gc, map(slice.gc), 'GC moved with the image')
    // The EDT is invariant under the grid's symmetries, so recomputing equals moving.
    const moves = map(slice.cpl, classes)
    t.ok(
      moved.cpl.every((v, i) => Math.abs(v - moves[i]) < 1e-6),
      'CPL of the moved scribble',
    )
  }
  t.equal(seen.size, 8, 'the draws cover the whole group')
  t.equal(slice.image[0], sliceOf(n, n, 1).image[0], 'the input slice is left as it was')
})

t.test('a rotation by an angle is exact on a linear image (bilinear interpolation)', async (t) => {
  const [w, h] = [33, 33]
  const c = 16
  const slice = {
    ...sliceOf(w, h, 3),
    image: Float32Array.from({ length: w * h }, (_, i) => 0.25 * (i % w) - 0.5 * Math.floor(i / w)),
  }
  const augment = augmenter(w, h, { rotateFlip: 0, rotate: 1, maxDegrees: 20 })
  for (let draw = 0; draw < 10; draw++) {
    const moved = augment(slice, seeded(4, draw))
    // Recover the angle from the centre's neighbours, then check every interior pixel.
    const gx = (moved.image[c * w + c + 1] - moved.image[c * w + c - 1]) / 2
    const gy = (moved.image[(c + 1) * w + c] - moved.image[(c - 1) * w + c]) / 2
    // f(x, y) = 0.25 x - 0.5 y read at R(p): the gradient is R^T (0.25, -0.5), turned by -angle.
    const angle = Math.atan2(-0.5, 0.25) - Math.atan2(gy, gx)
    const deg = (((angle * 180) / Math.PI + 540) % 360) - 180
    t.ok(Math.abs(deg) <= 20 + 1e-9, `angle ${deg.toFixed(2)} within +-20 degrees`)
    let worst = 0
    for (let y = 8; y < h - 8; y++)
      for (let x = 8; x < w - 8; x++) {
        const sx = c + Math.cos(angle) * (x - c) - Math.sin(angle) * (y - c)
        const sy = c + Math.sin(angle) * (x - c) + Math.cos(angle) * (y - c)
        worst = Math.max(worst, Math.abs(moved.image[y * w + x] - (0.25 * sx - 0.5 * sy)))
      }
    t.ok(worst < 1e-4, `interior matches the rotated plane (max error ${worst.toExponential(1)})`)
    t.ok(
      moved.scribble.every((v) => v <= unlabelled),
      'scribble values stay labels',
    )
    t.ok(
      moved.gc.every((v) => v === 0 || v === 1),
      'GC stays binary',
    )
  }
})

t.test(
  'WSL4MIS odds: half the draws quarter-turn/flip, a quarter rotate, a quarter are left',
  async (t) => {
    const n = 16
    const slice = sliceOf(n, n, 5)
    const augment = sliceAugmenter(
      { width: n, height: n, classes, unlabelled, cpl },
      WSL4MIS_AUGMENT,
    )
    const draws = 2000
    let same = 0
    let symmetric = 0
    for (let draw = 0; draw < draws; draw++) {
      const moved = augment(slice, seeded(6, draw))
      if (moved === slice) same++
      else if (dihedral(n).some((map) => map(slice.image).every((v, i) => v === moved.image[i])))
        symmetric++
    }
    // Binomial standard errors: about 0.011 for p = 0.5, 0.0097 for p = 0.25.
    t.ok(Math.abs(symmetric / draws - 0.5) < 0.045, `quarter-turn/flip ${symmetric / draws}`)
    t.ok(Math.abs(same / draws - 0.25) < 0.04, `untouched ${same / draws}`)
  },
)

t.test('a non-square grid only gets half turns and flips', async (t) => {
  const [w, h] = [12, 8]
  const slice = sliceOf(w, h, 7)
  const augment = augmenter(w, h, { rotateFlip: 1, rotate: 0, maxDegrees: 0 })
  for (let draw = 0; draw < 20; draw++) {
    const moved = augment(slice, seeded(8, draw))
    const sorted = (a: Float32Array) => [...a].sort((p, q) => p - q)
    t.same(sorted(moved.image), sorted(slice.image), `draw ${draw}: a permutation of the pixels`)
  }
})
