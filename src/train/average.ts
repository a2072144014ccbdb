/**
 * An exponential moving average (EMA) of a run's weights, batch-norm moving statistics
 * included: validation scores it, `best.ckpt` keeps it and `maco export` ships it, while
 * Adam keeps stepping the raw weights. Averaging the last few epochs' iterates smooths the
 * epoch-to-epoch noise of a small-batch run, as the mean teacher and timm's ModelEma do.
 *
 * The decay of update n (1, 2, ...) is min(decay, 1 - 1/n), mean teacher's warm-up: while
 * n <= 1 / (1 - decay) the average is exactly the arithmetic mean of the n iterates, so the
 * first epochs are not pulled towards the initial weights.
 *
 * @example
 * let average = startAverage(state.params)
 * // after each optimizer step n (state.adam.step):
 * average = updateAverage(average, state.params, averageDecay(0.999, state.adam.step))
 */
import * as tf from '@tensorflow/tfjs-core'
import type { Params } from '../model/tfjs-unet.ts'

/** The decay of the n-th update (n from 1): the mean of the iterates, then `decay`. */
export const averageDecay = (decay: number, n: number): number => Math.min(decay, 1 - 1 / n)

/** An average that starts at the weights (copies: the caller keeps its own). */
export const startAverage = (params: Params): Params =>
  Object.fromEntries(Object.entries(params).map(([n, x]) => [n, tf.clone(x)]))

/** d * average + (1 - d) * params for every weight; frees the old average's tensors. */
export const updateAverage = (average: Params, params: Params, d: number): Params =>
  Object.fromEntries(
    Object.entries(average).map(([n, a]) => {
      const next = tf.tidy(() => tf.add(tf.mul(a, d), tf.mul(params[n], 1 - d)))
      a.dispose()
      return [n, next]
    }),
  )
