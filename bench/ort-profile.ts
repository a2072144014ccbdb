/**
 * Where the `onnxruntime` engine's step goes: the forward and backward training graphs of
 * the UNet (src/train/ort-graphs.ts) run on onnxruntime-node with its profiler on, the
 * reference weights, seeded dropout masks and random images, then onnxruntime's own
 * per-node kernel times summed per op type (and, with `--nodes N`, the N slowest nodes with
 * their input shapes), over the timed runs after the warm-up. `maco bench train --profile`
 * times tfjs kernels, where each graph is a single call; this looks inside the graphs.
 *
 * @example
 * node --import tsx bench/ort-profile.ts --size 128 --batch 4 --threads 1 --runs 5
 * // (an Intel Xeon of the slower class, AVX-512, nothing else running)
 * // forward graph: 193 ms a run (wall, median), kernels 155 ms
 * //   Conv                      93.3 ms  60.4%
 * //   ...
 * // backward graph: 424 ms a run (wall, median), kernels 366 ms
 * //   Conv                      88.0 ms  24.0%    (the input gradients)
 * //   FusedMatMul               77.8 ms  21.3%    (the filter gradients, a product per tap)
 * //   Slice                     48.3 ms  13.2%    (the taps' ranges of the padded input)
 */
import * as E from 'fp-ts/lib/Either.js'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { initialWeights } from '../src/model/tfjs-unet.ts'
import { parameterShapes, unetSpec } from '../src/model/unet.ts'
import { median } from '../src/bench/stats.ts'
import { backwardGraph, forwardGraph } from '../src/train/ort-graphs.ts'
import { loadNative, openSession } from '../src/train/ort-native.ts'
import { forwardOutputs, maskNchw } from '../src/train/ort-passes.ts'
import { seeded } from '../src/util/rng.ts'

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '128' },
    batch: { type: 'string', default: '4' },
    base: { type: 'string', default: '16' },
    threads: { type: 'string', default: '1' },
    runs: { type: 'string', default: '5' },
    nodes: { type: 'string', default: '0' },
  },
})
const [size, batch, base, threads, runs, nodes] = [
  values.size,
  values.batch,
  values.base,
  values.threads,
  values.runs,
  values.nodes,
].map(Number)
if (![size, batch, base, threads, runs].every((v) => Number.isInteger(v) && v > 0))
  throw new Error('--size, --batch, --base, --threads and --runs take positive integers')

const ort = loadNative()
if (E.isLeft(ort)) throw new Error(ort.left)
const { tensor } = ort.right
const spec = unetSpec({ base })
const f = forwardGraph(spec, [batch, size, size])
const b = backwardGraph(spec, f)
const dir = await mkdtemp(join(tmpdir(), 'maco-ort-profile-'))
const profiled = (model: Uint8Array, name: string) =>
  openSession(ort.right, model, threads, {
    enableProfiling: true,
    profileFilePrefix: join(dir, name),
  })
const forward = profiled(f.model, 'forward')
const backward = profiled(b.model, 'backward')

const rng = seeded('bench', 'ort-profile')
const weights = initialWeights(spec, 0)
const weightFeeds = Object.fromEntries(
  parameterShapes(spec).map((p) => [p.name, tensor(weights[p.name], p.shape)]),
)
const masks = Object.fromEntries(
  f.masks.map((m) => [m.name, tensor(maskNchw(m.shape, m.rate, rng), m.shape)]),
)
const random = (dims: readonly number[], scale: number) =>
  tensor(
    Float32Array.from({ length: dims.reduce((a, d) => a * d, 1) }, () => scale * rng.normal()),
    dims,
  )
const image = random([batch, size, size, 1], 1)
const outputs = [...forwardOutputs(f.batchNorms), ...f.saved.keys()]
const wall = { forward: [] as number[], backward: [] as number[] }
for (let run = 0; run <= runs; run++) {
  const t0 = performance.now()
  const out = forward.run(
    { image, ...Object.fromEntries(f.weights.map((k) => [k, weightFeeds[k]])), ...masks },
    Object.fromEntries(outputs.map((k) => [k, null])),
    {},
  )
  const t1 = performance.now()
  backward.run(
    {
      dlogits: random(out.logits.dims, 1e-3),
      image,
      ...Object.fromEntries(b.kernels.map((k) => [k, weightFeeds[k]])),
      ...masks,
      ...Object.fromEntries([...f.saved.keys()].map((k) => [k, out[k]])),
    },
    Object.fromEntries(b.gradients.map((g) => [`grad.${g}`, null])),
    {},
  )
  const t2 = performance.now()
  if (run > 0) {
    wall.forward.push(t1 - t0)
    wall.backward.push(t2 - t1)
  }
}
forward.endProfiling()
backward.endProfiling()
forward.dispose()
backward.dispose()

interface ProfileEvent {
  readonly cat: string
  readonly name: string
  readonly ts: number
  readonly dur: number
  readonly args?: { readonly op_name?: string; readonly input_type_shape?: unknown }
}

/** The node kernel events of the runs after the first (the warm-up). */
const timedKernels = (events: readonly ProfileEvent[]): ProfileEvent[] => {
  const first = events.find((e) => e.cat === 'Session' && e.name === 'model_run')
  const after = first ? first.ts + first.dur : -Infinity
  return events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.ts > after)
}

const report = async (name: 'forward' | 'backward') => {
  const file = (await readdir(dir)).find((x) => x.startsWith(name))
  if (!file) throw new Error(`onnxruntime wrote no profile for the ${name} graph`)
  const kernels = timedKernels(JSON.parse(await readFile(join(dir, file), 'utf8')))
  const total = kernels.reduce((s, e) => s + e.dur, 0)
  const per = (key: (e: ProfileEvent) => string) => {
    const sums = new Map<string, { us: number; event: ProfileEvent }>()
    for (const e of kernels) {
      const k = key(e)
      sums.set(k, { us: (sums.get(k)?.us ?? 0) + e.dur, event: e })
    }
    return [...sums].sort((x, y) => y[1].us - x[1].us)
  }
  const ms = (us: number) => `${(us / 1000 / runs).toFixed(1).padStart(7)} ms`
  console.log(
    `${name} graph: ${median(wall[name]).toFixed(0)} ms a run (wall, median), kernels ${(total / 1000 / runs).toFixed(0)} ms`,
  )
  for (const [op, { us }] of per((e) => e.args?.op_name ?? '?').slice(0, 14))
    console.log(`  ${op.padEnd(22)} ${ms(us)} ${((100 * us) / total).toFixed(1).padStart(5)}%`)
  if (nodes > 0) {
    console.log(`  the ${nodes} slowest nodes:`)
    for (const [node, { us, event }] of per((e) => e.name.slice(0, -'_kernel_time'.length)).slice(
      0,
      nodes,
    ))
      console.log(
        `  ${ms(us)}  ${event.args?.op_name} ${node} ${JSON.stringify(event.args?.input_type_shape)}`,
      )
  }
}

console.log(
  `onnxruntime training graphs: ${size} px, batch ${batch}, base ${base}, ${threads} thread(s), ${runs} run(s) after a warm-up`,
)
try {
  await report('forward')
  await report('backward')
} finally {
  await rm(dir, { recursive: true, force: true })
}
