import t from 'tap'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { centreCropPad } from '../../src/volume/crop.ts'
import {
  fromNetworkGrid,
  preprocessPlan,
  preprocessVolume,
  toNetworkGrid,
  backgroundOutside,
} from '../../src/volume/preprocess.ts'
import { resampleSlice } from '../../src/volume/resample.ts'
import { slicesOf, type Slice } from '../../src/volume/slice.ts'
import { readNiftiFile } from '../../src/volume/nifti-file.ts'
import { sharedData } from '../helpers/data.ts'
import { applyAffine, volumeOf, type Mat4, type Vec3 } from '../../src/volume/volume.ts'

const sliceFrom = (
  width: number,
  height: number,
  spacing: readonly [number, number],
  value: (x: number, y: number) => number,
): Slice => ({
  width,
  height,
  spacing,
  data: Float32Array.from({ length: width * height }, (_, i) =>
    value(i % width, Math.floor(i / width)),
  ),
})

/** Rotation about z by a, then about x by b, columns scaled by the spacing, then an offset. */
const obliqueAffine = (spacing: Vec3, a: number, b: number, offset: Vec3): Mat4 => {
  const rz = [
    [Math.cos(a), -Math.sin(a), 0],
    [Math.sin(a), Math.cos(a), 0],
    [0, 0, 1],
  ]
  const rx = [
    [1, 0, 0],
    [0, Math.cos(b), -Math.sin(b)],
    [0, Math.sin(b), Math.cos(b)],
  ]
  const r = rz.map((row) =>
    [0, 1, 2].map((c) => row[0] * rx[0][c] + row[1] * rx[1][c] + row[2] * rx[2][c]),
  )
  return [...r.map((row, i) => [...row.map((v, c) => v * spacing[c]), offset[i]]), [0, 0, 0, 1]]
}

const columnNorm = (m: Mat4, c: number) => Math.hypot(m[0][c], m[1][c], m[2][c])
const distance = (p: Vec3, q: Vec3) => Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2])

/** Per-pixel argmax over C stacked planes of `n` values. */
const argmax = (planes: Float32Array, classes: number, n: number): Uint8Array =>
  Uint8Array.from({ length: n }, (_, i) => {
    let best = 0
    for (let c = 1; c < classes; c++) if (planes[c * n + i] > planes[best * n + i]) best = c
    return best
  })

const dice = (a: ArrayLike<number>, b: ArrayLike<number>, c: number): number => {
  let both = 0
  let sum = 0
  for (let i = 0; i < a.length; i++) {
    if (a[i] === c && b[i] === c) both++
    sum += Number(a[i] === c) + Number(b[i] === c)
  }
  return sum === 0 ? 1 : (2 * both) / sum
}

/** One-hot planes of a label slice, class-major. */
const oneHot = (labels: ArrayLike<number>, classes: number): Float32Array => {
  const out = new Float32Array(classes * labels.length)
  for (let i = 0; i < labels.length; i++) out[labels[i] * labels.length + i] = 1
  return out
}

/** A short-axis-like phantom in mm: LV disc, MYO ring, RV crescent, background. */
const phantom = (width: number, height: number, spacing: readonly [number, number]): Slice =>
  sliceFrom(width, height, spacing, (x, y) => {
    const px = (x - width / 2) * spacing[0]
    const py = (y - height / 2) * spacing[1]
    const r = Math.hypot(px - 8, py)
    if (r < 22) return 3
    if (r < 31) return 2
    return Math.hypot(px + 30, py + 4) < 30 ? 1 : 0
  })

t.test(
  'the network grid centre is the native FOV centre; steps are the spacing ratio',
  async (t) => {
    for (const [dims, size] of [
      [
        [216, 256],
        [256, 256],
      ],
      [
        [155, 171],
        [128, 96],
      ],
      [
        [7, 8],
        [256, 255],
      ],
    ] as const) {
      const plan = preprocessPlan({ dims, spacing: [1.5625, 1.7] }, { spacing: [1.37, 1.37], size })
      t.ok(Math.abs(plan.x.origin + ((size[0] - 1) / 2) * plan.x.step - (dims[0] - 1) / 2) < 1e-9)
      t.ok(Math.abs(plan.y.origin + ((size[1] - 1) / 2) * plan.y.step - (dims[1] - 1) / 2) < 1e-9)
      t.ok(
        Math.abs(plan.x.step - 1.37 / 1.5625) < 1e-12 && Math.abs(plan.y.step - 1.37 / 1.7) < 1e-12,
      )
    }
  },
)

t.test('one pass equals resample then crop/pad when the difference is even', async (t) => {
  // (native size, native spacing) per axis; round(n s / 1.37) - size even in each case
  for (const [width, height, spacing, size] of [
    [60, 50, [1.6, 1.2], [48, 32]], // 70 - 48, 44 - 32: crop
    [20, 30, [1.37, 1.37], [30, 40]], // pad, no resampling
    [37, 41, [0.9, 2.0], [26, 20]], // 24 - 26 (pad), 60 - 20 (crop)
  ] as const) {
    const image = sliceFrom(width, height, spacing, (x, y) => Math.sin(x / 3) * 50 + y * y)
    const labels = sliceFrom(width, height, spacing, (x, y) => (x * 7 + y * 3) % 5)
    const plan = preprocessPlan({ dims: [width, height], spacing }, { spacing: [1.37, 1.37], size })
    for (const [mode, s] of [
      ['bilinear', image],
      ['nearest', labels],
    ] as const) {
      const twoStep = centreCropPad(size)(resampleSlice({ spacing: [1.37, 1.37] }, mode)(s))
      t.equal((twoStep.width - size[0]) % 2, 0)
      const onePass = toNetworkGrid(plan, mode)(s)
      t.same([onePass.width, onePass.height, onePass.spacing], [size[0], size[1], [1.37, 1.37]])
      const worst = onePass.data.reduce((m, v, i) => Math.max(m, Math.abs(v - twoStep.data[i])), 0)
      t.ok(worst < 1e-4, `${width}x${height} ${mode}: max difference ${worst}`)
    }
  }
})

t.test('a slice of the wrong size for the plan is refused', async (t) => {
  const plan = preprocessPlan(
    { dims: [10, 10], spacing: [1, 1] },
    { spacing: [1, 1], size: [8, 8] },
  )
  t.throws(
    () => toNetworkGrid(plan, 'nearest')(sliceFrom(9, 10, [1, 1], () => 0)),
    /expected a 10x10 slice/,
  )
  t.throws(
    () => preprocessPlan({ dims: [10, 10], spacing: [1, 1] }, { spacing: [1, 1], size: [0, 8] }),
    /positive integer/,
  )
})

t.test('a preprocessed volume keeps every voxel at its world point (oblique affine)', async (t) => {
  const dims = [60, 50, 4]
  const spacing: Vec3 = [1.6, 1.2, 8]
  const affine = obliqueAffine(spacing, 0.5, 0.35, [-40, 25, 12])
  // Intensity linear in world position: bilinear reproduces it, so the output must equal
  // the world function at the output voxel's world point (z-scored per slice).
  const world = (p: Vec3) => 200 + 3 * p[0] - 2 * p[1] + 0.5 * p[2]
  const data = new Float32Array(60 * 50 * 4)
  for (let k = 0; k < 4; k++)
    for (let j = 0; j < 50; j++)
      for (let i = 0; i < 60; i++)
        data[(k * 50 + j) * 60 + i] = world(applyAffine(affine, [i, j, k]))
  const v = volumeOf({ dims, data, spacing, affine })
  const size = [48, 32] as const // every network pixel centre inside the native pixel centres
  const out = preprocessVolume(v, { spacing: [1.37, 1.37], size, kind: 'image' })
  t.same(out.dims, [48, 32, 4])
  t.same(out.geometry.spacing, [1.37, 1.37, 8])
  t.equal(out.datatype, 'float32')
  const a = out.geometry.affine
  ;[1.37, 1.37, 8].forEach((s, c) =>
    t.ok(Math.abs(columnNorm(a, c) - s) < 1e-9, `column ${c} has length ${s}`),
  )
  t.same(out.geometry.qform, a)
  t.same(out.geometry.sform, a)
  for (let k = 0; k < 4; k++) {
    const centre = distance(applyAffine(a, [23.5, 15.5, k]), applyAffine(affine, [29.5, 24.5, k]))
    t.ok(centre < 1e-9, `slice ${k}: FOV centre at the same world point (${centre} mm apart)`)
    const expected = Float64Array.from({ length: 48 * 32 }, (_, p) =>
      world(applyAffine(a, [p % 48, Math.floor(p / 48), k])),
    )
    const mean = expected.reduce((x, y) => x + y, 0) / expected.length
    const sd = Math.sqrt(expected.reduce((x, y) => x + (y - mean) ** 2, 0) / expected.length)
    let worst = 0
    for (let p = 0; p < 48 * 32; p++)
      worst = Math.max(worst, Math.abs(out.data[k * 48 * 32 + p] - (expected[p] - mean) / sd))
    t.ok(worst < 1e-4, `slice ${k}: max error ${worst}`)
  }
})

t.test('the FOV centre is kept when padding to 256 too, for an oblique affine', async (t) => {
  for (const [nx, ny] of [
    [216, 256],
    [155, 171],
  ]) {
    const spacing: Vec3 = [1.5625, 1.5625, 10]
    const affine = obliqueAffine(spacing, -1.1, 0.8, [100, -30, 7])
    const v = volumeOf({ dims: [nx, ny, 2], data: new Uint8Array(nx * ny * 2), spacing, affine })
    const out = preprocessVolume(v, { spacing: [1.37, 1.37], size: [256, 256], kind: 'label' })
    t.same(out.geometry.spacing, [1.37, 1.37, 10])
    const centre = distance(
      applyAffine(out.geometry.affine, [127.5, 127.5, 1]),
      applyAffine(affine, [(nx - 1) / 2, (ny - 1) / 2, 1]),
    )
    t.ok(centre < 1e-9, `${nx}x${ny}: ${centre} mm apart`)
  }
})

t.test('labels stay uint8, copied by nearest, with the fill outside the native FOV', async (t) => {
  // Same spacing: no resampling, so the output is the centred pad of each slice (20 -> 30, 10 -> 14).
  const data = Uint8Array.from({ length: 20 * 10 * 2 }, (_, i) => (i * 7) % 4)
  const v = volumeOf({ dims: [20, 10, 2], data, spacing: [1.37, 1.37, 5] })
  const out = preprocessVolume(v, { spacing: [1.37, 1.37], size: [30, 14], kind: 'label', fill: 4 })
  t.equal(out.datatype, 'uint8')
  t.ok(out.data instanceof Uint8Array)
  for (let k = 0; k < 2; k++) {
    const native = sliceFrom(20, 10, [1.37, 1.37], (x, y) => data[(k * 10 + y) * 20 + x])
    t.same(
      [...out.data.subarray(k * 420, (k + 1) * 420)],
      [...centreCropPad([30, 14], 4)(native).data],
    )
  }
  const resampled = preprocessVolume(v, { spacing: [0.9, 2.1], size: [40, 8], kind: 'label' })
  t.ok(
    resampled.data.every((l) => l < 4),
    'only labels of the input (and the fill 0)',
  )
})

t.test('the inverse mapping reproduces a linear ramp at native pixels', async (t) => {
  // native -> network (bilinear) -> native (bilinear): both steps are exact on linear
  // functions wherever every sample involved is interior.
  const ramp = (x: number, y: number) => 5 + 0.3 * x + 0.45 * y
  for (const [width, height, spacing, size] of [
    [90, 80, [1.5625, 1.5625], [96, 96]],
    [64, 70, [1.1, 0.8], [40, 36]],
  ] as const) {
    const plan = preprocessPlan({ dims: [width, height], spacing }, { spacing: [1.37, 1.37], size })
    const network = toNetworkGrid(plan, 'bilinear')(sliceFrom(width, height, spacing, ramp))
    const back = fromNetworkGrid(plan)(network.data)
    t.equal(back.length, width * height)
    let checked = 0
    let worst = 0
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        // network continuous index of this native pixel, by the documented convention
        const u = (size[0] - 1) / 2 + ((x - (width - 1) / 2) * spacing[0]) / 1.37
        const v = (size[1] - 1) / 2 + ((y - (height - 1) / 2) * spacing[1]) / 1.37
        const inside = (w: number, n: number, s: number, m: number) =>
          [Math.floor(w), Math.ceil(w)].every((i) => {
            const native = (n - 1) / 2 + ((i - (m - 1) / 2) * 1.37) / s
            return i >= 0 && i < m && native >= 0 && native <= n - 1
          })
        if (!inside(u, width, spacing[0], size[0]) || !inside(v, height, spacing[1], size[1]))
          continue
        checked++
        worst = Math.max(worst, Math.abs(back[y * width + x] - ramp(x, y)))
      }
    t.ok(checked > 0.5 * width * height, `${checked} pixels checked`)
    t.ok(worst < 1e-4, `${width}x${height}: max error ${worst}`)
  }
})

t.test('labels to the network grid and back: Dice > 0.99 per class', async (t) => {
  // Nearest labels are checked only where the network grid is finer than the native one:
  // sampled coarser, a label map loses detail that no inverse can bring back.
  for (const [width, height, spacing, nearestToo] of [
    [180, 200, [1.5625, 1.5625], true], // padded to 256
    [300, 290, [1.5, 1.45], true], // cropped
    [120, 110, [1.2, 1.3], false], // padded, network grid coarser
  ] as const) {
    const labels = phantom(width, height, spacing)
    const n = width * height
    const plan = preprocessPlan(
      { dims: [width, height], spacing },
      { spacing: [1.37, 1.37], size: [256, 256] },
    )
    // (a) one-hot probabilities resampled bilinearly; (b) labels by nearest, one-hot on the network grid
    const toNetwork = toNetworkGrid(plan, 'bilinear')
    const hot = oneHot(labels.data, 4)
    const viaBilinear = new Float32Array(4 * 256 * 256)
    for (let c = 0; c < 4; c++)
      viaBilinear.set(
        toNetwork({ ...labels, data: hot.subarray(c * n, (c + 1) * n) }).data,
        c * 256 * 256,
      )
    const ways: [string, Float32Array][] = [['bilinear', viaBilinear]]
    if (nearestToo) ways.push(['nearest', oneHot(toNetworkGrid(plan, 'nearest')(labels).data, 4)])
    for (const [name, probabilities] of ways) {
      const back = argmax(fromNetworkGrid(plan)(probabilities), 4, n)
      for (let c = 0; c < 4; c++) {
        const d = dice(back, labels.data, c)
        t.ok(d > 0.99, `${width}x${height} ${name} class ${c}: Dice ${d.toFixed(4)}`)
      }
    }
  }
})

t.test('a batch of planes maps plane by plane; a ragged stack is refused', async (t) => {
  const plan = preprocessPlan(
    { dims: [13, 11], spacing: [1.6, 1.1] },
    { spacing: [1.37, 1.37], size: [16, 8] },
  )
  const planes = Float32Array.from({ length: 6 * 128 }, (_, i) => Math.cos(i))
  const back = fromNetworkGrid(plan)(planes)
  t.equal(back.length, 6 * 143)
  for (let p = 0; p < 6; p++)
    t.same(
      [...back.subarray(p * 143, (p + 1) * 143)],
      [...fromNetworkGrid(plan)(planes.subarray(p * 128, (p + 1) * 128))],
    )
  t.throws(() => fromNetworkGrid(plan)(new Float32Array(129)), /not a stack of 16x8 planes/)
})

const acdc = sharedData('acdc/val')
t.test(
  'ACDC val labels to 1.37 mm 256 px and back: Dice > 0.99 per class',
  { skip: acdc.skip },
  async (t) => {
    const files = readdirSync(acdc.path!).filter((f) => f.endsWith('_label.nii.gz'))
    t.equal(files.length, 30)
    const target = { spacing: [1.37, 1.37], size: [256, 256] } as const
    for (const file of files) {
      const read = await readNiftiFile(join(acdc.path!, file))()
      if (E.isLeft(read)) throw new Error(read.left)
      const v = read.right
      const [nx, ny] = v.dims
      const n = nx * ny
      const plan = preprocessPlan({ dims: v.dims, spacing: v.geometry.spacing }, target)
      const toNetwork = toNetworkGrid(plan, 'bilinear')
      const back = fromNetworkGrid(plan)
      const restored = new Uint8Array(v.data.length)
      for (const [k, s] of slicesOf(v).entries()) {
        const hot = oneHot(s.data, 4)
        const probabilities = new Float32Array(4 * 256 * 256)
        for (let c = 0; c < 4; c++)
          probabilities.set(
            toNetwork({ ...s, data: hot.subarray(c * n, (c + 1) * n) }).data,
            c * 256 * 256,
          )
        restored.set(argmax(back(probabilities), 4, n), k * n)
      }
      const scores = [0, 1, 2, 3].map((c) => dice(restored, v.data, c))
      t.ok(
        scores.every((d) => d > 0.99),
        `${file}: Dice ${scores.map((d) => d.toFixed(4)).join(' ')}`,
      )
    }
  },
)

t.test('outside the network FOV, class probabilities map back to background', async (t) => {
  // 100 native pixels at 1 mm, a 40 px network grid at 1 mm: native x 30..69 (and y) were seen
  const plan = preprocessPlan(
    { dims: [100, 100], spacing: [1, 1] },
    { spacing: [1, 1], size: [40, 40] },
  )
  const planes = new Float32Array(2 * 40 * 40)
  planes.fill(0.2, 0, 1600)
  planes.fill(0.8, 1600)
  const native = fromNetworkGrid(plan, backgroundOutside(2))(planes)
  const at = (c: number, x: number, y: number) => native[c * 10000 + y * 100 + x]
  t.same(
    [at(0, 50, 50), at(1, 50, 50)].map((v) => +v.toFixed(6)),
    [0.2, 0.8],
    'seen: the network',
  )
  t.same([at(0, 5, 50), at(1, 5, 50)], [1, 0], 'cropped away in x: background')
  t.same([at(0, 50, 95), at(1, 50, 95)], [1, 0], 'cropped away in y: background')
  t.same([at(0, 29, 29), at(1, 29, 29)], [1, 0], 'just outside the corner')
  t.same(
    [at(0, 30, 30), at(1, 30, 30)].map((v) => +v.toFixed(6)),
    [0.2, 0.8],
    'just inside',
  )
  const edge = fromNetworkGrid(plan)(planes)
  t.equal(+edge[5 * 100 + 5].toFixed(6), 0.2, 'without `outside` the border repeats')
})
