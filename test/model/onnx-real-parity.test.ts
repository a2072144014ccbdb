/**
 * Export parity on real slices with the shipped model: models/acdc-maco.onnx imported into the
 * trainable tfjs UNet as `maco finetune` imports it (`loadParent`: card checked against the
 * bytes, batch norm folded into the convs, so the inference-mode forward is the one to compare),
 * and the same file through the serving runtimes. Real ACDC val slices (three patients, ED and
 * ES, the basal, middle and apical slice of the heart) are preprocessed as serving does
 * (`preprocessVolume` with the card's spacing and size, z-score per slice).
 *
 * Checked per runtime: the `logits` output (a session of the runtime package itself) and the
 * `probabilities` output (the serving `Session` of src/serve/runtime.ts) against tfjs's logits
 * and their softmax on the cpu backend, max abs <= 1e-4, and identical argmax masks. Nothing
 * here depends on particular weights: a retrained model with the same card format passes too.
 */
import t from 'tap'
import * as tf from '@tensorflow/tfjs-core'
import '@tensorflow/tfjs-backend-cpu'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import type * as Ort from 'onnxruntime-common'
import * as ortWeb from 'onnxruntime-web'
import { acdcDataset } from '../../src/data/acdc.ts'
import { LOGITS_NAME } from '../../src/model/onnx-export.ts'
import { predictLogits, toParams } from '../../src/model/tfjs-unet.ts'
import { createSession, type RuntimeName } from '../../src/serve/runtime.ts'
import { loadParent, type Parent } from '../../src/train/finetune.ts'
import { readNiftiFile } from '../../src/volume/nifti-file.ts'
import { preprocessVolume } from '../../src/volume/preprocess.ts'
import { spatialDims } from '../../src/volume/volume.ts'
import { sharedData } from '../helpers/data.ts'

await tf.setBackend('cpu')

const MODEL = join(import.meta.dirname, '../../models/acdc-maco.onnx')
const TOLERANCE = 1e-4

const must = <A>(e: E.Either<string, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left)
  return e.right
}

/** Network-grid slices, N x H x W, with a name per slice. */
interface Slices {
  readonly images: Float32Array
  readonly names: readonly string[]
  readonly patients: number
}

/**
 * The first, middle and last patient of the val split, both frames each (the lower frame
 * number is ED in ACDC), and of each volume the first, middle and last slice whose label holds
 * heart: basal, mid and apical in ACDC's slice order.
 */
const realSlices = async (root: string, input: Parent['input']): Promise<Slices> => {
  const cases = [...must(await acdcDataset(root, 'val')()).cases].sort((a, b) =>
    a.case.localeCompare(b.case),
  )
  const patients = [...new Set(cases.map((c) => c.case.replace(/_frame\d+$/, '')))]
  const chosen = [0, Math.floor(patients.length / 2), patients.length - 1].map((i) => patients[i])
  const [w, h] = input.size
  const planes: Float32Array[] = []
  const names: string[] = []
  for (const c of cases.filter((c) => chosen.some((p) => c.case.startsWith(`${p}_`)))) {
    const image = must(await readNiftiFile(c.image)())
    const label = must(await readNiftiFile(c.label ?? '')())
    const network = preprocessVolume(image, { ...input, kind: 'image' })
    const [nx, ny, nz] = spatialDims(label)
    const heart = Array.from({ length: nz }, (_, k) => k).filter((k) =>
      label.data.subarray(k * nx * ny, (k + 1) * nx * ny).some((v) => v > 0),
    )
    const levels = { basal: 0, mid: Math.floor(heart.length / 2), apical: heart.length - 1 }
    for (const [level, i] of Object.entries(levels)) {
      const k = heart[i]
      planes.push((network.data as Float32Array).subarray(k * w * h, (k + 1) * w * h))
      names.push(`${c.case} slice ${k} (${level})`)
    }
  }
  const images = new Float32Array(planes.length * w * h)
  planes.forEach((p, i) => images.set(p, i * w * h))
  return { images, names, patients: chosen.length }
}

/** tfjs inference (cpu backend) of the imported weights: logits and softmax, both NCHW. */
const tfjsOutputs = async (parent: Parent, images: Float32Array) => {
  const [w, h] = parent.input.size
  const classes = parent.spec.options.classes
  const n = images.length / (w * h)
  const params = toParams(parent.spec, parent.weights)
  const logits = new Float32Array(n * classes * w * h)
  const probabilities = new Float32Array(logits.length)
  // a few slices at a time: tidy keeps every intermediate of a pass until it ends
  const chunk = 3
  for (let k = 0; k < n; k += chunk) {
    const m = Math.min(chunk, n - k)
    const [l, p] = tf.tidy(() => {
      const x = tf.tensor4d(images.subarray(k * w * h, (k + m) * w * h), [m, h, w, 1])
      const y = predictLogits(parent.spec, params, x)
      return [y, tf.softmax(y)].map((t) => tf.transpose(t, [0, 3, 1, 2]))
    })
    logits.set((await l.data()) as Float32Array, k * classes * w * h)
    probabilities.set((await p.data()) as Float32Array, k * classes * w * h)
    tf.dispose([l, p])
  }
  tf.dispose(Object.values(params))
  return { logits, probabilities }
}

const maxAbsDifference = (a: Float32Array, b: Float32Array): number => {
  let worst = 0
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]))
  return worst
}

/** Argmax over the class axis of N x C x plane scores. */
const argmaxMasks = (scores: Float32Array, classes: number, plane: number): Uint8Array => {
  const masks = new Uint8Array(scores.length / classes)
  for (let b = 0; b < masks.length / plane; b++)
    for (let p = 0; p < plane; p++) {
      let best = 0
      for (let c = 1; c < classes; c++)
        if (scores[(b * classes + c) * plane + p] > scores[(b * classes + best) * plane + p])
          best = c
      masks[b * plane + p] = best
    }
  return masks
}

/** The smallest gap between the two largest scores of a pixel: how close the masks came to a tie. */
const smallestMargin = (scores: Float32Array, classes: number, plane: number): number => {
  let smallest = Infinity
  for (let b = 0; b < scores.length / (classes * plane); b++)
    for (let p = 0; p < plane; p++) {
      const s = Array.from({ length: classes }, (_, c) => scores[(b * classes + c) * plane + p])
      s.sort((x, y) => y - x)
      smallest = Math.min(smallest, s[0] - s[1])
    }
  return smallest
}

const data = sharedData('acdc')
const ortNode: E.Either<string, typeof Ort> = await import('onnxruntime-node').then(
  (m) => E.right(m as typeof Ort),
  (e: unknown) => E.left((e instanceof Error ? e.message : String(e)).split('\n')[0]),
)

t.test('the shipped model on real ACDC val slices', { skip: data.skip }, async (t) => {
  const parent = must(await loadParent(MODEL)())
  const bytes = new Uint8Array(await readFile(MODEL))
  const { images, names, patients } = await realSlices(data.path!, parent.input)
  const [w, h] = parent.input.size
  const plane = w * h
  const n = names.length
  const classes = parent.spec.options.classes
  const tfjs = await tfjsOutputs(parent, images)
  const tfjsMasks = argmaxMasks(tfjs.logits, classes, plane)

  t.test('the slices: several patients, ED and ES, basal, mid and apical', async (t) => {
    t.ok(n >= 8, `${n} slices`)
    t.equal(patients, 3)
    t.equal(new Set(names.map((s) => s.replace(/ slice.*/, ''))).size, 2 * patients)
    for (const level of ['basal', 'mid', 'apical'])
      t.equal(names.filter((s) => s.endsWith(`(${level})`)).length, 2 * patients, level)
  })

  t.test('the masks are not trivial: every class of the card is predicted somewhere', async (t) => {
    const present = new Set(tfjsMasks)
    for (let c = 0; c < classes; c++) t.ok(present.has(c), `class ${c} in some slice's mask`)
  })

  const runtimes: [RuntimeName, E.Either<string, typeof Ort>][] = [
    ['onnxruntime-web', E.right(ortWeb)],
    ['onnxruntime-node', ortNode],
  ]
  for (const [name, loaded] of runtimes)
    t.test(
      `${name}: logits and probabilities match tfjs (max abs <= ${TOLERANCE}), same masks`,
      { skip: E.isLeft(loaded) ? `${name} did not load (${loaded.left})` : false },
      async (t) => {
        const ort = must(loaded)
        // serving first: its first web session fixes the wasm's thread count, as in a server
        const serving = await createSession(bytes, {
          runtime: name === 'onnxruntime-web' ? 'web' : 'node',
        })
        t.equal(serving.runtimeName, name)
        const { probabilities, dims } = await serving.run(images, [n, 1, h, w])
        await serving.release()
        t.same(dims, [n, classes, h, w])
        const raw = await ort.InferenceSession.create(bytes)
        const feeds = { [raw.inputNames[0]]: new ort.Tensor('float32', images, [n, 1, h, w]) }
        const logits = (await raw.run(feeds, [LOGITS_NAME]))[LOGITS_NAME].data as Float32Array
        await raw.release()

        const logitsWorst = maxAbsDifference(logits, tfjs.logits)
        t.ok(logitsWorst <= TOLERANCE, `logits: max abs ${logitsWorst.toExponential(2)}`)
        const probabilitiesWorst = maxAbsDifference(probabilities, tfjs.probabilities)
        t.ok(
          probabilitiesWorst <= TOLERANCE,
          `probabilities: max abs ${probabilitiesWorst.toExponential(2)}`,
        )
        const margin = smallestMargin(tfjs.logits, classes, plane).toExponential(2)
        for (const [output, scores] of [
          ['logits', logits],
          ['probabilities', probabilities],
        ] as const) {
          const masks = argmaxMasks(scores, classes, plane)
          const differing = names.filter((_, b) =>
            masks
              .subarray(b * plane, (b + 1) * plane)
              .some((v, p) => v !== tfjsMasks[b * plane + p]),
          )
          t.same(differing, [], `argmax of ${output} as tfjs's (closest tie: ${margin} in logits)`)
        }
      },
    )
})
