/**
 * Synthetic short-axis cardiac MRI: seeded phantoms with full masks and annotator-like
 * scribbles, so tests and the out-of-the-box demo need no data. The anatomy (a bright LV
 * blood pool (3) in a dark myocardial ring (2), a crescent RV (1) against the septum) comes
 * from phantom-heart.ts, the scribbles from phantom-scribble.ts; this module paints the image
 * (textured chest with body outline, subcutaneous fat and lungs, a smooth bias field,
 * partial-volume blur, Rician noise) and assembles the volumes.
 *
 * Volumes are what the rest of the toolkit reads from NIfTI: float32 image, uint8 label and
 * scribble (4 = unlabelled), the given spacing, an affine centred on the field of view.
 *
 * @example
 * const c = phantomCase(7, { size: [160, 160], slices: 10, spacing: [1.5, 1.5, 8] })
 * c.image.dims // [160, 160, 10]
 * phantomDataset(20, 1).map((c) => c.case) // ['phantom000', ..., 'phantom019']
 */
import { seeded, type Rng } from '../util/rng.ts'
import { volumeOf, type Vec3, type Volume } from '../volume/volume.ts'
import {
  between,
  classAt,
  heartSlices,
  inEllipse,
  NO_BANDS,
  type HeartSlice,
} from './phantom-heart.ts'
import { drawScribbles, loopClearance } from './phantom-scribble.ts'

export interface PhantomOptions {
  /** In-plane size in pixels [nx, ny], each at least 32. */
  readonly size: readonly [number, number]
  readonly slices: number
  /** Voxel size in mm. */
  readonly spacing: Vec3
  /** Rician noise level, relative to the blood pool's brightness (about 1). */
  readonly noise: number
}

export const DEFAULT_PHANTOM: PhantomOptions = {
  size: [160, 160],
  slices: 8,
  spacing: [1.5, 1.5, 8],
  noise: 0.04,
}

export interface PhantomCase {
  readonly case: string
  readonly image: Volume<Float32Array>
  readonly label: Volume<Uint8Array>
  readonly scribble: Volume<Uint8Array>
}

/** Value noise in [0, 1]: random values on a grid of `cell`-pixel squares, smoothly interpolated. */
const valueNoise = (rng: Rng, nx: number, ny: number, cell: number): Float32Array => {
  const gx = Math.ceil(nx / cell) + 2
  const gy = Math.ceil(ny / cell) + 2
  const grid = Float32Array.from({ length: gx * gy }, () => rng.uniform())
  const out = new Float32Array(nx * ny)
  const smooth = (f: number) => f * f * (3 - 2 * f)
  for (let j = 0; j < ny; j++) {
    const fy = j / cell
    const y0 = Math.floor(fy)
    const wy = smooth(fy - y0)
    for (let i = 0; i < nx; i++) {
      const fx = i / cell
      const x0 = Math.floor(fx)
      const wx = smooth(fx - x0)
      const g = y0 * gx + x0
      const top = grid[g] + wx * (grid[g + 1] - grid[g])
      const bottom = grid[g + gx] + wx * (grid[g + gx + 1] - grid[g + gx])
      out[j * nx + i] = top + wy * (bottom - top)
    }
  }
  return out
}

/** [1 2 1] / 4 along x then y, edges clamped: the partial-volume softening of real edges. */
const blur121 = (a: Float32Array, nx: number, ny: number): Float32Array => {
  const tmp = new Float32Array(a.length)
  const out = new Float32Array(a.length)
  for (let j = 0; j < ny; j++)
    for (let i = 0; i < nx; i++) {
      const r = j * nx
      tmp[r + i] =
        0.25 * (a[r + Math.max(i - 1, 0)] + 2 * a[r + i] + a[r + Math.min(i + 1, nx - 1)])
    }
  for (let j = 0; j < ny; j++)
    for (let i = 0; i < nx; i++)
      out[j * nx + i] =
        0.25 *
        (tmp[Math.max(j - 1, 0) * nx + i] +
          2 * tmp[j * nx + i] +
          tmp[Math.min(j + 1, ny - 1) * nx + i])
  return out
}

interface Appearance {
  readonly lvBlood: number
  readonly rvBlood: number
  readonly muscle: number
  /** Body outline: centre and semi-axes, mm; fat band thickness. */
  readonly body: readonly [number, number, number, number]
  readonly fat: number
  /** Width (mm) of the epicardial fat band around the myocardium. */
  readonly epicardialFat: number
  /** Two lungs beside the heart: centre offsets across the heart (mm) and semi-axes. */
  readonly lungs: readonly (readonly [number, number, number, number])[]
}

const appearance = (rng: Rng, o: PhantomOptions, first: HeartSlice): Appearance => {
  const fov = [o.size[0] * o.spacing[0], o.size[1] * o.spacing[1]]
  const reach = first.rx + first.myo
  return {
    lvBlood: between(rng, 0.82, 0.95),
    rvBlood: between(rng, 0.7, 0.85),
    muscle: between(rng, 0.2, 0.3),
    body: [
      0.5 * fov[0] + between(rng, -0.03, 0.03) * fov[0],
      0.5 * fov[1] + between(rng, -0.03, 0.03) * fov[1],
      between(rng, 0.44, 0.49) * fov[0],
      between(rng, 0.36, 0.44) * fov[1],
    ],
    fat: between(rng, 5, 12),
    epicardialFat: between(rng, 1.5, 4),
    lungs: [-1, 1].map((side) => [
      first.cx + side * between(rng, 2.4, 3) * reach,
      first.cy + between(rng, 0.3, 1) * reach,
      between(rng, 0.8, 1.2) * reach,
      between(rng, 1.2, 1.8) * reach,
    ]),
  }
}

/** The noise-free image of one slice, from its labels and the case's appearance. */
const renderSlice = (
  rng: Rng,
  o: PhantomOptions,
  h: HeartSlice,
  look: Appearance,
  label: Uint8Array,
): Float32Array => {
  const [nx, ny] = o.size
  const [sx, sy] = o.spacing
  const texture = valueNoise(rng, nx, ny, Math.max(2, 20 / sx))
  const detail = valueNoise(rng, nx, ny, Math.max(2, 6 / sx))
  const bias = valueNoise(rng, nx, ny, Math.max(4, 90 / sx))
  const [bx, by, ba, bb] = look.body
  const bands = { rvWall: Math.max(2.5, sx), fat: look.epicardialFat }
  const out = new Float32Array(nx * ny)
  for (let j = 0; j < ny; j++)
    for (let i = 0; i < nx; i++) {
      const p = j * nx + i
      const x = i * sx
      const y = j * sy
      const n = 0.6 * texture[p] + 0.4 * detail[p]
      let value = 0
      if (inEllipse(x - bx, y - by, ba, bb)) {
        const inner = inEllipse(x - bx, y - by, ba - look.fat, bb - look.fat)
        value = inner ? 0.3 + 0.3 * n : 0.65 + 0.2 * n
        for (const [lx, ly, la, lb] of look.lungs)
          if (inner && inEllipse(x - lx, y - ly, la, lb)) value = 0.04 + 0.05 * n
      }
      const c = label[p] > 0 ? label[p] : classAt(h, x, y, bands)
      if (c === 3) value = look.lvBlood + 0.05 * (n - 0.5)
      else if (c === 1) value = look.rvBlood + 0.05 * (n - 0.5)
      else if (c === 2 || c === -1) value = look.muscle + 0.06 * (n - 0.5)
      // Epicardial fat is patchy: bright where the texture is high, tissue elsewhere.
      else if (c === -2 && n > 0.45) value = 0.7 + 0.15 * n
      out[p] = value * (0.85 + 0.3 * bias[p])
    }
  return out
}

const checkOptions = (o: PhantomOptions): void => {
  const [nx, ny] = o.size
  if (![nx, ny].every((n) => Number.isInteger(n) && n >= 32))
    throw new RangeError(`phantom size must be whole numbers >= 32, got ${nx} x ${ny}`)
  if (!(Number.isInteger(o.slices) && o.slices >= 1))
    throw new RangeError(`phantom slices must be a whole number >= 1, got ${o.slices}`)
  if (!o.spacing.every((s) => Number.isFinite(s) && s > 0))
    throw new RangeError(`phantom spacing must be positive, got ${o.spacing.join(' x ')}`)
  if (!(Number.isFinite(o.noise) && o.noise >= 0))
    throw new RangeError(`phantom noise must be >= 0, got ${o.noise}`)
}

/** The affine of a volume made by code: diagonal spacing, the field of view centred on 0. */
const centredAffine = (dims: readonly number[], s: Vec3) =>
  [0, 1, 2]
    .map((r) => [0, 1, 2].map((c) => (r === c ? s[r] : 0)).concat(-0.5 * s[r] * (dims[r] - 1)))
    .concat([[0, 0, 0, 1]])

const generate = (rng: Rng, name: string, partial: Partial<PhantomOptions>): PhantomCase => {
  const o = { ...DEFAULT_PHANTOM, ...partial }
  checkOptions(o)
  const [nx, ny] = o.size
  const n = nx * ny
  const hearts = heartSlices(rng, o, loopClearance(o.spacing))
  const look = appearance(rng, o, hearts[0])
  const label = new Uint8Array(n * o.slices)
  const scribble = new Uint8Array(n * o.slices)
  const image = new Float32Array(n * o.slices)
  hearts.forEach((h, k) => {
    const lab = label.subarray(k * n, (k + 1) * n)
    for (let j = 0; j < ny; j++)
      for (let i = 0; i < nx; i++) {
        lab[j * nx + i] = classAt(h, i * o.spacing[0], j * o.spacing[1], NO_BANDS)
      }
    const clean = blur121(renderSlice(rng, o, h, look, lab), nx, ny)
    for (let p = 0; p < n; p++) {
      // Rician: the magnitude of a complex signal with Gaussian noise on both channels, the
      // two normals of one Box-Muller draw.
      const r = o.noise * Math.sqrt(-2 * Math.log(1 - rng.uniform()))
      const angle = 2 * Math.PI * rng.uniform()
      const re = clean[p] + r * Math.cos(angle)
      const im = r * Math.sin(angle)
      image[k * n + p] = Math.sqrt(re * re + im * im)
    }
    drawScribbles(rng, h, lab, scribble.subarray(k * n, (k + 1) * n), nx, ny, o.spacing)
  })
  const dims = [nx, ny, o.slices]
  const geometry = { spacing: o.spacing, affine: centredAffine(dims, o.spacing) }
  return {
    case: name,
    image: volumeOf({ dims, data: image, ...geometry }),
    label: volumeOf({ dims, data: label, ...geometry }),
    scribble: volumeOf({ dims, data: scribble, ...geometry }),
  }
}

/** One phantom; the same seed and options give the same volumes, bit for bit. */
export const phantomCase = (
  seed: number,
  opts: Partial<PhantomOptions> = {},
  name = `phantom-${seed}`,
): PhantomCase => generate(seeded(seed, 'phantom'), name, opts)

/** `count` phantoms named phantom000, phantom001, ...; case i is the same whatever `count` is. */
export const phantomDataset = (
  count: number,
  seed: number,
  opts: Partial<PhantomOptions> = {},
): PhantomCase[] =>
  Array.from({ length: count }, (_, i) =>
    generate(seeded(seed, 'phantom', i), `phantom${String(i).padStart(3, '0')}`, opts),
  )
