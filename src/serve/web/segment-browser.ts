/**
 * In-browser segmentation for the web page: the server's own `segmentVolume` (resample to
 * the card's spacing, centre crop/pad, z-score per slice, batched runs, softmax, bilinear
 * back to the native grid, argmax, the card's postprocess) on a `runtime.ts` session in
 * onnxruntime-web, so that a mask made in the page is the mask the server would send.
 *
 * `page.ts` bundles this entry with esbuild when the server starts and leaves
 * `onnxruntime-web` as an import of the ORT browser build it serves in `ort/` beside the
 * bundle (`/web/ort/`), with its wasm: the user runs no build step, and the 14 MB wasm
 * loads only when a model is first opened here.
 *
 * @example
 * import { openModel, segment } from '/web/segment.js'
 * const model = await openModel(card, onnxBytes)       // card: the JSON of GET /v1/models/{name}
 * const { mask, classes, ms } = await segment(model, volume) // mask on the volume's grid
 */
import * as E from 'fp-ts/lib/Either.js'
import * as ort from 'onnxruntime-web'
import type { Volume } from '../../volume/volume.ts'
import { decodeModelCard, type ModelCard } from '../model-card.ts'
import { createSession, type Session } from '../runtime.ts'
import { checkDims, classSummary, segmentVolume, type ClassSummary } from '../segment.ts'

// The page is not cross-origin isolated, so no SharedArrayBuffer: one thread, no proxy
// worker. `createSession` below asks for one thread as well; this holds for any caller.
ort.env.wasm.numThreads = 1
ort.env.wasm.proxy = false
// The wasm alone: a path prefix here would make this build fetch the Emscripten glue that it
// already carries.
ort.env.wasm.wasmPaths = {
  wasm: new URL('./ort/ort-wasm-simd-threaded.wasm', import.meta.url).href,
}

export interface BrowserModel {
  readonly card: ModelCard
  readonly session: Session
}

export interface BrowserSegmentation {
  /** Class values, one per voxel of the volume, in its voxel order. */
  readonly mask: Uint8Array
  readonly classes: readonly ClassSummary[]
  /** Milliseconds from the preprocessing of the first slice to the finished mask. */
  readonly ms: number
}

const orThrow = <A>(e: E.Either<string, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left)
  return e.right
}

/** A model from its card (decoded as the server decodes it) and its ONNX bytes. */
export const openModel = async (card: unknown, onnx: Uint8Array): Promise<BrowserModel> => ({
  card: orThrow(decodeModelCard(card)),
  session: await createSession(onnx, { runtime: 'web', threads: 1 }),
})

/** The mask of `volume` and its class volumes, as the segment endpoint computes them. */
export const segment = async (
  model: BrowserModel,
  volume: Volume,
): Promise<BrowserSegmentation> => {
  orThrow(checkDims(volume.dims))
  const start = performance.now()
  const mask = await segmentVolume(model, volume)
  const ms = performance.now() - start
  return {
    mask: mask.data,
    classes: classSummary(model.card, mask.data, volume.geometry.spacing),
    ms,
  }
}
