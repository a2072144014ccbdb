/**
 * Fixtures for the serving tests: a small random-weight UNet exported to ONNX with its
 * model card in a folder (a random model still gives a mask of the right shape and
 * geometry), a threshold "session" whose answer is known exactly, and a synthetic volume
 * with an oblique affine.
 *
 * @example
 * const dir = await tinyModelDir(t.testdir(), { name: 'tiny' })  // tiny.onnx + tiny.json
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { exportOnnx } from '../../src/model/onnx-export.ts'
import { unetSpec } from '../../src/model/unet.ts'
import type { ModelCard } from '../../src/serve/model-card.ts'
import { sha256Hex } from '../../src/serve/models.ts'
import type { Session } from '../../src/serve/runtime.ts'
import { volumeOf, type Mat4, type Volume } from '../../src/volume/volume.ts'
import { randomWeights } from './unet-weights.ts'

export const CLASSES = [
  { name: 'background', value: 0 },
  { name: 'RV', value: 1 },
  { name: 'MYO', value: 2 },
  { name: 'LV', value: 3 },
]

export const cardFor = (name: string, sha256: string, input: ModelCard['input']): ModelCard => ({
  name,
  classes: CLASSES,
  input,
  normalisation: 'zscore-slice',
  training: { recipe: 'random weights (test)', data: 'none' },
  onnx: { sha256 },
})

/** `NAME.onnx` (UNet base 4, 3 levels, random weights) and `NAME.json` in `dir`; returns `dir`. */
export const tinyModelDir = async (
  dir: string,
  opts: { name?: string; input?: ModelCard['input']; seed?: number } = {},
): Promise<string> => {
  const name = opts.name ?? 'tiny'
  const spec = unetSpec({ base: 4, levels: 3, dropout: [0, 0, 0], classes: CLASSES.length })
  const onnx = exportOnnx(spec, randomWeights(spec, opts.seed ?? 3))
  const card = cardFor(
    name,
    await sha256Hex(onnx),
    opts.input ?? { spacing: [2, 2], size: [96, 96] },
  )
  await writeFile(join(dir, `${name}.onnx`), onnx)
  await writeFile(join(dir, `${name}.json`), JSON.stringify(card, null, 2))
  return dir
}

/**
 * A two-class stand-in for a network: probability 1 for class 1 where the (z-scored) input
 * is above 0, else class 0. Records the dims of every run.
 */
export const thresholdSession = (): Session & { runs: (readonly number[])[] } => {
  const runs: (readonly number[])[] = []
  return {
    runtimeName: 'onnxruntime-web',
    threads: 1,
    runs,
    run: async (input, dims) => {
      runs.push(dims)
      const [n, , h, w] = dims
      const plane = h * w
      const probabilities = new Float32Array(n * 2 * plane)
      for (let s = 0; s < n; s++)
        for (let i = 0; i < plane; i++) {
          const above = input[s * plane + i] > 0 ? 1 : 0
          probabilities[(s * 2 + 1) * plane + i] = above
          probabilities[s * 2 * plane + i] = 1 - above
        }
      return { probabilities, dims: [n, 2, h, w] }
    },
    release: async () => undefined,
  }
}

/** Rotated about z by 30 degrees, x flipped, with an offset: a geometry nothing can guess. */
export const obliqueAffine = (spacing: readonly [number, number, number]): Mat4 => {
  const [c, s] = [Math.cos(Math.PI / 6), Math.sin(Math.PI / 6)]
  return [
    [-c * spacing[0], -s * spacing[1], 0, 91.5],
    [-s * spacing[0], c * spacing[1], 0, -40.25],
    [0, 0, spacing[2], 12],
    [0, 0, 0, 1],
  ]
}

/**
 * A uint16 volume with a bright disk (radius `r` mm, centred) on a faint ramp, per slice a
 * slightly different radius; oblique affine, scl_slope 1/65535 as ACDC stores images.
 */
export const diskVolume = (
  dims: readonly [number, number, number] = [60, 50, 4],
  spacing: readonly [number, number, number] = [1.5, 1.5, 8],
  r = 18,
): Volume<Uint16Array> => {
  const [nx, ny, nz] = dims
  const data = new Uint16Array(nx * ny * nz)
  for (let k = 0; k < nz; k++)
    for (let y = 0; y < ny; y++)
      for (let x = 0; x < nx; x++) {
        const dx = (x - (nx - 1) / 2) * spacing[0]
        const dy = (y - (ny - 1) / 2) * spacing[1]
        const inside = Math.hypot(dx, dy) < r + k
        data[x + nx * (y + ny * k)] = (inside ? 40000 : 2000) + 37 * x + 11 * y
      }
  return volumeOf({
    dims,
    data,
    spacing,
    affine: obliqueAffine(spacing),
    scaling: { slope: 1 / 65535, inter: 0 },
  })
}
