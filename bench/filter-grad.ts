/**
 * Micro-benchmark: the wasm filter gradient (Conv2DBackpropFilter) of every conv of the UNet,
 * as the swapped conv (the first kernel) and as matrix products (src/train/wasm-kernels.ts),
 * in the same process, alternating, the median of several calls after a warm-up each.
 * Calls are timed in CPU time of this process: the machine's two cores are often busy with
 * trainings, and waiting for a core would otherwise count. Shapes: the cpu recipe (128 px,
 * base 8) and the paper's (256 px, base 16), batch 4; each layer counted as often as one
 * backward pass calls it (a decoder conv after the concat is one call per part). Prints ms
 * per call, old / new per layer and the sums per recipe.
 * `--baseline DIR` makes "old" the products of another commit instead of the swapped conv:
 * src/train/wasm-kernels.ts loaded from DIR, an export of that commit inside this checkout.
 * `--step` then times whole MaCo training steps (src/bench/train.ts, wall time: the
 * reference UNet, base 16, 128 px) with each kernel registered in turn, twice.
 *
 * @example
 * nice -n 19 node --import tsx bench/filter-grad.ts --recipe cpu --runs 5
 * // cpu recipe: 128 px, base 8, batch 4
 * //   3x3    8 -> 8    128 px  x4   old     6.0 ms  new    4.4 ms  old/new 1.4
 * //   ...
 * //   sum over one backward pass: old 97 ms, new 70 ms, old/new 1.4
 * nice -n 19 node --import tsx bench/filter-grad.ts --recipe none --step
 * mkdir -p tmp/base && git archive <commit> src | tar -x -C tmp/base
 * nice -n 5 node --import tsx bench/filter-grad.ts --baseline tmp/base --runs 10
 */
import * as tf from '@tensorflow/tfjs-core'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { median } from '../src/bench/stats.ts'
import { trainBench } from '../src/bench/train.ts'
import { unetSpec, type UNetSpec } from '../src/model/unet.ts'
import { loadEngine, type Engine } from '../src/train/engine.ts'
import * as kernelsNow from '../src/train/wasm-kernels.ts'
import { seeded } from '../src/util/rng.ts'

interface Layer {
  readonly kernel: number
  readonly inChannels: number
  readonly outChannels: number
  readonly size: number
  readonly calls: number
}

/** The filter gradients one backward pass of `spec` at `size` px computes, alike ones merged. */
const filterGradLayers = (spec: UNetSpec, size: number): Layer[] => {
  const layers = new Map<string, Layer>()
  let at = size
  let parts = 1
  for (const op of spec.ops) {
    if (op.op === 'maxPool') at /= 2
    else if (op.op === 'upsample') at *= 2
    else if (op.op === 'concat') parts = 2
    else if (op.op === 'conv') {
      const inChannels = op.inChannels / parts
      const key = `${op.kernel} ${inChannels} ${op.outChannels} ${at}`
      const calls = (layers.get(key)?.calls ?? 0) + parts
      layers.set(key, {
        kernel: op.kernel,
        inChannels,
        outChannels: op.outChannels,
        size: at,
        calls,
      })
      parts = 1
    }
  }
  return [...layers.values()]
}

const RECIPES = {
  cpu: { size: 128, spec: unetSpec({ base: 8 }) },
  paper: { size: 256, spec: unetSpec() },
} as const

const random = (shape: number[], seed: string) => {
  const rng = seeded(seed, 'filter-grad')
  return tf.tensor4d(
    Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()),
    shape as [number, number, number, number],
  )
}

const cpuMs = (since: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(since)
  return (used.user + used.system) / 1000
}

interface Kernels {
  readonly old: tf.KernelFunc
  readonly new: tf.KernelFunc
}

/** Median ms per call of each kernel on one layer, the two alternating. */
const timeLayer = (layer: Layer, batch: number, runs: number, kernels: Kernels) => {
  const { kernel, inChannels, outChannels, size } = layer
  const x = random([batch, size, size, inChannels], 'x')
  const dy = random([batch, size, size, outChannels], 'dy')
  const backend = tf.backend()
  const call = (filterGrad: tf.KernelFunc) => {
    const t0 = process.cpuUsage()
    const out = filterGrad({
      inputs: { x, dy },
      backend,
      attrs: {
        strides: [1, 1],
        pad: 'same',
        dataFormat: 'NHWC',
        filterShape: [kernel, kernel, inChannels, outChannels],
      },
    }) as tf.TensorInfo
    const ms = cpuMs(t0)
    backend.disposeData(out.dataId)
    return ms
  }
  const times = { old: [] as number[], new: [] as number[] }
  for (let r = 0; r <= runs; r++) {
    const old = call(kernels.old)
    const now = call(kernels.new)
    if (r > 0) {
      times.old.push(old)
      times.new.push(now)
    }
  }
  tf.dispose([x, dy])
  return { old: median(times.old), new: median(times.new) }
}

const recipeBench = (name: keyof typeof RECIPES, batch: number, runs: number, kernels: Kernels) => {
  const { size, spec } = RECIPES[name]
  console.log(`${name} recipe: ${size} px, base ${spec.options.base}, batch ${batch}`)
  let sumOld = 0
  let sumNew = 0
  for (const layer of filterGradLayers(spec, size)) {
    const ms = timeLayer(layer, batch, runs, kernels)
    sumOld += ms.old * layer.calls
    sumNew += ms.new * layer.calls
    console.log(
      `  ${layer.kernel}x${layer.kernel} ${String(layer.inChannels).padStart(4)} -> ${String(layer.outChannels).padEnd(4)}` +
        `${String(layer.size).padStart(4)} px  x${layer.calls}   old ${ms.old.toFixed(1).padStart(7)} ms` +
        `  new ${ms.new.toFixed(1).padStart(6)} ms  old/new ${(ms.old / ms.new).toFixed(1)}`,
    )
  }
  console.log(
    `  sum over one backward pass: old ${sumOld.toFixed(0)} ms, new ${sumNew.toFixed(0)} ms, old/new ${(sumOld / sumNew).toFixed(1)}`,
  )
}

/**
 * Whole training steps with each formulation registered, old then new, twice: the median
 * wall time of the timed steps, and CPU time per step (warm-up included) as the steadier one.
 */
const stepBench = async (engine: Engine, batch: number) => {
  const kernels = {
    old: kernelsNow.conv2dBackpropFilter('swapped-conv'),
    new: kernelsNow.conv2dBackpropFilter(),
  }
  const wall: Record<keyof typeof kernels, number[]> = { old: [], new: [] }
  const cpu: Record<keyof typeof kernels, number[]> = { old: [], new: [] }
  const steps = 3
  for (let round = 0; round < 2; round++)
    for (const label of ['old', 'new'] as const) {
      tf.unregisterKernel('Conv2DBackpropFilter', 'wasm')
      tf.registerKernel({
        kernelName: 'Conv2DBackpropFilter',
        backendName: 'wasm',
        kernelFunc: kernels[label],
      })
      const t0 = process.cpuUsage()
      const r = await trainBench(
        { engine, size: 128, batch, workers: 1, steps, profile: false },
        (line) => console.error(line),
      )
      cpu[label].push(cpuMs(t0) / (steps + 1))
      wall[label].push(...r.stepsMs)
    }
  kernelsNow.registerWasmKernels()
  for (const [what, ms] of [
    ['wall, median', { old: median(wall.old), new: median(wall.new) }],
    ['CPU, mean of 2 runs', { old: median(cpu.old), new: median(cpu.new) }],
  ] as const)
    console.log(
      `training step (reference UNet, 128 px, batch ${batch}), ${what}: ` +
        `old ${ms.old.toFixed(0)} ms, new ${ms.new.toFixed(0)} ms, old/new ${(ms.old / ms.new).toFixed(2)}`,
    )
}

const { values } = parseArgs({
  options: {
    recipe: { type: 'string', default: 'all' },
    runs: { type: 'string', default: '5' },
    batch: { type: 'string', default: '4' },
    step: { type: 'boolean', default: false },
    baseline: { type: 'string' },
  },
})
const runs = Number(values.runs)
const batch = Number(values.batch)
const recipes =
  values.recipe === 'all'
    ? (['cpu', 'paper'] as const)
    : values.recipe === 'none'
      ? []
      : [values.recipe]
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(batch) || batch < 1)
  throw new Error('--runs and --batch take positive integers')
if (!recipes.every((r): r is keyof typeof RECIPES => r in RECIPES))
  throw new Error(`--recipe takes all, none, ${Object.keys(RECIPES).join(', ')}`)

const engine = await loadEngine('wasm')()
if (engine._tag === 'Left') throw new Error(engine.left)
const baseline: typeof kernelsNow | undefined = values.baseline
  ? await import(pathToFileURL(resolve(values.baseline, 'src/train/wasm-kernels.ts')).href)
  : undefined
const kernels: Kernels = {
  old: baseline
    ? baseline.conv2dBackpropFilter('product')
    : kernelsNow.conv2dBackpropFilter('swapped-conv'),
  new: kernelsNow.conv2dBackpropFilter('product'),
}
if (baseline) console.log(`old: the products of ${values.baseline}`)
for (const name of recipes) recipeBench(name, batch, runs, kernels)
if (values.step) await stepBench(engine.right, batch)
