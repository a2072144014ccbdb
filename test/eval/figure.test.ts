import t from 'tap'
import * as E from 'fp-ts/lib/Either.js'
import {
  autoSlices,
  CLASS_COLOURS,
  figure,
  MAX_FIGURE_PIXELS,
  panelSize,
  spreadSlices,
  type Figure,
  type FigureInput,
} from '../../src/eval/figure.ts'
import { volumeOf, voxelCount, type Vec3, type Volume } from '../../src/volume/volume.ts'

/** A float32 volume of `fill(x, y, z)`; a 4th axis repeats the 3D volume. */
const volume = (
  dims: readonly number[],
  fill: (x: number, y: number, z: number) => number,
  spacing: Vec3 = [1, 1, 1],
): Volume => {
  const [nx, ny, nz = 1] = dims
  const data = new Float32Array(voxelCount(dims))
  for (let z = 0; z < data.length / (nx * ny); z++)
    for (let y = 0; y < ny; y++)
      for (let x = 0; x < nx; x++) data[x + nx * (y + ny * z)] = fill(x, y, z % nz)
  return volumeOf({ dims, data, spacing })
}

const made = (input: FigureInput): Figure => {
  const r = figure(input)
  if (E.isLeft(r)) throw new Error(r.left)
  return r.right
}

/** RGBA at pixel (u, v) of the panel in `row`, `column`. */
const pixel = (f: Figure, row: number, column: number, u: number, v: number): number[] => {
  const p = f.panels.find((q) => q.row === row && q.column === column)!
  const i = ((p.y + v) * f.width + p.x + u) * 4
  return [...f.rgba.subarray(i, i + 4)]
}

const plain = { captions: false, gap: 4 }

t.test('layout: a panel per slice and layer, gaps around and between', async (t) => {
  const image = volume([6, 5, 4], (x, y, z) => x + y + z)
  const label = volume([6, 5, 4], () => 0)
  // 5 rows at minimum height 10: factor 2, panels 12 x 10; 3 columns, 2 rows, gap 4.
  const f = made({
    image,
    overlays: [
      { title: 'scribble', kind: 'strokes', volume: label },
      { title: 'gt', kind: 'mask', volume: label },
    ],
    slices: [0, 2],
    options: { ...plain, minPanelHeight: 10 },
  })
  t.equal(f.width, 4 + 3 * (12 + 4))
  t.equal(f.height, 4 + 2 * (10 + 4))
  t.equal(f.rgba.length, f.width * f.height * 4)
  t.same(f.slices, [0, 2])
  t.equal(f.panels.length, 6)
  t.match(
    f.panels.find((p) => p.row === 1 && p.column === 2),
    {
      slice: 2,
      x: 4 + 2 * 16,
      y: 4 + 14,
      width: 12,
      height: 10,
    },
  )
  t.ok(
    [...f.rgba.subarray(0, f.width * 4)].every((b) => b === 255),
    'the top gap is white',
  )
  t.ok(
    f.rgba.every((b, i) => i % 4 !== 3 || b === 255),
    'opaque',
  )
})

t.test(
  'colours: windowed grey, strokes opaque, masks blended, transparent values grey',
  async (t) => {
    // Values 0..99: numpy's percentiles are 0.99 (1st) and 98.01 (99th).
    const image = volume([10, 10], (x, y) => x + 10 * y)
    const scribble = volume([10, 10], (x, y) => (y === 0 && x < 4 ? x : 4))
    const label = volume([10, 10], (x, y) => (x === 7 && y === 3 ? 3 : 0))
    const f = made({
      image,
      overlays: [
        { title: 'scribble', kind: 'strokes', volume: scribble },
        { title: 'gt', kind: 'mask', volume: label },
      ],
      slices: [0],
      options: { ...plain, minPanelHeight: 20, maskOpacity: 0.25 },
    })
    t.same(
      f.window.map((w) => Number(w.toFixed(6))),
      [0.99, 98.01],
    )
    const at = (column: number, x: number, y: number) => pixel(f, 0, column, 2 * x + 1, 2 * y + 1)
    // grey = round(255 (v - 0.99) / 97.02): 37 -> 95, 50 -> 129; 0 and 1 clip to black.
    t.same(at(0, 7, 3), [95, 95, 95, 255], 'image alone')
    t.same(at(0, 0, 5), [129, 129, 129, 255])
    t.same(at(0, 0, 0), [0, 0, 0, 255])
    t.same(at(0, 9, 9), [255, 255, 255, 255], 'above the 99th percentile is white')
    t.same(at(1, 0, 5), [129, 129, 129, 255], 'an unlabelled scribble pixel stays grey')
    t.same(at(1, 0, 0), [...CLASS_COLOURS[0], 255], 'background stroke drawn, opaque')
    t.same(at(1, 2, 0), [...CLASS_COLOURS[2], 255], 'MYO stroke')
    // LV over grey 95 at 0.25: 0.75 * 95 + 0.25 * (40, 110, 255) = (81.25, 98.75, 135)
    t.same(CLASS_COLOURS[3], [40, 110, 255])
    t.same(at(2, 7, 3), [81, 99, 135, 255], 'a label pixel gets its class colour blended')
    t.same(at(2, 6, 3), [...at(0, 6, 3)], 'background of a mask stays the image')
    t.same(at(2, 0, 5), [129, 129, 129, 255])
    const [rv, myo, lv] = [1, 2, 3].map((c) => CLASS_COLOURS[c])
    t.ok(rv[0] > 2 * rv[1] && rv[0] > 2 * rv[2], 'RV red-ish')
    t.ok(myo[1] > 2 * myo[0] && myo[1] > 2 * myo[2], 'MYO green')
    t.ok(lv[2] > 2 * lv[0] && lv[2] > 2 * lv[1], 'LV blue')
  },
)

t.test('anisotropic spacing: the coarser axis is stretched, then an integer upscale', async (t) => {
  t.same(panelSize(6, 5, [1, 2], 10), { width: 6, height: 10 })
  t.same(panelSize(6, 5, [1, 2], 25), { width: 18, height: 30 })
  t.same(panelSize(6, 5, [3, 1], 12), { width: 54, height: 15 })
  t.same(panelSize(216, 256, [1.5625, 1.5625], 200), { width: 216, height: 256 }, 'no upscale')
  // One LV voxel at (1, 2) with 1 x 2 mm pixels, panel 18 x 30: each voxel 3 px wide, 6 tall.
  const image = volume([6, 5], () => 0, [1, 2, 5])
  const label = volume([6, 5], (x, y) => (x === 1 && y === 2 ? 3 : 0), [1, 2, 5])
  const f = made({
    image,
    overlays: [{ title: 'gt', kind: 'mask', volume: label }],
    slices: [0],
    options: { ...plain, minPanelHeight: 25 },
  })
  const p = f.panels[1]
  t.same([p.width, p.height], [18, 30])
  const coloured: [number, number][] = []
  for (let v = 0; v < p.height; v++)
    for (let u = 0; u < p.width; u++) if (pixel(f, 0, 1, u, v)[2] > 0) coloured.push([u, v])
  const expected: [number, number][] = []
  for (let v = 12; v < 18; v++) for (let u = 3; u < 6; u++) expected.push([u, v])
  t.same(coloured, expected, 'exactly the voxel rectangle')
})

t.test('slices spread through the heart: label, else scribble, else the stack', async (t) => {
  t.same(spreadSlices([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), [2, 5, 8])
  t.same(spreadSlices([3, 4, 5, 6, 7, 8]), [4, 6, 7])
  t.same(spreadSlices([4, 9]), [4, 9])
  t.same(spreadSlices([6]), [6])
  t.same(spreadSlices([]), [])
  const image = volume([4, 4, 12], () => 1)
  const label = volume([4, 4, 12], (x, _y, z) => (z >= 3 && z <= 8 && x === 2 ? 2 : 0))
  const empty = volume([4, 4, 12], () => 0)
  // Foreground strokes in 1, 2, 10; slice 5 has background strokes only, the rest unlabelled.
  const scribble = volume([4, 4, 12], (x, _y, z) =>
    x === 1 && [1, 2, 10].includes(z) ? 1 : x === 0 && z === 5 ? 0 : 4,
  )
  t.same(autoSlices(image, { label, scribble, unlabelled: 4 }), [4, 6, 7])
  t.same(autoSlices(image, { label: empty, scribble, unlabelled: 4 }), [1, 2, 10])
  t.same(autoSlices(image, { unlabelled: 4 }), [2, 6, 9], 'whole stack of 12')
  t.same(
    autoSlices(
      volume([4, 4], () => 1),
      { unlabelled: 4 },
    ),
    [0],
    'a 2D image',
  )
  const f = made({
    image,
    overlays: [
      { title: 'scribble', kind: 'strokes', volume: scribble },
      { title: 'gt', kind: 'mask', volume: label },
    ],
    slices: 'auto',
    options: plain,
  })
  t.same(f.slices, [4, 6, 7], 'figure uses the mask overlay as the label')
})

t.test('captions draw in bands of their own and leave the panels as they are', async (t) => {
  const image = volume([10, 8, 3], (x, y, z) => x * y + z)
  const label = volume([10, 8, 3], (x) => (x > 4 ? 1 : 0))
  const input: FigureInput = {
    image,
    overlays: [{ title: 'ground truth', kind: 'mask', volume: label }],
    slices: [1, 2],
    options: { ...plain, minPanelHeight: 40 },
  }
  const bare = made(input)
  const f = made({
    ...input,
    options: { ...input.options, captions: true, title: 'I' },
  })
  // Title band 4 + 21, header band 4 + 14; left margin 4 + width of 'z 1' at scale 2 (34).
  t.equal(f.height, bare.height + 25 + 18)
  t.equal(f.width, bare.width + 4 + 34)
  for (const p of f.panels) {
    const q = bare.panels.find((b) => b.row === p.row && b.column === p.column)!
    const rows = Array.from({ length: p.height }, (_, v) =>
      Array.from({ length: p.width }, (_, u) => pixel(f, p.row, p.column, u, v).join()).join(),
    )
    const bareRows = Array.from({ length: q.height }, (_, v) =>
      Array.from({ length: q.width }, (_, u) => pixel(bare, q.row, q.column, u, v).join()).join(),
    )
    const same = rows.join('|') === bareRows.join('|')
    t.ok(same, `panel ${p.row},${p.column} unchanged`)
  }
  const black = (x: number, y: number) =>
    f.rgba.subarray((y * f.width + x) * 4, (y * f.width + x) * 4 + 3).every((b) => b === 0)
  // 'I' at scale 3 from (4, 4): top row 01110, so columns 1..3 black and 0 white.
  t.ok(black(4 + 3, 4) && black(4 + 9, 4) && !black(4, 4) && !black(4 + 12, 4), 'title glyph')
  for (const p of f.panels.filter((q) => q.row === 0)) {
    let dark = 0
    for (let y = 25; y < p.y; y++) for (let x = p.x; x < p.x + p.width; x++) if (black(x, y)) dark++
    t.ok(dark > 20, `column ${p.column} has a header (${dark} dark pixels)`)
  }
})

t.test('volumes that do not fit are refused with a reason', async (t) => {
  const image = volume([6, 5, 4], () => 1)
  const reason = (input: Partial<FigureInput>) => {
    const r = figure({ image, overlays: [], slices: [0], ...input })
    return E.isLeft(r) ? r.left : 'accepted'
  }
  t.equal(
    reason({
      overlays: [
        { title: 'gt', kind: 'mask', volume: volume([6, 5, 3], () => 0), source: 'gt.nii' },
      ],
    }),
    'gt.nii has dims 6x5x3, the image 6x5x4; all volumes must share dims',
  )
  t.match(
    reason({ overlays: [{ title: 'p', kind: 'mask', volume: volume([5, 6, 4], () => 0) }] }),
    /^p has dims 5x6x4/,
  )
  t.equal(reason({ slices: [1, 4] }), "slice 4 is outside the image's 4 slices (0..3)")
  t.equal(reason({ slices: [] }), 'no slices to show')
  t.match(
    reason({ image: volume([6, 5, 4, 2], () => 0) }),
    /the image has dims 6x5x4x2; a figure needs 2D or 3D/,
  )
  t.equal(
    reason({ image: volume([6, 5, 4, 1], () => 0) }),
    'accepted',
    'a trailing axis of 1 is 3D',
  )
  t.match(
    reason({ image: volume([6, 5, 4], () => 0, [1, 1e6, 1]) }),
    new RegExp(`more than ${MAX_FIGURE_PIXELS} allowed`),
    'a wild spacing ratio does not allocate',
  )
})
