import t from 'tap'
import {
  continuousPseudoLabeller,
  continuousPseudoLabels,
  continuousPseudoLabelVolume,
} from '../../src/maco/cpl.ts'
import { volumeOf } from '../../src/volume/volume.ts'

const f32 = (x: number) => Math.fround(x)

/** A W x H scribble of unlabelled (4) with the given pixels drawn. */
const scribbleOf = (w: number, h: number, strokes: [x: number, y: number, c: number][]) => {
  const s = new Uint8Array(w * h).fill(4)
  for (const [x, y, c] of strokes) s[y * w + x] = c
  return s
}

t.test('values at known distances: 0 -> 1, 10 px -> 1/e, past ln(20)/alpha -> 0', async (t) => {
  const w = 64
  const h = 8
  const y = continuousPseudoLabels(scribbleOf(w, h, [[0, 1, 1]]), w, h)
  const at = (x: number, yy: number, c = 1) => y[c * w * h + yy * w + x]
  t.equal(at(0, 1), 1)
  t.equal(at(10, 1), f32(Math.exp(-1)))
  t.equal(at(3, 5), f32(Math.exp(-0.5)), 'distance 5 on the diagonal (3, 4)')
  t.equal(at(29, 1), f32(Math.exp(-2.9)), '29 px is inside the reach (ln 20 / 0.1 = 29.96)')
  t.equal(at(30, 1), 0, '30 px is past it')
  t.equal(at(63, 7), 0)
})

t.test(
  'matches exp(-alpha * brute-force distance) with the floor on a random scribble',
  async (t) => {
    const w = 41
    const h = 37
    let seed = 3
    const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
    const strokes: [number, number, number][] = []
    for (let i = 0; i < 30; i++)
      strokes.push([Math.floor(next() * w), Math.floor(next() * h), Math.floor(next() * 3)])
    const scribble = scribbleOf(w, h, strokes)
    const alpha = 0.15
    const floor = 0.1
    const y = continuousPseudoLabels(scribble, w, h, { alpha, floor })
    let mismatches = 0
    for (let c = 0; c < 4; c++)
      for (let yy = 0; yy < h; yy++)
        for (let x = 0; x < w; x++) {
          let best = Infinity
          for (const [sx, sy, sc] of strokes)
            if (scribble[sy * w + sx] === sc && sc === c)
              best = Math.min(best, Math.hypot(x - sx, yy - sy))
          const v = Math.exp(-alpha * best)
          const expected = v >= floor ? f32(v) : 0
          if (y[c * w * h + yy * w + x] !== expected) mismatches++
        }
    t.equal(mismatches, 0)
    t.ok(
      y.subarray(3 * w * h).every((v) => v === 0),
      'class 3 was never drawn',
    )
  },
)

t.test(
  'a class without a scribble is zero everywhere; unlabelled and foreign values are ignored',
  async (t) => {
    const w = 5
    const h = 4
    const s = scribbleOf(w, h, [
      [1, 1, 0],
      [3, 2, 7],
    ])
    const y = continuousPseudoLabels(s, w, h)
    t.equal(y.length, 4 * w * h)
    t.ok(
      y.subarray(w * h).every((v) => v === 0),
      'classes 1..3 empty, 7 is no class',
    )
    t.equal(y[1 * w + 1], 1)
    // with 5 classes and unlabelled 4, the value 4 (everywhere here) is still not a scribble
    const five = continuousPseudoLabels(s, w, h, { classes: 5 })
    t.ok(five.subarray(4 * w * h).every((v) => v === 0))
    // unlabelled = 0 makes the background stroke an unannotated pixel
    t.ok(continuousPseudoLabels(s, w, h, { unlabelled: 0 }).every((v) => v === 0))
  },
)

t.test('floor 0 keeps every value; float scribbles work as integer ones', async (t) => {
  const w = 80
  const h = 2
  const s = scribbleOf(w, h, [[0, 0, 2]])
  const y = continuousPseudoLabels(Float32Array.from(s), w, h, { floor: 0 })
  t.equal(y[2 * w * h + w - 1], f32(Math.exp(-0.1 * Math.hypot(w - 1, 0))))
  t.ok(y.subarray(2 * w * h, 3 * w * h).every((v) => v > 0))
})

t.test('a labeller reuses its output buffer and rejects wrong sizes', async (t) => {
  const label = continuousPseudoLabeller(3, 2)
  const out = new Float32Array(24).fill(9)
  t.equal(label(scribbleOf(3, 2, [[0, 0, 1]]), out), out)
  t.equal(out[6], 1)
  t.equal(out[0], 0, 'stale values of an empty class are cleared')
  t.throws(() => label(new Uint8Array(5)), /expected 3 x 2/)
  t.throws(() => label(new Uint8Array(6), new Float32Array(3)), /output needs 24/)
  t.throws(() => continuousPseudoLabeller(3, 2, { alpha: -1 }), /alpha/)
  t.throws(() => continuousPseudoLabeller(3, 2, { floor: 2 }), /floor/)
  t.throws(() => continuousPseudoLabeller(3, 2, { classes: 0 }), /classes/)
})

t.test('a volume gives (x, y, z, class) float32 slices with the same geometry', async (t) => {
  const [w, h] = [6, 5]
  const slices = [scribbleOf(w, h, [[0, 0, 1]]), scribbleOf(w, h, [[5, 4, 3]])]
  const data = new Uint8Array(w * h * 2)
  data.set(slices[0], 0)
  data.set(slices[1], w * h)
  const v = volumeOf({ dims: [w, h, 2], data, spacing: [1.5, 1.5, 8] })
  const y = continuousPseudoLabelVolume(v)
  t.same(y.dims, [w, h, 2, 4])
  t.equal(y.datatype, 'float32')
  t.same(y.geometry, v.geometry)
  const n = w * h * 2
  for (let z = 0; z < 2; z++) {
    const one = continuousPseudoLabels(slices[z], w, h)
    for (let c = 0; c < 4; c++)
      t.same(
        y.data.subarray(c * n + z * w * h, c * n + (z + 1) * w * h),
        one.subarray(c * w * h, (c + 1) * w * h),
        `z ${z} class ${c}`,
      )
  }
})
