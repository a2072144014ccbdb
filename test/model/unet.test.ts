import t from 'tap'
import { parameterCount, parameterShapes, unetSpec } from '../../src/model/unet.ts'

t.test('the default UNet has the reference parameter count', async (t) => {
  t.equal(parameterCount(unetSpec()), 1_813_764)
})

t.test('a narrower, shallower UNet counts what it builds', async (t) => {
  const spec = unetSpec({ base: 4, levels: 2, dropout: [0, 0.1], classes: 2 })
  // enc0 (1->4), enc1 (4->8), dec0.reduce (8->4, 1x1), dec0 block (8->4), out (4->2, 3x3)
  const block = (i: number, o: number) => 9 * i * o + o + 9 * o * o + o + 4 * o
  const expected = block(1, 4) + block(4, 8) + (8 * 4 + 4) + block(8, 4) + (9 * 4 * 2 + 2)
  t.equal(parameterCount(spec), expected)
  t.ok(parameterShapes(spec).some((p) => p.name === 'enc1.bn2.movingVariance' && !p.trainable))
})

t.test('one dropout rate per level is required', async (t) => {
  t.throws(() => unetSpec({ levels: 3 }), /one rate per level/)
})
