import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PNG } from 'pngjs'
import t from 'tap'
import { phantomCase, phantomDataset, type PhantomCase } from '../../src/data/phantom.ts'
import { applyAffine } from '../../src/volume/volume.ts'
import { bytes } from '../helpers/bytes.ts'

const OUTPUT = join(import.meta.dirname, '../../tmp/test-output')

/** Slice k of a phantom as its label and scribble planes. */
const planes = (c: PhantomCase, k: number) => {
  const [nx, ny] = c.label.dims
  const n = nx * ny
  return {
    nx,
    ny,
    label: c.label.data.subarray(k * n, (k + 1) * n),
    scribble: c.scribble.data.subarray(k * n, (k + 1) * n),
  }
}

/** Pixels reachable from the image border through 4-neighbours that `open` allows. */
const floodFromBorder = (nx: number, ny: number, open: (p: number) => boolean): Uint8Array => {
  const seen = new Uint8Array(nx * ny)
  const stack: number[] = []
  const push = (i: number, j: number) => {
    if (i < 0 || j < 0 || i >= nx || j >= ny) return
    const p = j * nx + i
    if (seen[p] || !open(p)) return
    seen[p] = 1
    stack.push(p)
  }
  for (let i = 0; i < nx; i++) [push(i, 0), push(i, ny - 1)]
  for (let j = 0; j < ny; j++) [push(0, j), push(nx - 1, j)]
  while (stack.length > 0) {
    const p = stack.pop() as number
    const i = p % nx
    const j = (p - i) / nx
    push(i + 1, j)
    push(i - 1, j)
    push(i, j + 1)
    push(i, j - 1)
  }
  return seen
}

// Varied grids: the default, an ACDC-like one, a small one and anisotropic pixels.
const cases: PhantomCase[] = [
  ...phantomDataset(6, 11),
  ...phantomDataset(3, 12, { size: [256, 224], slices: 9, spacing: [1.37, 1.37, 10] }),
  ...phantomDataset(3, 13, { size: [64, 64], slices: 4, spacing: [2, 2, 8] }),
  ...phantomDataset(3, 14, { size: [128, 160], slices: 6, spacing: [1.8, 1.2, 6] }),
]
const slicesOf = (c: PhantomCase) => Array.from({ length: c.label.dims[2] }, (_, k) => planes(c, k))

t.test('the same seed gives the same case, bit for bit; another seed another case', async (t) => {
  const a = phantomCase(5, { slices: 3 })
  const b = phantomCase(5, { slices: 3 })
  t.same(bytes(a.image.data), bytes(b.image.data))
  t.same(bytes(a.scribble.data), bytes(b.scribble.data))
  t.notSame(bytes(phantomCase(6, { slices: 3 }).label.data), bytes(a.label.data))
  const few = phantomDataset(2, 3)
  const more = phantomDataset(4, 3)
  t.same(
    bytes(more[1].image.data),
    bytes(few[1].image.data),
    'case i does not depend on the dataset size',
  )
  t.same(
    more.map((c) => c.case),
    ['phantom000', 'phantom001', 'phantom002', 'phantom003'],
  )
})

t.test('volumes look like a scan: dims, types, spacing, a centred affine', async (t) => {
  const c = phantomCase(1, { size: [96, 80], slices: 5, spacing: [1.5, 1.25, 8] })
  t.equal(c.case, 'phantom-1')
  for (const v of [c.image, c.label, c.scribble]) {
    t.same(v.dims, [96, 80, 5])
    t.same(v.geometry.spacing, [1.5, 1.25, 8])
    t.same(
      applyAffine(v.geometry.affine, [47.5, 39.5, 2]),
      [0, 0, 0],
      'the centre of the FOV is at the origin',
    )
    t.same(applyAffine(v.geometry.affine, [48.5, 39.5, 3]), [1.5, 0, 8])
  }
  t.same([c.image.datatype, c.label.datatype, c.scribble.datatype], ['float32', 'uint8', 'uint8'])
  t.ok(
    c.image.data.every((x) => Number.isFinite(x) && x >= 0),
    'Rician magnitudes are finite and >= 0',
  )
})

t.test('class layout: the LV is enclosed by myocardium, every slice has LV and MYO', async (t) => {
  let slices = 0
  let lvNotEnclosed = 0
  let rvSlices = 0
  for (const c of cases)
    for (const { nx, ny, label } of slicesOf(c)) {
      slices++
      const count = [0, 0, 0, 0, 0]
      for (const v of label) count[Math.min(v, 4)]++
      if (count[4] > 0 || count[3] === 0 || count[2] === 0) t.fail(`${c.case}: classes ${count}`)
      if (count[1] > 0) rvSlices++
      for (let j = 0; j < ny; j++)
        for (let i = 0; i < nx; i++) {
          if (label[j * nx + i] !== 3) continue
          const around = [
            label[j * nx + i + 1],
            label[j * nx + i - 1],
            label[(j + 1) * nx + i],
            label[(j - 1) * nx + i],
          ]
          if (around.some((v) => v !== 3 && v !== 2)) lvNotEnclosed++
        }
    }
  t.equal(lvNotEnclosed, 0, 'LV pixels touch only LV or MYO')
  t.ok(
    rvSlices > 0.5 * slices && rvSlices < slices,
    `the RV is in most slices but tapers away (${rvSlices}/${slices})`,
  )
})

t.test(
  'scribbles: a background loop encloses the heart; strokes lie in their class; sparse',
  async (t) => {
    const problems: string[] = []
    for (const c of cases)
      slicesOf(c).forEach(({ nx, ny, label, scribble }, k) => {
        const where = `${c.case} slice ${k}`
        const outside = floodFromBorder(nx, ny, (p) => scribble[p] !== 0)
        if (label.some((v, p) => v > 0 && outside[p] === 1))
          problems.push(`${where}: a heart pixel is outside the loop`)
        if (scribble.some((s, p) => s < 4 && label[p] !== s))
          problems.push(`${where}: a scribble crosses its class`)
        const drawn = scribble.filter((s) => s < 4).length
        // On a scan-sized grid; on a 64 px one the heart fills the view and its loop is 10%+.
        if (nx >= 128 && drawn >= 0.1 * nx * ny)
          problems.push(`${where}: ${drawn} scribble pixels of ${nx * ny}`)
        for (const cls of [0, 2, 3])
          if (!scribble.includes(cls)) problems.push(`${where}: no scribble of class ${cls}`)
        if (scribble.some((s) => s > 4)) problems.push(`${where}: scribble values outside 0..4`)
      })
    t.same(problems, [])
    const basal = cases.map((c) => planes(c, 0).scribble.includes(1))
    t.ok(basal.every(Boolean), 'every basal slice has an RV stroke')
  },
)

t.test('bad options are refused in words', async (t) => {
  t.throws(
    () => phantomCase(1, { size: [16, 160] }),
    /size must be whole numbers >= 32, got 16 x 160/,
  )
  t.throws(() => phantomCase(1, { slices: 0 }), /slices must be a whole number >= 1, got 0/)
  t.throws(() => phantomCase(1, { spacing: [1, -1, 8] }), /spacing must be positive/)
  t.throws(
    () => phantomCase(1, { size: [32, 32], spacing: [0.5, 0.5, 8] }),
    /16 x 16 mm field of view is too small/,
  )
})

t.test('the image shows what the labels say; one slice as a picture to look at', async (t) => {
  const c = phantomCase(2024, { size: [192, 192], slices: 8, spacing: [1.37, 1.37, 8] })
  const k = 2
  const [nx, ny] = c.image.dims
  const image = c.image.data.subarray(k * nx * ny, (k + 1) * nx * ny)
  const { scribble, label } = planes(c, k)
  const mean = (cls: number) => {
    const values = image.filter((_, p) => label[p] === cls)
    return values.reduce((a, b) => a + b, 0) / values.length
  }
  const [background, rv, myo, lv] = [0, 1, 2, 3].map(mean)
  t.ok(
    lv > rv && rv > myo + 0.3,
    `bright blood pools, dark muscle (LV ${lv}, RV ${rv}, MYO ${myo})`,
  )
  t.ok(lv > background + 0.3, `the LV stands out from the chest (${background})`)
  const colours = [
    [255, 230, 0],
    [0, 140, 255],
    [0, 220, 0],
    [255, 40, 40],
  ]
  const zoom = 3
  const png = new PNG({ width: 2 * nx * zoom, height: ny * zoom })
  for (let y = 0; y < ny * zoom; y++)
    for (let x = 0; x < 2 * nx * zoom; x++) {
      const i = Math.floor(x / zoom) % nx
      const p = Math.floor(y / zoom) * nx + i
      const grey = Math.min(255, Math.round(image[p] * 255))
      const rgb = x >= nx * zoom && scribble[p] < 4 ? colours[scribble[p]] : [grey, grey, grey]
      png.data.set([...rgb, 255], (y * 2 * nx * zoom + x) * 4)
    }
  await mkdir(OUTPUT, { recursive: true })
  const file = join(OUTPUT, 'phantom-slice.png')
  await writeFile(file, PNG.sync.write(png))
  t.comment(`wrote ${file}`)
})
