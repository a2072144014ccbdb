import t from 'tap'
import { centreCropPad } from '../../src/volume/crop.ts'

const slice = (width: number, height: number, data: number[]) => ({
  width,
  height,
  data: Float32Array.from(data),
  spacing: [1.2, 0.8] as const,
})
const ramp = (width: number, height: number) =>
  slice(
    width,
    height,
    Array.from({ length: width * height }, (_, i) => i + 1),
  )

t.test('padding puts the extra pixel of an odd difference at the end', async (t) => {
  const out = centreCropPad([6, 1])(slice(3, 1, [1, 2, 3]))
  t.same([...out.data], [0, 1, 2, 3, 0, 0])
  t.same(out.spacing, [1.2, 0.8])
  t.same([...centreCropPad([5, 1], -9)(slice(3, 1, [1, 2, 3])).data], [-9, 1, 2, 3, -9])
})

t.test('cropping drops the extra pixel of an odd difference from the end', async (t) => {
  t.same([...centreCropPad([3, 1])(slice(6, 1, [1, 2, 3, 4, 5, 6])).data], [2, 3, 4])
  t.same([...centreCropPad([2, 1])(slice(5, 1, [1, 2, 3, 4, 5])).data], [2, 3])
})

t.test('crop then pad back returns the centre in place, fill around it', async (t) => {
  // 9 x 8 -> 4 x 4: x drops 2 at the start and 3 at the end, y drops 2 and 2
  const input = ramp(9, 8)
  const back = centreCropPad([9, 8], -1)(centreCropPad([4, 4])(input))
  for (let y = 0; y < 8; y++)
    for (let x = 0; x < 9; x++) {
      const kept = x >= 2 && x <= 5 && y >= 2 && y <= 5
      const want = kept ? input.data[y * 9 + x] : -1
      if (back.data[y * 9 + x] !== want) t.fail(`(${x}, ${y}): ${back.data[y * 9 + x]} != ${want}`)
    }
  t.same([back.width, back.height], [9, 8])
})

t.test('one axis cropped while the other is padded; same size is the identity', async (t) => {
  const out = centreCropPad([2, 4])(ramp(4, 2))
  t.same([...out.data], [0, 0, 2, 3, 6, 7, 0, 0])
  const same = ramp(5, 3)
  t.same([...centreCropPad([5, 3])(same).data], [...same.data])
})

t.test('a size that is not a positive integer is refused', async (t) => {
  t.throws(() => centreCropPad([0, 4])(ramp(3, 3)), /positive integer/)
  t.throws(() => centreCropPad([2.5, 4])(ramp(3, 3)), /positive integer/)
})
