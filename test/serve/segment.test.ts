import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import type { ModelCard } from '../../src/serve/model-card.ts'
import { checkDims, classSummary, pngVolume, segmentVolume } from '../../src/serve/segment.ts'
import { realValues, volumeOf } from '../../src/volume/volume.ts'
import { cardFor, diskVolume, thresholdSession } from '../helpers/serve-fixtures.ts'

/** Two classes, the second stored as 3 (LV), so the value mapping shows. */
const twoClassCard = (input: ModelCard['input']): ModelCard => ({
  ...cardFor('threshold', '0'.repeat(64), input),
  classes: [
    { name: 'background', value: 0 },
    { name: 'LV', value: 3 },
  ],
})

const dice = (a: Uint8Array, b: Uint8Array, value: number): number => {
  let both = 0
  let na = 0
  let nb = 0
  for (let i = 0; i < a.length; i++) {
    na += a[i] === value ? 1 : 0
    nb += b[i] === value ? 1 : 0
    both += a[i] === value && b[i] === value ? 1 : 0
  }
  return (2 * both) / (na + nb)
}

t.test('at the native grid, the mask is the session answer voxel for voxel', async (t) => {
  const volume = diskVolume([60, 50, 4], [1.5, 1.5, 8])
  // Same spacing and size as the volume: preprocessing is only the z-score, so the threshold
  // session marks exactly the voxels above their slice's mean.
  const card = twoClassCard({ spacing: [1.5, 1.5], size: [60, 50] })
  const real = realValues(volume)
  const plane = 60 * 50
  const expected = new Uint8Array(real.length)
  for (let k = 0; k < 4; k++) {
    const slice = real.subarray(k * plane, (k + 1) * plane)
    const mean = slice.reduce((a, b) => a + b, 0) / plane
    slice.forEach((v, i) => (expected[k * plane + i] = v > mean ? 3 : 0))
  }
  const session = thresholdSession()
  const mask = await segmentVolume({ card, session }, volume, { batch: 3 })
  t.same(mask.dims, volume.dims)
  t.same(mask.geometry, volume.geometry, 'geometry is the input one')
  t.equal(mask.datatype, 'uint8')
  t.same(Array.from(mask.data), Array.from(expected))
  t.same(
    session.runs,
    [
      [3, 1, 50, 60],
      [1, 1, 50, 60],
    ],
    'batches of 3 slices, NCHW with H the y size',
  )
})

t.test('the batch size does not change the answer', async (t) => {
  const volume = diskVolume([40, 44, 5], [1.2, 1.2, 6])
  const card = twoClassCard({ spacing: [2, 2], size: [32, 32] })
  const masks = await Promise.all(
    [1, 2, 8].map((batch) =>
      segmentVolume({ card, session: thresholdSession() }, volume, { batch }),
    ),
  )
  t.same(masks[1].data, masks[0].data)
  t.same(masks[2].data, masks[0].data)
})

t.test('resampled to the model spacing and back, the disk is where it was', async (t) => {
  const dims = [90, 80, 3] as const
  const spacing = [1, 1, 5] as const
  const volume = diskVolume(dims, spacing, 25)
  // 2 mm pixels and a grid a little smaller than the field of view (crop on both axes).
  const card = twoClassCard({ spacing: [2, 2], size: [40, 36] })
  const progress: number[] = []
  const mask = await segmentVolume({ card, session: thresholdSession() }, volume, {
    batch: 2,
    onProgress: (done) => progress.push(done),
  })
  t.same(progress, [2, 3])
  const [nx, ny] = dims
  const truth = new Uint8Array(nx * ny * 3)
  for (let k = 0; k < 3; k++)
    for (let y = 0; y < ny; y++)
      for (let x = 0; x < nx; x++)
        truth[x + nx * (y + ny * k)] =
          Math.hypot(x - (nx - 1) / 2, y - (ny - 1) / 2) < 25 + k ? 3 : 0
  t.ok(dice(mask.data, truth, 3) > 0.97, `Dice ${dice(mask.data, truth, 3).toFixed(4)} of the disk`)
  t.ok(dice(mask.data, truth, 0) > 0.97, 'and of the background')
})

t.test(
  'a model that outputs another number of classes than its card lists is an error',
  async (t) => {
    const card = {
      ...twoClassCard({ spacing: [1.5, 1.5], size: [60, 50] }),
      classes: cardFor('x', '', { spacing: [1, 1], size: [1, 1] }).classes,
    }
    await t.rejects(
      segmentVolume({ card, session: thresholdSession() }, diskVolume()),
      /outputs 2 classes but its card lists 4/,
    )
  },
)

t.test(
  '2D, 3D and one-frame 4D volumes can be segmented; other dims are refused in words',
  async (t) => {
    t.ok(E.isRight(checkDims([10, 10])))
    t.ok(E.isRight(checkDims([10, 10, 3])))
    t.ok(E.isRight(checkDims([10, 10, 3, 1])))
    t.same(
      checkDims([10, 10, 3, 30]),
      E.left('a 4D volume with 30 frames (dims 10x10x3x30) cannot be segmented: send one 3D frame'),
    )
    t.match(checkDims([10]), { left: /1D volume cannot be segmented/ })
  },
)

t.test('class summary: voxels and millilitres per class of the card', async (t) => {
  const card = cardFor('x', '', { spacing: [1, 1], size: [8, 8] })
  const mask = new Uint8Array([0, 0, 3, 3, 3, 1, 7])
  // 2 x 2 x 2.5 mm = 10 mm^3 = 0.01 mL per voxel; value 7 is on no class.
  t.same(
    classSummary(card, mask, [2, 2, 2.5]).map((c) => [
      c.name,
      c.voxels,
      Number(c.volumeMl?.toFixed(6)),
    ]),
    [
      ['background', 2, 0.02],
      ['RV', 1, 0.01],
      ['MYO', 0, 0],
      ['LV', 3, 0.03],
    ],
  )
  t.same(classSummary(card, mask, null)[3], { name: 'LV', value: 3, voxels: 3, volumeMl: null })
})

t.test('a PNG is a one-slice volume at its pHYs spacing, else at the model spacing', async (t) => {
  const card = cardFor('x', '', { spacing: [1.37, 1.37], size: [8, 8] })
  const grey = new Float32Array(6)
  t.same(pngVolume({ width: 3, height: 2, grey }, card).geometry.spacing, [1.37, 1.37, 1])
  const v = pngVolume({ width: 3, height: 2, grey, spacing: [0.5, 0.25] }, card)
  t.same(v.dims, [3, 2])
  t.same(v.geometry.spacing, [0.5, 0.25, 1])
  t.same(volumeOf({ dims: [3, 2], data: grey, spacing: [0.5, 0.25, 1] }).geometry, v.geometry)
})

t.test('a largest-component card keeps the heart and drops a stray bright blob', async (t) => {
  // A big bright disk and a small bright square far from it, both above the slice mean.
  const [nx, ny, nz] = [60, 50, 3]
  const data = new Float32Array(nx * ny * nz)
  for (let z = 0; z < nz; z++)
    for (let y = 0; y < ny; y++)
      for (let x = 0; x < nx; x++) {
        const disk = (x - 20) ** 2 + (y - 25) ** 2 < 100
        const stray = x >= 52 && x < 56 && y >= 4 && y < 8
        data[(z * ny + y) * nx + x] = disk || stray ? 100 : 0
      }
  const volume = volumeOf({ data, dims: [nx, ny, nz], spacing: [1.5, 1.5, 8] })
  const card = twoClassCard({ spacing: [1.5, 1.5], size: [60, 50] })
  const count = (m: Uint8Array, at: (x: number, y: number) => boolean) => {
    let n = 0
    m.forEach((v, i) => (n += v === 3 && at(i % nx, Math.floor(i / nx) % ny) ? 1 : 0))
    return n
  }
  const isStray = (x: number, y: number) => x >= 50 && y < 10
  const raw = await segmentVolume({ card, session: thresholdSession() }, volume)
  t.equal(count(raw.data, isStray), 16 * nz, 'without clean-up the blob is LV')
  const cleaned = await segmentVolume(
    { card: { ...card, postprocess: 'largest-component' }, session: thresholdSession() },
    volume,
  )
  t.equal(count(cleaned.data, isStray), 0, 'the card asks for the clean-up: the blob is gone')
  t.equal(
    count(cleaned.data, () => true),
    count(raw.data, (x, y) => !isStray(x, y)),
    'the disk is untouched',
  )
  const overridden = await segmentVolume(
    { card: { ...card, postprocess: 'largest-component' }, session: thresholdSession() },
    volume,
    { postprocess: 'none' },
  )
  t.same(overridden.data, raw.data, 'the caller overrides the card')
})

t.test('the card asks for test-time augmentation and the caller may override it', async (t) => {
  const volume = diskVolume([40, 40, 3], [2, 2, 8])
  const card = twoClassCard({ spacing: [2, 2], size: [40, 40] })
  const runs = async (cardTta: 'flip' | undefined, tta?: 'none' | 'dihedral') => {
    const session = thresholdSession()
    await segmentVolume({ card: { ...card, tta: cardTta }, session }, volume, { batch: 3, tta })
    return session.runs.map((dims) => dims[0])
  }
  t.same(await runs(undefined), [3], 'no TTA: one slice a slice')
  t.same(await runs('flip'), [12], "the card's flip: 4 views a slice")
  t.same(await runs('flip', 'dihedral'), [24], 'the caller asks for 8')
  t.same(await runs('flip', 'none'), [3], 'or for none')
})
