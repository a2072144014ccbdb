/**
 * Micro-benchmark: the pieces of one MaCo training step of the `cpu` recipe's UNet (base 8,
 * 128 px, batch 4 by default) on tfjs wasm, each timed in isolation: the loss with its
 * gradients (`lossWithGradients`), one training forward pass, one backward pass, Adam, and
 * the whole step (`trainStep`, in process, the `macoLoss` tape as the trainer uses it).
 *
 * To compare two versions of the code in the same process, `--baseline DIR` loads the same
 * modules (src/maco/losses.ts, src/model/tfjs-unet.ts, src/train/step.ts,
 * src/train/wasm-kernels.ts) from DIR, an export of another commit inside this checkout (so
 * that it resolves this checkout's node_modules, one tfjs-core), and alternates the two,
 * A B A B ..., each with its own wasm kernels registered. Prints the median CPU time of
 * this process per call (steadier than wall time while other processes share the cores)
 * and the median wall time, and baseline / current.
 *
 * @example
 * mkdir -p tmp/base && git archive <commit> src | tar -x -C tmp/base
 * nice -n 5 node --import tsx bench/step-parts.ts --baseline tmp/base --runs 20
 * // measured with two trainings on the two cores, 55f6d0b against the loss as loops:
 * // loss             base cpu    42.5 ms  wall    45.4 ms | current cpu    13.3 ms  wall    17.2 ms | base/current 3.19
 * // forward+backward base cpu   212.4 ms  wall   213.5 ms | current cpu   209.3 ms  wall   212.6 ms | base/current 1.01
 * // step             base cpu   510.1 ms  wall   544.1 ms | current cpu   488.7 ms  wall   521.7 ms | base/current 1.04
 */
import * as tf from '@tensorflow/tfjs-core'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'
import { median } from '../src/bench/stats.ts'
import * as lossesNow from '../src/maco/losses.ts'
import * as unetNow from '../src/model/tfjs-unet.ts'
import { unetSpec } from '../src/model/unet.ts'
import { loadEngine } from '../src/train/engine.ts'
import * as stepNow from '../src/train/step.ts'
import * as kernelsNow from '../src/train/wasm-kernels.ts'
import { seeded } from '../src/util/rng.ts'

interface Version {
  readonly name: string
  readonly losses: typeof lossesNow
  readonly unet: typeof unetNow
  readonly step: typeof stepNow
  readonly kernels: typeof kernelsNow
}

const load = async (name: string, dir: string): Promise<Version> => {
  const from = (path: string) => import(pathToFileURL(resolve(dir, path)).href)
  return {
    name,
    losses: await from('src/maco/losses.ts'),
    unet: await from('src/model/tfjs-unet.ts'),
    step: await from('src/train/step.ts'),
    kernels: await from('src/train/wasm-kernels.ts'),
  }
}

const { values } = parseArgs({
  options: {
    baseline: { type: 'string' },
    runs: { type: 'string', default: '10' },
    size: { type: 'string', default: '128' },
    base: { type: 'string', default: '8' },
    batch: { type: 'string', default: '4' },
    only: { type: 'string' },
  },
})
const [runs, size, base, batch] = [values.runs, values.size, values.base, values.batch].map(Number)
if (![runs, size, base, batch].every((v) => Number.isInteger(v) && v > 0))
  throw new Error('--runs, --size, --base and --batch take positive integers')

const engine = await loadEngine('wasm')()
if (engine._tag === 'Left') throw new Error(engine.left)

const current: Version = {
  name: 'current',
  losses: lossesNow,
  unet: unetNow,
  step: stepNow,
  kernels: kernelsNow,
}
const versions = values.baseline ? [await load('base', values.baseline), current] : [current]

const spec = unetSpec({ base })
const classes = spec.options.classes
const rng = seeded('step-parts')
const normal = (n: number) => Float32Array.from({ length: n }, () => rng.normal())
const n = batch * size * size
const image = tf.tensor4d(normal(n), [batch, size, size, 1])
const masked = tf.tensor4d(
  image.dataSync().map((v, i) => ((((i % size) >> 4) + ((i / size) >> 4)) % 2 === 0 ? 0 : v)),
  [batch, size, size, 1],
)
const scribbles = tf.tensor3d(
  Int32Array.from({ length: n }, () => (rng.uniform() < 0.05 ? rng.int(classes) : classes)),
  [batch, size, size],
  'int32',
)
const cpl = tf.tensor4d(
  Float32Array.from({ length: n * classes }, () => (rng.uniform() < 0.3 ? rng.uniform() : 0)),
  [batch, size, size, classes],
)
const gc = tf.tensor3d(
  Float32Array.from({ length: n }, (_, i) => {
    const x = (i % size) / size - 0.5
    const y = (Math.floor(i / size) % size) / size - 0.5
    return x * x + y * y < 0.16 ? 1 : 0
  }),
  [batch, size, size],
)
const logits = tf.tensor4d(normal(n * classes), [batch, size, size, classes])
const maskedLogits = tf.tensor4d(normal(n * classes), [batch, size, size, classes])
const dLogits = tf.tensor4d(
  normal(n * classes).map((v) => v * 1e-3),
  [batch, size, size, classes],
)
const lossInputs = { logits, maskedLogits, scribbles, cpl, gc, unlabelled: classes }
const params = current.unet.toParams(spec, current.unet.initialWeights(spec, 0))

type Piece = (v: Version) => () => void
const pieces: Record<string, Piece> = {
  loss: (v) => () => {
    const r = v.losses.lossWithGradients(v.losses.DEFAULT_LOSS, lossInputs)
    tf.dispose([r.total, ...Object.values(r.terms), ...Object.values(r.gradients)])
  },
  'loss (tape)': (v) => () => {
    const { value, grads } = tf.valueAndGrads((z: tf.Tensor, zm: tf.Tensor) =>
      v.losses.macoLoss(v.losses.DEFAULT_LOSS, {
        ...lossInputs,
        logits: z as tf.Tensor4D,
        maskedLogits: zm as tf.Tensor4D,
      }),
    )([logits, maskedLogits])
    tf.dispose([value, ...grads])
  },
  forward: (v) => () => {
    const pass = v.unet.forwardTrain(spec, params, image, seeded(0, 'dropout'))
    pass.dispose()
    tf.dispose([pass.logits, ...Object.values(pass.stats).flatMap((s) => [s.mean, s.variance])])
  },
  'forward+backward': (v) => () => {
    const pass = v.unet.forwardTrain(spec, params, image, seeded(0, 'dropout'))
    const grads = pass.backward(dLogits)
    tf.dispose([pass.logits, ...Object.values(grads)])
  },
  adam: (v) => {
    // Own copies of the params: Adam frees the ones it replaces.
    let state = v.step.initialState(
      spec,
      Object.fromEntries(Object.entries(params).map(([k, p]) => [k, tf.clone(p)])),
    )
    const grads = Object.fromEntries(
      Object.keys(state.adam.m).map((k) => [k, tf.onesLike(params[k])]),
    )
    return () => {
      state = v.step.adamUpdate(state, grads)
    }
  },
  step: (v) => {
    const passes = v.step.inProcess(spec)
    let state = v.step.initialState(
      spec,
      current.unet.toParams(spec, current.unet.initialWeights(spec, 0)),
    )
    let at = 0
    const loss = (z: tf.Tensor4D, zm: tf.Tensor4D | undefined) =>
      v.losses.macoLoss(v.losses.DEFAULT_LOSS, { ...lossInputs, logits: z, maskedLogits: zm })
    return async () => {
      const r = await v.step.trainStep(passes, state, { image, masked }, loss, {
        seed: 0,
        step: at++,
      })
      state = r.state
    }
  },
}

const wanted = values.only ? values.only.split(',') : Object.keys(pieces)
const unknown = wanted.find((p) => !(p in pieces))
if (unknown) throw new Error(`--only takes ${Object.keys(pieces).join(', ')}`)

const cpuMs = (since: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(since)
  return (used.user + used.system) / 1000
}

console.log(
  `MaCo step pieces, wasm: ${size} px, base ${base}, batch ${batch}, ${runs} runs each` +
    (versions.length > 1 ? `, ${versions[0].name} and ${versions[1].name} alternating` : ''),
)
for (const piece of wanted) {
  const calls = versions.map((v) => pieces[piece](v))
  const times = versions.map(() => ({ cpu: [] as number[], wall: [] as number[] }))
  for (let r = 0; r <= runs; r++)
    for (const [i, v] of versions.entries()) {
      v.kernels.registerWasmKernels()
      const t0 = process.cpuUsage()
      const w0 = performance.now()
      await calls[i]()
      // The first round warms up (wasm operator caches, heap growth).
      if (r > 0) {
        times[i].cpu.push(cpuMs(t0))
        times[i].wall.push(performance.now() - w0)
      }
    }
  const medians = times.map((t) => ({ cpu: median(t.cpu), wall: median(t.wall) }))
  console.log(
    `${piece.padEnd(17)}` +
      medians
        .map(
          (m, i) =>
            `${versions[i].name} cpu ${m.cpu.toFixed(1).padStart(7)} ms  wall ${m.wall.toFixed(1).padStart(7)} ms`,
        )
        .join(' | ') +
      (medians.length > 1 ? ` | base/current ${(medians[0].cpu / medians[1].cpu).toFixed(2)}` : ''),
  )
}
