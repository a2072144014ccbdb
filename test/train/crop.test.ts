import t from 'tap'
import { sliceCropper } from '../../src/train/crop.ts'
import type { TrainingSlice } from '../../src/train/training-set.ts'
import { seeded } from '../../src/util/rng.ts'

const classes = 3

/**
 * A w x h slice whose every field says where it was: image x + 1000 y, scribble and GC from
 * x and y, CPL plane c at (x, y) = c + 10 x + 1000 y. A crop is then checkable pixel by pixel.
 */
const codedSlice = (w: number, h: number): TrainingSlice => ({
  case: 'c',
  slice: 7,
  image: Float32Array.from({ length: w * h }, (_, i) => (i % w) + 1000 * Math.floor(i / w)),
  scribble: Uint8Array.from({ length: w * h }, (_, i) => (i % w) + 3 * Math.floor(i / w)),
  gc: Uint8Array.from({ length: w * h }, (_, i) => ((i % w) + Math.floor(i / w)) % 2),
  cpl: Float32Array.from({ length: classes * w * h }, (_, j) => {
    const i = j % (w * h)
    return Math.floor(j / (w * h)) + 10 * (i % w) + 1000 * Math.floor(i / w)
  }),
})

t.test('every field is the same window of the slice, the CPL plane by plane', async (t) => {
  const [W, H, w, h] = [20, 12, 8, 4]
  const slice = codedSlice(W, H)
  const crop = sliceCropper({ width: W, height: H, classes }, [w, h])
  for (let k = 0; k < 20; k++) {
    const c = crop(slice, seeded(1, 'crop-test', k))
    t.equal(c.image.length, w * h)
    t.equal(c.cpl.length, classes * w * h)
    t.same([c.case, c.slice], ['c', 7])
    // The window's corner, read back from the coded image.
    const x0 = c.image[0] % 1000
    const y0 = Math.floor(c.image[0] / 1000)
    t.ok(x0 >= 0 && x0 <= W - w && y0 >= 0 && y0 <= H - h, `corner (${x0}, ${y0}) inside`)
    let wrong = 0
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const [sx, sy] = [x0 + x, y0 + y]
        const i = y * w + x
        if (c.image[i] !== sx + 1000 * sy) wrong++
        if (c.scribble[i] !== sx + 3 * sy) wrong++
        if (c.gc[i] !== (sx + sy) % 2) wrong++
        for (let p = 0; p < classes; p++)
          if (c.cpl[p * w * h + i] !== p + 10 * sx + 1000 * sy) wrong++
      }
    t.equal(wrong, 0, `draw ${k}: every pixel of every field from (${x0}, ${y0})`)
  }
})

t.test('every offset is drawn, about equally often; the same seed, the same window', async (t) => {
  const [W, H, w, h] = [10, 6, 6, 4] // 5 x 3 offsets
  const slice = codedSlice(W, H)
  const crop = sliceCropper({ width: W, height: H, classes }, [w, h])
  const draws = 3000
  const counts = new Map<number, number>()
  for (let k = 0; k < draws; k++) {
    const corner = crop(slice, seeded(2, 'offsets', k)).image[0]
    counts.set(corner, (counts.get(corner) ?? 0) + 1)
  }
  const expected = [0, 1, 2].flatMap((y) => [0, 1, 2, 3, 4].map((x) => x + 1000 * y))
  t.same(
    [...counts.keys()].sort((a, b) => a - b),
    expected,
    'the 15 corners, no other',
  )
  // Each count is binomial(3000, 1/15): mean 200, sd 13.7; 5 sd either side.
  for (const [corner, n] of counts) t.ok(Math.abs(n - 200) < 69, `corner ${corner}: ${n} draws`)
  t.same(crop(slice, seeded(5, 'x')).image, crop(slice, seeded(5, 'x')).image)
})

t.test('a crop the size of the slice is the slice itself', async (t) => {
  const slice = codedSlice(8, 8)
  t.equal(sliceCropper({ width: 8, height: 8, classes }, [8, 8])(slice, seeded(1)), slice)
})

t.test('crops that cannot be cut are refused', async (t) => {
  const grid = { width: 16, height: 8, classes }
  t.throws(() => sliceCropper(grid, [16, 16]), /a 16x16 crop does not fit a 16x8 slice/)
  t.throws(() => sliceCropper(grid, [0, 4]), /positive integer sides, got 0x4/)
  t.throws(() => sliceCropper(grid, [4.5, 4]), /positive integer sides/)
})
