/**
 * Test-time augmentation: a Session that runs each batch on several mirror images of its
 * slices, maps each prediction back onto the slice and averages the class probabilities.
 * The network was trained on quarter turns and flips of every slice (WSL4MIS augmentation),
 * so these views are equally valid inputs and their mean is a smoother estimate, with
 * fewer stray blobs, at the cost of one inference per view.
 *
 * - `flip`: the slice, mirrored left-right, up-down and both (4 views);
 * - `dihedral`: those and their transposes, every quarter turn and flip (8 views; square
 *   slices only, as every recipe's grid is: other slices get the 4 flips).
 *
 * A model card may ask for it (`tta`), as for the post-processing; `segmentVolume` applies
 * it, so `maco predict` and the segment endpoint do the same.
 *
 * @example
 * const session = withTta('flip')(await createSession(bytes))
 * await segmentVolume({ card, session }, volume)
 */
import type { Tta } from './model-card.ts'
import type { Prediction, Session } from './runtime.ts'

/** A view of an H x W plane: transposed first (square planes only), then mirrored. */
interface View {
  readonly transpose: boolean
  readonly columns: boolean
  readonly rows: boolean
}

const FLIPS: readonly View[] = [false, true].flatMap((rows) =>
  [false, true].map((columns) => ({ transpose: false, columns, rows })),
)
const DIHEDRAL: readonly View[] = [...FLIPS, ...FLIPS.map((v) => ({ ...v, transpose: true }))]

/** For each pixel of the view, the index of the plane pixel it shows. */
const sourceIndex = ({ transpose, columns, rows }: View, size: number, w: number): Int32Array => {
  const h = size / w
  const index = new Int32Array(size)
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const vy = rows ? h - 1 - y : y
      const vx = columns ? w - 1 - x : x
      index[y * w + x] = transpose ? vx * w + vy : vy * w + vx
    }
  return index
}

/** `session` with test-time augmentation: the same inputs and outputs, one run per view. */
export const withTta =
  (tta: Tta) =>
  (session: Session): Session =>
    tta === 'none'
      ? session
      : {
          ...session,
          run: async (input, dims): Promise<Prediction> => {
            const [n, channels, h, w] = dims
            const views = tta === 'dihedral' && h === w ? DIHEDRAL : FLIPS
            const plane = h * w
            const maps = views.map((v) => sourceIndex(v, plane, w))
            const inputs = n * channels
            const batch = new Float32Array(views.length * inputs * plane)
            maps.forEach((map, v) => {
              for (let p = 0; p < inputs; p++) {
                const to = (v * inputs + p) * plane
                const from = p * plane
                for (let i = 0; i < plane; i++) batch[to + i] = input[from + map[i]]
              }
            })
            const out = await session.run(batch, [views.length * n, channels, h, w])
            const outputs = (out.dims[0] / views.length) * out.dims[1]
            // The view's pixel i came from the plane's map[i]: the prediction goes back there.
            const mean = new Float32Array(outputs * plane)
            maps.forEach((map, v) => {
              for (let p = 0; p < outputs; p++) {
                const from = (v * outputs + p) * plane
                const to = p * plane
                for (let i = 0; i < plane; i++) mean[to + map[i]] += out.probabilities[from + i]
              }
            })
            for (let i = 0; i < mean.length; i++) mean[i] /= views.length
            return { probabilities: mean, dims: [n, ...out.dims.slice(1)] }
          },
        }
