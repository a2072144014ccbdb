import * as tf from '@tensorflow/tfjs-core'
import * as E from 'fp-ts/lib/Either.js'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { exportOnnx } from '../../src/model/onnx-export.ts'
import { forwardTrain, predictLogits, toParams } from '../../src/model/tfjs-unet.ts'
import { unetSpec, type UNetSpec, type UNetWeights } from '../../src/model/unet.ts'
import { decodeModelCard } from '../../src/serve/model-card.ts'
import { readCheckpoint } from '../../src/train/checkpoint.ts'
import { loadEngine } from '../../src/train/engine.ts'
import {
  calibrateBatchNorm,
  casesRecipe,
  checkScribbleValues,
  NOT_VALIDATED,
  finetune,
  finetuneConfig,
  finetunedModel,
  isEncoderWeight,
  layoutCases,
  onnxUNetSpec,
  parentFromOnnx,
  resumeFinetune,
  type Parent,
} from '../../src/train/finetune.ts'
import { prepareData } from '../../src/train/recipe.ts'
import { Progress } from '../../src/train/trainer.ts'
import { seeded } from '../../src/util/rng.ts'
import { withData } from '../../src/volume/volume.ts'
import { scribbledScans, smallPhantom } from '../helpers/scans.ts'
import { cardFor } from '../helpers/serve-fixtures.ts'
import { randomWeights } from '../helpers/unet-weights.ts'

const right = <A>(e: E.Either<string, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left)
  return e.right
}

const tiny = unetSpec({ base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] })
const withoutDropout = (spec: UNetSpec): UNetSpec => ({
  ...spec,
  ops: spec.ops.filter((o) => o.op !== 'dropout'),
})

const tempDir = async (t: { teardown: (f: () => unknown) => void }) => {
  const dir = await mkdtemp(join(tmpdir(), 'maco-finetune-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** A parent as a shipped model: random weights with real batch norms, through ONNX. */
const onnxParent = (seed = 5): Parent => {
  const bytes = exportOnnx(tiny, randomWeights(tiny, seed))
  return right(
    parentFromOnnx(bytes, {
      ...cardFor('tiny', '0'.repeat(64), { spacing: [6, 6], size: [32, 32] }),
    }),
  )
}

const maxAbsDiff = async (a: tf.Tensor, b: tf.Tensor) => {
  const d = tf.max(tf.abs(tf.sub(a, b)))
  const v = (await d.data())[0]
  d.dispose()
  return v
}

t.before(async () => void right(await loadEngine('wasm')()))

t.test('the UNet of an ONNX file is read from its initializers', async (t) => {
  const spec = right(onnxUNetSpec(exportOnnx(tiny, randomWeights(tiny, 1))))
  t.same(
    [spec.options.base, spec.options.levels, spec.options.classes, spec.options.inChannels],
    [4, 3, 4, 1],
  )
  t.same(spec.options.dropout, [0.05, 0.1, 0.2], "the reference UNet's rates per level")
  const two = unetSpec({ base: 8, levels: 4, classes: 2, dropout: [0, 0, 0, 0] })
  t.same(right(onnxUNetSpec(exportOnnx(two, randomWeights(two, 1)))).options.classes, 2)
  t.match(onnxUNetSpec(Uint8Array.of(1, 2, 3)), E.left(/^not an ONNX model/))
  const card = cardFor('x', '0'.repeat(64), { spacing: [1, 1], size: [32, 32] })
  t.same(
    parentFromOnnx(exportOnnx(two, randomWeights(two, 1)), card),
    E.left('the ONNX file outputs 2 classes but its card lists 4'),
  )
})

t.test(
  'calibrated batch norm: inference unchanged, training mode starts as the parent',
  async (t) => {
    const parent = onnxParent()
    const rng = seeded(3, 'images')
    const [n, h, w] = [6, 32, 32]
    const images = Float32Array.from({ length: n * h * w }, () => rng.normal())
    const calibrated = await calibrateBatchNorm(parent.spec, parent.weights, images, [n, h, w])
    const x = tf.tensor4d(images, [n, h, w, 1])
    const run = (weights: UNetWeights, f: (p: ReturnType<typeof toParams>) => tf.Tensor) => {
      const params = toParams(tiny, weights)
      const out = f(params)
      tf.dispose(Object.values(params))
      return out
    }
    const parentLogits = run(parent.weights, (p) => predictLogits(tiny, p, x))
    const scale = (await tf.max(tf.abs(parentLogits)).data())[0]
    const inference = run(calibrated, (p) => predictLogits(tiny, p, x))
    t.ok((await maxAbsDiff(inference, parentLogits)) < 1e-5 * scale, 'inference is the parent')
    const trainingMode = (weights: UNetWeights) =>
      run(weights, (p) => {
        const pass = forwardTrain(withoutDropout(tiny), p, x, seeded(1))
        pass.dispose()
        return pass.logits
      })
    const before = trainingMode(parent.weights)
    const after = trainingMode(calibrated)
    const gapBefore = await maxAbsDiff(before, parentLogits)
    const gapAfter = await maxAbsDiff(after, parentLogits)
    t.ok(gapBefore > 0.1 * scale, `identity batch norm in training mode: off by ${gapBefore}`)
    t.ok(gapAfter < 1e-4 * scale, `calibrated, on the calibration batch: off by ${gapAfter}`)
    // The conv weights themselves are the parent's; only the batch norms changed.
    for (const name of Object.keys(parent.weights))
      if (!name.includes('.bn')) t.equal(calibrated[name], parent.weights[name], name)
    tf.dispose([x, parentLogits, inference, before, after])
  },
)

t.test('scribble values are checked before anything trains', async (t) => {
  const c = smallPhantom(1)
  t.ok(E.isRight(checkScribbleValues(c.scribble, 4, 4)))
  t.same(
    checkScribbleValues(
      withData(
        c.scribble,
        c.scribble.data.map((v) => (v === 2 ? 7 : v)),
      ),
      4,
      4,
    ),
    E.left('the scribble holds the value 7: neither a class (0..3) nor unlabelled (4)'),
  )
  t.same(
    checkScribbleValues(
      withData(
        c.scribble,
        c.scribble.data.map(() => 4),
      ),
      4,
      4,
    ),
    E.left('the scribble annotates no voxel (every voxel is unlabelled, 4)'),
  )
})

const scans = (dir: string, classes: 4 | 2) =>
  scribbledScans(dir, { scribbled: 2, labelled: 1, classes })

const DATA = { classes: ['background', 'RV', 'MYO', 'LV'], unlabelled: 4 }

t.test('fine-tuning changes the decoder only when the encoder is frozen', async (t) => {
  const dir = await tempDir(t)
  await scans(dir, 4)
  const parent = onnxParent()
  const config = right(finetuneConfig(parent, DATA, { epochs: 1, batch: 2 }))
  t.same(config.network, { base: 4, levels: 3, dropout: [0.05, 0.1, 0.2] })
  t.same(config.input, parent.input)
  const cases = right(
    await layoutCases(dir, {
      image: '{case}.nii.gz',
      scribble: '{case}_scribble.nii.gz',
      label: '{case}_label.nii.gz',
    })(),
  )
  t.same(
    [cases.train.map((c) => c.case), cases.val.map((c) => c.case)],
    [['scan0', 'scan1'], ['scan2']],
  )
  const data = right(await prepareData(casesRecipe(cases), config)())
  t.equal(data.train.length, 6)
  t.equal(data.val.length, 1)
  const origin = { recipe: 'finetune', pipeline: 'test', data: data.data }
  const lines: string[] = []
  const r = right(
    await finetune({
      parent,
      config,
      ...data,
      runDir: join(dir, 'run'),
      freeze: 'encoder',
      origin,
      log: (l) => lines.push(l),
    })(),
  )
  t.equal(r.outcome.status, 'finished')
  t.equal(r.outcome.step, 3)
  t.match(r.notes, [/^batch norm re-estimated from the folded ONNX weights on 6 training slices$/])
  t.ok(r.parentValidation !== null && r.checkpoint.meta.validation !== null)
  const after = r.checkpoint.weights
  let decoderChanged = 0
  for (const name of Object.keys(after)) {
    const kind = name.slice(name.lastIndexOf('.') + 1)
    if (isEncoderWeight(name) && (kind === 'kernel' || kind === 'bias'))
      t.same(after[name], parent.weights[name], `${name} frozen`)
    if (!isEncoderWeight(name) && kind === 'kernel')
      decoderChanged += after[name].some((v, i) => v !== parent.weights[name][i]) ? 1 : 0
  }
  t.equal(decoderChanged, 7, 'every decoder and output kernel moved')

  const unfrozen = right(
    await finetune({
      parent,
      config,
      ...data,
      runDir: join(dir, 'run2'),
      freeze: 'none',
      origin,
    })(),
  )
  t.notSame(unfrozen.checkpoint.weights['enc0.conv1.kernel'], parent.weights['enc0.conv1.kernel'])
})

t.test('a stopped fine-tune resumes where it stopped', async (t) => {
  const dir = await tempDir(t)
  await scans(dir, 4)
  const parent = onnxParent()
  const config = right(finetuneConfig(parent, DATA, { epochs: 2, batch: 2 }))
  const cases = right(
    await layoutCases(dir, { image: '{case}.nii.gz', scribble: '{case}_scribble.nii.gz' })(),
  )
  const data = right(await prepareData(casesRecipe(cases), config)())
  const inputs = {
    parent,
    config,
    ...data,
    runDir: join(dir, 'run'),
    freeze: 'none' as const,
    origin: { recipe: 'finetune', pipeline: 'test', data: data.data },
  }
  let steps = 0
  const stopped = right(
    await finetune({ ...inputs, onStep: () => void steps++, stopRequested: () => steps === 4 })(),
  )
  t.same([stopped.outcome.status, stopped.outcome.step], ['stopped', 4])
  const resumed = right(await resumeFinetune(inputs)())
  t.same([resumed.outcome.status, resumed.outcome.epoch, resumed.outcome.step], ['finished', 2, 6])
  const whole = right(await finetune({ ...inputs, runDir: join(dir, 'whole') })())
  t.same(
    resumed.checkpoint.weights,
    whole.checkpoint.weights,
    'the same weights as a run not stopped',
  )
})

t.test('another class count gets a new output layer; no labels, no validation', async (t) => {
  const dir = await tempDir(t)
  await scans(dir, 2)
  const parent = onnxParent()
  const config = right(
    finetuneConfig(
      parent,
      { classes: ['background', 'LV'], unlabelled: 2 },
      { epochs: 1, batch: 4 },
    ),
  )
  const cases = right(
    await layoutCases(dir, { image: '{case}.nii.gz', scribble: '{case}_scribble.nii.gz' })(),
  )
  t.equal(cases.val.length, 0)
  const data = right(await prepareData(casesRecipe(cases), config)())
  const lines: string[] = []
  const r = right(
    await finetune({
      parent,
      config,
      ...data,
      runDir: join(dir, 'run'),
      freeze: 'none',
      origin: { recipe: 'finetune', pipeline: 'test', data: data.data },
      log: (l) => lines.push(l),
    })(),
  )
  t.match(
    r.notes[0],
    /^new output layer: the parent has 4 classes \(background, RV, MYO, LV\), the data 2 \(background, LV\)$/,
  )
  t.equal(r.spec.options.classes, 2)
  t.equal(r.checkpoint.weights['out.bias'].length, 2)
  t.equal(r.checkpoint.meta.validation, null, 'nothing was scored')
  t.equal(r.parentValidation, null)
  t.ok(lines.includes('no validation set: keeping the last epoch as best'))
  const metrics = await readFile(join(dir, 'run', 'metrics.jsonl'), 'utf8')
  t.notMatch(metrics, /valDice/)
  t.same(
    r.checkpoint.weights,
    right(await readCheckpoint(join(dir, 'run', 'last.ckpt'), Progress)()).weights,
    "the last epoch's weights are kept",
  )
  const model = right(await finetunedModel('lv', r)())
  t.same(model.card.validation, { data: NOT_VALIDATED })
  t.same(decodeModelCard(model.card), E.right(model.card), 'the card decodes')
})

t.test('bad data is refused with the case that is wrong', async (t) => {
  const dir = await tempDir(t)
  await scans(dir, 4)
  const parent = onnxParent()
  const two = right(
    finetuneConfig(parent, { classes: ['background', 'LV'], unlabelled: 2 }, { epochs: 1 }),
  )
  const cases = right(
    await layoutCases(dir, { image: '{case}.nii.gz', scribble: '{case}_scribble.nii.gz' })(),
  )
  t.same(
    await prepareData(casesRecipe(cases), two)(),
    E.left(
      "stage 'scribble values' failed on scan0: the scribble holds the value 4: neither a class (0..1) nor unlabelled (2)",
    ),
  )
  t.same(
    await layoutCases(join(dir, 'nope'), { image: '{case}.nii.gz' })(),
    E.left(`no such folder: ${join(dir, 'nope')}`),
  )
  const noScribbles = await layoutCases(dir, {
    image: '{case}.nii.gz',
    scribble: '{case}_s.nii.gz',
  })()
  t.same(
    noScribbles,
    E.left(`no scribbles in ${dir}: no file matches '{case}_s.nii.gz' for a scan`),
  )
  t.same(
    finetuneConfig(parent, { classes: ['background', 'LV'], unlabelled: 1 }),
    E.left('unlabelled (1) must not be a class value (0..1)'),
  )
})
