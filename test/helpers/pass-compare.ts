/**
 * A training pass of another engine against tfjs's own (forwardTrain and its hand-written
 * backward on the active tfjs backend): logits, batch statistics and every weight gradient.
 * Also a max pool whose windows tie, and its gradient summed by definition.
 */
import * as tf from '@tensorflow/tfjs-core'
import type { Test } from 'tap'
import { initialWeights, toParams, type Params } from '../../src/model/tfjs-unet.ts'
import type { UNetSpec } from '../../src/model/unet.ts'
import { builder, maxPoolBackward } from '../../src/train/ort-graphs.ts'
import { graph } from '../../src/train/ort-native.ts'
import { tensorInfo } from '../../src/model/onnx-proto.ts'
import {
  disposeState,
  initialState,
  inProcess,
  trainStep,
  type Inference,
  type LossTerms,
  type Passes,
  type StepLoss,
} from '../../src/train/step.ts'
import { DEFAULT_LOSS, macoLoss, type LossTargets } from '../../src/maco/losses.ts'
import { networkSpec } from '../../src/train/recipe.ts'
import { validate } from '../../src/train/trainer.ts'
import { prepared, tiny } from './tiny-training.ts'
import { seeded } from '../../src/util/rng.ts'
import { elementCount } from '../../src/util/shape.ts'

export const random = (shape: number[], seed: string, scale = 1) => {
  const rng = seeded(7, seed)
  return tf.tensor(
    Float32Array.from({ length: elementCount(shape) }, () => rng.normal() * scale),
    shape,
  )
}

/** Everything one pass gives, as arrays: logits, batch statistics, gradients of dLogits. */
export const onePass = async (
  passes: Passes,
  params: Params,
  image: tf.Tensor4D,
  dLogits: tf.Tensor4D,
) => {
  const [p] = await passes.forward(params, [image], [[3, 'dropout', 0, 'original']])
  const logits = p.logits.dataSync().slice()
  const stats = Object.fromEntries(
    Object.entries(p.stats).map(([k, s]) => [
      k,
      [s.mean.dataSync().slice(), s.variance.dataSync().slice()],
    ]),
  )
  p.logits.dispose()
  const grads = await p.backward(dLogits)
  const arrays = Object.fromEntries(
    Object.entries(grads).map(([k, g]) => [k, g.dataSync().slice()]),
  )
  tf.dispose(Object.values(grads))
  return { logits, stats, grads: arrays }
}

/** max |a - b| over max |b|: float32 rounding of two summation orders stays near 1e-6. */
export const relative = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let diff = 0
  let size = 0
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]))
    size = Math.max(size, Math.abs(b[i]))
  }
  return size === 0 ? diff : diff / size
}

/** One pass of `passes(spec)` against tfjs's on a random batch of `n` images of `h` x `w`. */
export const compare = async (
  t: Test,
  spec: UNetSpec,
  [n, h, w]: number[],
  passes: (spec: UNetSpec) => Promise<Passes>,
) => {
  const params = toParams(spec, initialWeights(spec, 5))
  const image = random([n, h, w, spec.options.inChannels], 'image') as tf.Tensor4D
  const dLogits = random([n, h, w, spec.options.classes], 'dlogits', 0.1) as tf.Tensor4D
  const graphs = await passes(spec)
  const ours = await onePass(graphs, params, image, dLogits)
  const reference = await onePass(inProcess(spec), params, image, dLogits)
  t.ok(relative(ours.logits, reference.logits) < 1e-4, 'logits')
  t.same(
    Object.keys(ours.stats).sort(),
    Object.keys(reference.stats).sort(),
    'a statistic per batch norm',
  )
  for (const [k, [mean, variance]] of Object.entries(reference.stats)) {
    t.ok(relative(ours.stats[k][0], mean) < 1e-4, `${k} batch mean`)
    t.ok(relative(ours.stats[k][1], variance) < 1e-4, `${k} batch variance`)
  }
  t.same(
    Object.keys(ours.grads).sort(),
    Object.keys(reference.grads).sort(),
    'a gradient per weight',
  )
  const worst = Object.entries(reference.grads)
    .map(([k, g]) => [k, relative(ours.grads[k], g)] as const)
    .sort((a, b) => b[1] - a[1])
  t.ok(
    worst[0][1] < 1e-3,
    `gradients agree (worst ${worst[0][0]}: ${worst[0][1].toExponential(2)})`,
  )
  tf.dispose([...Object.values(params), image, dLogits])
  await graphs.close()
}

/**
 * A 2 x 2 max pool's input (NCHW, 1 x 2 x 4 x 4) whose windows tie in several ways (all four
 * equal, the first and last, the second and last, none), an output gradient, and the input gradient by
 * definition: each window's g on its first maximum in row-major order.
 */
export const tiedPool = () => {
  const dims = [1, 2, 4, 4]
  // prettier-ignore
  const x = Float32Array.of(
    1, 1, 5, 2,
    1, 1, 2, 5,
    3, 0, -1, -2,
    0, 3, -2, -1,

    7, 7, 0, 4,
    7, 7, 0, 4,
    4, 6, 2, 3,
    5, 1, 8, 3,
  )
  const g = Float32Array.from({ length: 8 }, (_, i) => i + 1)
  const dx = new Float32Array(x.length)
  for (let c = 0; c < 2; c++)
    for (let y = 0; y < 2; y++)
      for (let xx = 0; xx < 2; xx++) {
        let first = -1
        for (const [dy, dc] of [
          [0, 0],
          [0, 1],
          [1, 0],
          [1, 1],
        ]) {
          const at = c * 16 + (2 * y + dy) * 4 + 2 * xx + dc
          if (first < 0 || x[at] > x[first]) first = at
        }
        dx[first] = g[c * 4 + y * 2 + xx]
      }
  const b = builder('p')
  b.named('Identity', [maxPoolBackward(b, 'x', 'g', dims)], 'dx')
  const model = graph(
    b.nodes,
    b.initializers,
    [tensorInfo('x', dims), tensorInfo('g', [1, 2, 2, 2])],
    [tensorInfo('dx', dims)],
  )
  return { x, g, dx, dims, model }
}

/** The step losses `trainSteps` can take: a small closure, or the MaCo loss as closure or as data. */
export type StepsLoss = 'small' | 'maco-closure' | 'maco-data'

/**
 * `steps` training steps of two passes (a batch of two 32 x 32 noise images and a rectified
 * copy) under a loss of both passes' logits (`kind`; the MaCo ones on random scribbles, CPL
 * and GC): the losses, each step's weighted terms (MaCo), the final weights, and the tensor
 * count after each step.
 */
export const trainSteps = async (
  spec: UNetSpec,
  passes: Passes,
  steps: number,
  kind: StepsLoss = 'small',
) => {
  const rng = seeded(2, 'parallel')
  const image = tf.tensor4d(
    Float32Array.from({ length: 2 * 32 * 32 }, () => rng.normal()),
    [2, 32, 32, 1],
  )
  const data = { image, masked: tf.relu(image) as tf.Tensor4D }
  const classes = spec.options.classes
  const targets: LossTargets = {
    scribbles: Uint8Array.from({ length: 2 * 32 * 32 }, () =>
      rng.uniform() < 0.2 ? rng.int(classes) : classes,
    ),
    unlabelled: classes,
    cpl: Float32Array.from({ length: 2 * 32 * 32 * classes }, () =>
      rng.uniform() < 0.3 ? rng.uniform() : 0,
    ),
    gc: Float32Array.from({ length: 2 * 32 * 32 }, (_, i) =>
      Number((i % 32) + ((i >> 5) % 32) < 40),
    ),
  }
  const terms: LossTerms[] = []
  const onTerms = (t: LossTerms) => void terms.push(t)
  const loss: StepLoss<typeof data> =
    kind === 'maco-data'
      ? { kind: 'maco', config: DEFAULT_LOSS, targets: () => targets, onTerms }
      : kind === 'maco-closure'
        ? (logits, maskedLogits) =>
            tf.tidy(() =>
              macoLoss(
                DEFAULT_LOSS,
                {
                  logits,
                  maskedLogits,
                  unlabelled: classes,
                  scribbles: tf.tensor3d(Int32Array.from(targets.scribbles), [2, 32, 32], 'int32'),
                  cpl: tf.tensor4d(targets.cpl as Float32Array, [2, 32, 32, classes]),
                  gc: tf.tensor3d(targets.gc as Float32Array, [2, 32, 32]),
                },
                onTerms,
              ),
            )
        : (a, b) =>
            tf.tidy(() =>
              tf.add(
                tf.mean(tf.square(tf.sub(tf.softmax(a), 0.25))),
                tf.mean(tf.abs(tf.sub(a, b!))),
              ),
            ) as tf.Scalar
  let state = initialState(spec, toParams(spec, initialWeights(spec, 2)))
  const losses: number[] = []
  const counts: number[] = []
  for (let s = 0; s < steps; s++) {
    const r = await trainStep(passes, state, data, loss, { seed: 2, step: s })
    state = r.state
    losses.push(r.loss)
    counts.push(tf.memory().numTensors)
  }
  const weights = Object.fromEntries(
    Object.entries(state.params).map(([k, v]) => [k, v.dataSync().slice() as Float32Array]),
  )
  disposeState(state)
  tf.dispose(Object.values(data))
  return { losses, terms, weights, counts }
}

/**
 * A forward while the last one's pass awaits its backward (the runner's contract allows it):
 * each backward must read its own forward's weights, as when its pass ran alone. 2 x 32 x 32
 * images, the geometry of `trainSteps`.
 */
export const keepsForwardsApart = async (t: Test, spec: UNetSpec, passes: Passes) => {
  const image = random([2, 32, 32, 1], 'apart') as tf.Tensor4D
  const dLogits = random([2, 32, 32, spec.options.classes], 'apart-d') as tf.Tensor4D
  const [first, second] = [5, 6].map((seed) => toParams(spec, initialWeights(spec, seed)))
  const seed = [3, 'dropout', 0, 'original']
  const alone = await onePass(passes, first, image, dLogits)
  const [a] = await passes.forward(first, [image], [seed])
  const [b] = await passes.forward(second, [image], [seed])
  const fromB = await b.backward(dLogits)
  const fromA = await a.backward(dLogits)
  const names = Object.keys(alone.grads)
  const worst = Math.max(...names.map((k) => relative(fromA[k].dataSync(), alone.grads[k])))
  const apart = Math.max(...names.map((k) => relative(fromB[k].dataSync(), alone.grads[k])))
  t.ok(worst < 1e-6, `the first forward's gradients as alone (worst ${worst.toExponential(2)})`)
  t.ok(apart > 1e-2, `the second forward's are its own (${apart.toExponential(2)} apart)`)
  tf.dispose([image, dLogits, a.logits, b.logits, ...Object.values(fromA), ...Object.values(fromB)])
  tf.dispose([...Object.values(first), ...Object.values(second)])
}

/** Validation Dice through `inference` against validation on tfjs (the active backend). */
export const validatesAsTfjs = async (
  t: Test,
  inference: (params: Params) => Promise<Inference>,
) => {
  const config = tiny
  const { val } = await prepared(config)
  const spec = networkSpec(config)
  const params = toParams(spec, initialWeights(spec, 11))
  const onTfjs = await validate(spec, params, val, config.classes, config.batch)
  const ours = await validate(spec, params, val, config.classes, config.batch, inference)
  t.equal(ours.volumes, onTfjs.volumes)
  for (const [name, dice] of Object.entries(onTfjs.classes))
    t.ok(
      Math.abs(ours.classes[name] - dice) < 1e-3,
      `${name}: ${ours.classes[name]} against ${dice}`,
    )
  tf.dispose(Object.values(params))
}
