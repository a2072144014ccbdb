/**
 * The anatomy of a phantom: a heart drawn per case at a random position, size, ellipticity and
 * rotation, then per slice from base to apex, where the LV narrows and the RV tapers away.
 * All in mm, so the spacing changes pixel sizes, not anatomy. The image and the scribbles
 * are drawn from these shapes (phantom.ts, phantom-scribble.ts).
 *
 * @example
 * const hearts = heartSlices(rng, { size: [160, 160], slices: 8, spacing: [1.5, 1.5, 8] }, 20)
 * classAt(hearts[0], hearts[0].cx, hearts[0].cy, NO_BANDS) // 3: the LV centre is blood pool
 */
import type { Rng } from '../util/rng.ts'
import type { Vec3 } from '../volume/volume.ts'

/**
 * One slice of the heart. The heart's frame is rotated by (cos, sin) from the image axes;
 * the RV is an ellipse centred at u = -rv.d, against the septum.
 */
export interface HeartSlice {
  /** LV centre, mm from the centre of pixel (0, 0). */
  readonly cx: number
  readonly cy: number
  readonly cos: number
  readonly sin: number
  /** LV cavity semi-axes along u and v (mm). */
  readonly rx: number
  readonly ry: number
  /** Myocardial wall thickness (mm). */
  readonly myo: number
  readonly rv?: { readonly d: number; readonly a: number; readonly b: number }
}

export interface Grid {
  readonly size: readonly [number, number]
  readonly slices: number
  readonly spacing: Vec3
}

export const between = (rng: Rng, lo: number, hi: number): number => lo + (hi - lo) * rng.uniform()

/** How far the RV ellipse reaches from the LV centre, per mm of (epicardial) radius. */
const rvReach = (d: number, a: number, b: number): number => {
  let far = 0
  for (let k = 0; k <= 90; k++) {
    const t = (Math.PI * k) / 90
    far = Math.max(far, Math.hypot(d - a * Math.cos(t), b * Math.sin(t)))
  }
  return far
}

/**
 * The heart of one case, slice by slice. `clearance` (mm) is room kept free around the heart
 * (for the background scribble loop): the heart is scaled down when the field of view is
 * small and placed anywhere, within 15% of the centre, that keeps that room inside the image.
 */
export const heartSlices = (rng: Rng, g: Grid, clearance: number): HeartSlice[] => {
  const [sx, sy] = g.spacing
  const fov = [g.size[0] * sx, g.size[1] * sy]
  const minWall = 2 * Math.max(sx, sy)
  const lv = between(rng, 14, 25)
  const ellipticity = between(rng, 0.78, 1)
  const myo = between(rng, 6, 10)
  const psi = between(rng, -Math.PI / 4, Math.PI / 4)
  // The RV reaches (rvD + rvA - 1) epicardial radii beyond the septum: at least 0.45 at the base.
  const [rvD, rvA, rvB] = [between(rng, 0.65, 0.8), between(rng, 0.8, 0.95), between(rng, 1.1, 1.4)]
  const rvUntil = between(rng, 0.6, 0.9)
  const drift = [between(rng, -3, 3), between(rng, -3, 3)]
  const heart = (lv + myo) * Math.max(1, rvReach(rvD, rvA, rvB))
  const half =
    0.5 * Math.min(fov[0], fov[1]) - Math.max(sx, sy) - clearance - Math.hypot(drift[0], drift[1])
  if (half <= 0.25 * heart)
    throw new RangeError(
      `a ${fov[0].toFixed(0)} x ${fov[1].toFixed(0)} mm field of view is too small for a phantom heart; use more pixels or a larger spacing`,
    )
  const scale = Math.min(1, half / heart)
  const room = fov.map((f) =>
    Math.max(0, Math.min(0.5 * f - Math.max(sx, sy) - clearance - heart * scale, 0.15 * f)),
  )
  const cx = 0.5 * (fov[0] - sx) + between(rng, -room[0], room[0])
  const cy = 0.5 * (fov[1] - sy) + between(rng, -room[1], room[1])
  return Array.from({ length: g.slices }, (_, k) => {
    const t = g.slices > 1 ? k / (g.slices - 1) : 0
    const rx = lv * scale * (1 - 0.55 * t)
    const ry = rx * ellipticity
    const m = Math.max(myo * scale * (1 - 0.15 * t), minWall)
    const taper = 1 - (0.6 * t) / rvUntil
    const rv = { d: rvD * (rx + m), a: rvA * (rx + m) * taper, b: rvB * (ry + m) * taper }
    return {
      cx: cx + drift[0] * t,
      cy: cy + drift[1] * t,
      cos: Math.cos(psi),
      sin: Math.sin(psi),
      rx,
      ry,
      myo: m,
      ...(t <= rvUntil ? { rv } : {}),
    }
  })
}

/** Image coordinates (mm) of heart-frame point (u, v). */
export const fromHeart = (h: HeartSlice, u: number, v: number): [number, number] => [
  h.cx + u * h.cos - v * h.sin,
  h.cy + u * h.sin + v * h.cos,
]

export const inEllipse = (u: number, v: number, a: number, b: number): boolean =>
  (u / a) ** 2 + (v / b) ** 2 <= 1

/** Bands around the heart that the image shows but the labels call background (mm wide). */
export interface Bands {
  /** The RV's thin free wall: muscle. */
  readonly rvWall: number
  /** Epicardial fat around the myocardium: bright. */
  readonly fat: number
}

export const NO_BANDS: Bands = { rvWall: 0, fat: 0 }

/**
 * Class at image point (x, y) mm: 3 LV, 2 MYO, 1 RV, 0 background; with bands, -1 on the
 * RV's free wall and -2 in the epicardial fat.
 */
export const classAt = (h: HeartSlice, x: number, y: number, bands: Bands): number => {
  const dx = x - h.cx
  const dy = y - h.cy
  const u = dx * h.cos + dy * h.sin
  const v = dy * h.cos - dx * h.sin
  const epiX = h.rx + h.myo
  const epiY = h.ry + h.myo
  if (inEllipse(u, v, h.rx, h.ry)) return 3
  if (inEllipse(u, v, epiX, epiY)) return 2
  if (h.rv !== undefined) {
    const { d, a, b } = h.rv
    if (inEllipse(u + d, v, a, b)) return 1
    if (bands.rvWall > 0 && inEllipse(u + d, v, a + bands.rvWall, b + bands.rvWall)) return -1
  }
  return bands.fat > 0 && inEllipse(u, v, epiX + bands.fat, epiY + bands.fat) ? -2 : 0
}
