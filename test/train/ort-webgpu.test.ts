import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { unetSpec } from '../../src/model/unet.ts'
import { loadEngine } from '../../src/train/engine.ts'
import { loadOrtWebGpu, ortWebGpuPasses } from '../../src/train/ort-webgpu.ts'
import { trainingPasses } from '../../src/train/parallel.ts'
import { networkSpec } from '../../src/train/recipe.ts'
import { inProcess } from '../../src/train/step.ts'
import { use } from '../helpers/conv-cases.ts'
import {
  compare,
  keepsForwardsApart,
  tiedPool,
  trainSteps,
  validatesAsTfjs,
} from '../helpers/pass-compare.ts'
import { tiny } from '../helpers/tiny-training.ts'

// onnxruntime-web's WebGPU provider on whatever adapter this machine has: on a CPU machine,
// Mesa's llvmpipe (OpenGL ES, compatibility mode; .ci/run installs it), where compiling the
// graphs' shaders takes about a minute. Skips with the reason when there is none.
const loaded = await loadOrtWebGpu(true)
const skip = E.isLeft(loaded) && `no WebGPU for onnxruntime here: ${loaded.left}`
if (E.isRight(loaded)) t.comment(`adapter: ${loaded.right.device}`)

// The reference: tfjs's forwardTrain and its hand-written backward, on the cpu backend.
await use('cpu')

t.test(
  "a max pool's gradient on the GPU goes to each window's first maximum",
  { skip },
  async (t) => {
    if (E.isLeft(loaded)) return
    const { ort } = loaded.right
    const pool = tiedPool()
    const session = await ort.InferenceSession.create(pool.model, {
      executionProviders: ['webgpu'],
    })
    const out = await session.run({
      x: new ort.Tensor('float32', pool.x, pool.dims),
      g: new ort.Tensor('float32', pool.g, [1, 2, 2, 2]),
    })
    t.same([...(out.dx.data as Float32Array)], [...pool.dx])
    await session.release()
  },
)

t.test(
  'one pass on the GPU matches tfjs: logits, batch statistics and every gradient',
  { skip },
  async (t) => {
    const spec = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] })
    if (E.isLeft(loaded)) return
    const ort = loaded.right
    await compare(t, spec, [2, 32, 32], async (s) => ortWebGpuPasses(s, ort))
  },
)

t.test(
  "three steps on the GPU give tfjs's losses, forwards in flight their own weights, and validation its Dice",
  { skip },
  async (t) => {
    const engine = await loadEngine('onnxruntime-webgpu')()
    t.ok(E.isRight(engine) && engine.right.device, 'the engine names its adapter')
    const spec = networkSpec(tiny)
    const passes = await trainingPasses(spec, 'onnxruntime-webgpu', 1)
    t.ok(passes.inference, 'validation runs on the GPU')
    const onGraphs = await trainSteps(spec, passes, 3)
    await use('wasm')
    const reference = await trainSteps(spec, inProcess(spec), 3)
    // The losses of steps 1 and 2 are of the weights Adam made of the GPU's gradients. (The
    // weights themselves are not compared: Adam's first steps are the gradients' signs times
    // the learning rate, so a gradient within rounding of 0 may move a weight either way.)
    t.ok(reference.losses[2] < reference.losses[0] - 1e-3, 'the steps change the loss')
    onGraphs.losses.forEach((l, i) =>
      t.ok(
        Math.abs(l - reference.losses[i]) < 1e-5 * Math.abs(reference.losses[i]),
        `loss ${i}: ${l} against ${reference.losses[i]}`,
      ),
    )
    t.equal(new Set(onGraphs.counts).size, 1, 'the tensor count stays flat')
    await keepsForwardsApart(t, spec, passes)
    await use('cpu')
    await validatesAsTfjs(t, passes.inference as NonNullable<typeof passes.inference>)
    await passes.close()
  },
)
