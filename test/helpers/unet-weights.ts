/**
 * Seeded random UNet weights for tests and benchmarks: He-scaled conv kernels and biases, and
 * batch norms far from identity (gamma, beta, moving mean and variance all vary per channel),
 * so that a mistake in batch-norm handling shows in the outputs.
 *
 * @example
 * const weights = randomWeights(unetSpec({ base: 4, levels: 3, dropout: [0, 0, 0] }), 7)
 */
import { parameterShapes, type UNetSpec, type UNetWeights } from '../../src/model/unet.ts'
import { seeded } from '../../src/util/rng.ts'
import { elementCount } from '../../src/util/shape.ts'

export const randomWeights = (spec: UNetSpec, seed: number): UNetWeights => {
  const rng = seeded(seed, 'unet-weights')
  const between = (lo: number, hi: number) => lo + (hi - lo) * rng.uniform()
  return Object.fromEntries(
    parameterShapes(spec).map(({ name, shape }) => {
      const n = elementCount(shape)
      const fanIn = shape.length === 4 ? shape[0] * shape[1] * shape[2] : 1
      const kind = name.slice(name.lastIndexOf('.') + 1)
      const draw: () => number =
        kind === 'kernel'
          ? () => rng.normal() * Math.sqrt(2 / fanIn)
          : kind === 'gamma' || kind === 'movingVariance'
            ? () => between(0.5, 1.5)
            : () => between(-0.2, 0.2)
      return [name, Float32Array.from({ length: n }, draw)]
    }),
  )
}
