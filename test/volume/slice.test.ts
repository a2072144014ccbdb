import t from 'tap'
import { sliceCount, sliceOf, slicesOf, stackSlices } from '../../src/volume/slice.ts'
import { volumeOf } from '../../src/volume/volume.ts'

// 3 x 2 x 2, stored values 0..11, real = stored * 0.5 + 1
const volume = volumeOf({
  dims: [3, 2, 2],
  data: Uint16Array.from({ length: 12 }, (_, i) => i),
  spacing: [1.5, 2, 8],
  scaling: { slope: 0.5, inter: 1 },
})

t.test('a slice is one z plane in real values with the in-plane spacing', async (t) => {
  const s = sliceOf(volume, 1)
  t.same([s.width, s.height, s.spacing], [3, 2, [1.5, 2]])
  t.same([...s.data], [4, 4.5, 5, 5.5, 6, 6.5])
  t.ok(s.data instanceof Float32Array)
})

t.test('every slice, then stacked back, gives the volume in real values', async (t) => {
  const slices = slicesOf(volume)
  t.equal(slices.length, 2)
  const back = stackSlices(slices, 8)
  t.same(back.dims, [3, 2, 2])
  t.same(back.geometry.spacing, [1.5, 2, 8])
  t.same(
    [...back.data],
    [...Array(12).keys()].map((i) => i * 0.5 + 1),
  )
})

t.test('a 4D volume has z times t slices, a 2D one has one', async (t) => {
  t.equal(sliceCount({ dims: [4, 4, 3, 2] }), 6)
  t.equal(sliceCount({ dims: [4, 4] }), 1)
  const flat = volumeOf({ dims: [2, 2], data: new Uint8Array([1, 2, 3, 4]), spacing: [1, 1, 1] })
  t.same([...sliceOf(flat, 0).data], [1, 2, 3, 4])
})

t.test('out-of-range slices and mismatched stacks are refused', async (t) => {
  t.throws(() => sliceOf(volume, 2), /slice 2 is outside a volume of 2 slices/)
  t.throws(() => sliceOf(volume, -1), RangeError)
  t.throws(() => stackSlices([]), /at least one slice/)
  const a = sliceOf(volume, 0)
  t.throws(() => stackSlices([a, { ...a, spacing: [1, 1] }]), /slice 1 is 3x2 at 1x1 mm/)
})
