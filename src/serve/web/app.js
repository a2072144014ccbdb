/**
 * The web page's script (a plain ES module, no build step): a NIfTI volume opened in the
 * browser (the toolkit's own codec, /web/nifti.js), its slices drawn on a canvas at native
 * resolution, a segmentation as an overlay with per-class volumes (made by the segment
 * endpoint, or in this browser by /web/segment.js, the server's own code on onnxruntime-web,
 * with the model from /v1/models/{name}/onnx), scribbles per class drawn with the mouse
 * (brush, eraser, undo), saved as a NIfTI file, sent to a fine-tune job whose progress
 * streams as server-sent events, and the parent and the new model compared on the same slice.
 *
 * Voxel (x, y) of slice k is pixel (x, y) of the canvas: the volume's own grid, as the
 * scribbles must be saved on it. Event streams are read with fetch (not EventSource), so the
 * API key travels in a header.
 */
import { gunzip, readNifti, realValues, spatialDims, writeNifti } from '/web/nifti.js'

const $ = (id) => document.getElementById(id)

/** Scribble colours by class value (class 0, background, in yellow so that it shows). */
const PALETTE = [
  [255, 214, 10],
  [239, 71, 111],
  [6, 214, 160],
  [17, 138, 255],
  [255, 146, 43],
  [177, 98, 255],
  [0, 200, 230],
]
const colour = (value) => PALETTE[value % PALETTE.length]
const MASK_ALPHA = 0.45

/** Where a segmentation was made, in words. */
const WHERE = { server: 'on the server', browser: 'in this browser' }

const state = {
  models: [],
  card: undefined,
  file: undefined,
  bytes: undefined,
  volume: undefined,
  image: undefined,
  dims: [0, 0, 0],
  slice: 0,
  window: [0, 1],
  /** The last segmentation: { model, where, ms, mask, classes }. */
  segmentation: undefined,
  /** Models opened in this browser, by name: promises of /web/segment.js's models. */
  browserModels: new Map(),
  scribble: undefined,
  unlabelled: 4,
  classValue: 1,
  tool: 'brush',
  /** Strokes to undo: each a Map from voxel index to the value before the stroke. */
  strokes: [],
  /** Parent and fine-tuned segmentations of the same volume. */
  compare: undefined,
}

// ---- talking to the server ---------------------------------------------------------

const withKey = (headers = {}) => {
  const key = $('api-key').value.trim()
  return key === '' ? headers : { ...headers, 'x-api-key': key }
}

/** fetch with the API key; a non-2xx answer throws its `error` line. */
const api = async (path, init = {}) => {
  const response = await fetch(path, { ...init, headers: withKey(init.headers) })
  if (!response.ok) {
    let reason = response.statusText
    try {
      reason = (await response.json()).error ?? reason
    } catch {
      // not JSON: keep the status text
    }
    throw new Error(`${response.status}: ${reason}`)
  }
  return response
}

const say = (text, error = false) => {
  $('status').textContent = text
  $('status').classList.toggle('error', error)
}

const failed = (e) => say(e instanceof Error ? e.message : String(e), true)

const loadModels = async (keep) => {
  const { models } = await (await api('/v1/models')).json()
  state.models = models
  const select = $('model')
  const chosen = keep ?? select.value
  select.replaceChildren(
    ...models.map((m) => {
      const option = document.createElement('option')
      option.value = m.name
      option.textContent = m.parent ? `${m.name} (from ${m.parent})` : m.name
      return option
    }),
  )
  if (models.some((m) => m.name === chosen)) select.value = chosen
  chooseModel()
}

const chooseModel = () => {
  state.card = state.models.find((m) => m.name === $('model').value)
  const classes = state.card?.classes ?? []
  // The fine-tune server's default for unannotated voxels: 4, or the class count when more.
  const unlabelled = Math.max(4, classes.length)
  if (state.scribble && unlabelled !== state.unlabelled)
    state.scribble = state.scribble.map((v) => (v === state.unlabelled ? unlabelled : v))
  state.unlabelled = unlabelled
  if (!classes.some((c) => c.value === state.classValue)) state.classValue = classes[1]?.value ?? 0
  $('classes').replaceChildren(
    ...classes.map((c) => {
      const button = document.createElement('button')
      button.dataset.value = String(c.value)
      button.className = c.value === state.classValue ? 'class-button on' : 'class-button'
      const swatch = document.createElement('span')
      swatch.className = 'swatch'
      swatch.style.background = `rgb(${colour(c.value).join(',')})`
      button.append(swatch, c.name)
      button.addEventListener('click', () => {
        state.classValue = c.value
        setTool('brush')
        for (const b of $('classes').children) b.classList.toggle('on', b === button)
      })
      return button
    }),
  )
  updateButtons()
}

// ---- the volume ----------------------------------------------------------------------

/** The 1st and 99th percentiles of (a sample of) the intensities: the display window. */
const windowOf = (values) => {
  const step = Math.max(1, Math.floor(values.length / 200000))
  const sample = []
  for (let i = 0; i < values.length; i += step) sample.push(values[i])
  sample.sort((a, b) => a - b)
  const lo = sample[Math.floor(0.01 * (sample.length - 1))]
  const hi = sample[Math.floor(0.99 * (sample.length - 1))]
  return [lo, hi > lo ? hi : lo + 1]
}

const openFile = async (file) => {
  try {
    const bytes = new Uint8Array(await file.arrayBuffer())
    const volume = readNifti(bytes)
    const dims = spatialDims(volume)
    state.file = file
    state.bytes = bytes
    state.volume = volume
    state.image = realValues(volume)
    state.dims = dims
    state.window = windowOf(state.image)
    state.scribble = new Uint8Array(dims[0] * dims[1] * dims[2]).fill(state.unlabelled)
    state.strokes = []
    state.segmentation = undefined
    state.compare = undefined
    $('compare').hidden = true
    $('volumes').replaceChildren()
    $('segment-info').textContent = ''
    const slider = $('slice')
    slider.max = String(dims[2] - 1)
    slider.disabled = false
    setSlice(Math.floor(dims[2] / 2))
    const [sx, sy, sz] = volume.geometry.spacing
    $('volume-info').textContent =
      `${file.name}: ${dims.join(' x ')} voxels, ${sx.toFixed(2)} x ${sy.toFixed(2)} x ${sz.toFixed(2)} mm`
    say(`opened ${file.name}`)
  } catch (e) {
    failed(new Error(`${file.name}: ${e instanceof Error ? e.message : e}`))
  }
  updateButtons()
}

const setSlice = (k) => {
  const [, , nz] = state.dims
  state.slice = Math.min(Math.max(k, 0), nz - 1)
  $('slice').value = String(state.slice)
  $('slice-label').textContent = `slice ${state.slice + 1} / ${nz}`
  draw()
}

// ---- drawing -------------------------------------------------------------------------

/** Slice `k` in grey, `mask` (class values, 0 = nothing) blended over it, then the scribbles. */
const render = (canvas, k, mask, scribble) => {
  const [nx, ny] = state.dims
  const plane = nx * ny
  canvas.width = nx
  canvas.height = ny
  const context = canvas.getContext('2d')
  const picture = context.createImageData(nx, ny)
  const [lo, hi] = state.window
  for (let i = 0; i < plane; i++) {
    const v = k * plane + i
    const grey = Math.min(255, Math.max(0, ((state.image[v] - lo) / (hi - lo)) * 255))
    let rgb = [grey, grey, grey]
    if (mask && mask[v] > 0) {
      const c = colour(mask[v])
      rgb = rgb.map((g, j) => (1 - MASK_ALPHA) * g + MASK_ALPHA * c[j])
    }
    if (scribble && scribble[v] !== state.unlabelled) rgb = colour(scribble[v])
    picture.data.set([rgb[0], rgb[1], rgb[2], 255], i * 4)
  }
  context.putImageData(picture, 0, 0)
}

const draw = () => {
  if (!state.volume) return
  render($('view'), state.slice, state.segmentation?.mask, state.scribble)
  $('view-caption').textContent = state.segmentation
    ? `slice ${state.slice + 1}: ${state.segmentation.model} ${WHERE[state.segmentation.where]}, with your scribbles`
    : `slice ${state.slice + 1}: your scribbles`
  if (state.compare) {
    render($('before'), state.slice, state.compare.before.mask)
    render($('after'), state.slice, state.compare.after.mask)
  }
}

// ---- scribbling ----------------------------------------------------------------------

const setTool = (tool) => {
  state.tool = tool
  $('tool-brush').classList.toggle('on', tool === 'brush')
  $('tool-eraser').classList.toggle('on', tool === 'eraser')
}

const voxelAt = (event) => {
  const canvas = $('view')
  const r = canvas.getBoundingClientRect()
  const [nx, ny] = state.dims
  return [
    Math.floor(((event.clientX - r.left) / r.width) * nx),
    Math.floor(((event.clientY - r.top) / r.height) * ny),
  ]
}

/** Paints a disc of the brush's radius at (x, y), remembering each voxel's old value. */
const dab = (stroke, x, y) => {
  const [nx, ny] = state.dims
  const radius = Number($('brush-size').value)
  const value = state.tool === 'eraser' ? state.unlabelled : state.classValue
  for (let dy = -radius; dy <= radius; dy++)
    for (let dx = -radius; dx <= radius; dx++) {
      const [px, py] = [x + dx, y + dy]
      if (dx * dx + dy * dy > radius * radius + radius || px < 0 || py < 0 || px >= nx || py >= ny)
        continue
      const v = state.slice * nx * ny + py * nx + px
      if (!stroke.has(v)) stroke.set(v, state.scribble[v])
      state.scribble[v] = value
    }
}

/** Dabs along the segment from `from` to `to`, one per voxel step. */
const line = (stroke, from, to) => {
  const steps = Math.max(Math.abs(to[0] - from[0]), Math.abs(to[1] - from[1]), 1)
  for (let s = 0; s <= steps; s++)
    dab(
      stroke,
      Math.round(from[0] + ((to[0] - from[0]) * s) / steps),
      Math.round(from[1] + ((to[1] - from[1]) * s) / steps),
    )
}

let drawing
const startStroke = (event) => {
  if (!state.volume || event.button !== 0) return
  $('view').setPointerCapture(event.pointerId)
  drawing = { stroke: new Map(), last: voxelAt(event) }
  dab(drawing.stroke, ...drawing.last)
  draw()
}
const moveStroke = (event) => {
  if (!drawing) return
  const here = voxelAt(event)
  line(drawing.stroke, drawing.last, here)
  drawing.last = here
  draw()
}
const endStroke = () => {
  if (!drawing) return
  if (drawing.stroke.size > 0) state.strokes.push(drawing.stroke)
  drawing = undefined
  scribbleChanged()
}

const undo = () => {
  const stroke = state.strokes.pop()
  if (!stroke) return
  for (const [v, before] of stroke) state.scribble[v] = before
  scribbleChanged()
}

const annotated = () => {
  if (!state.scribble) return 0
  let n = 0
  for (const v of state.scribble) if (v !== state.unlabelled) n++
  return n
}

const scribbleChanged = () => {
  $('scribble-count').textContent = `${annotated()} voxels scribbled`
  draw()
  updateButtons()
}

const baseName = () => (state.file?.name ?? 'volume').replace(/\.nii(\.gz)?$/i, '')

const scribbleFile = () => writeNifti(state.volume, state.scribble, 'maco scribbles')

/** A .nii.gz file's bytes as `BASE_suffix.nii.gz` in the downloads. */
const download = (bytes, suffix) => {
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/gzip' }))
  const a = document.createElement('a')
  a.href = url
  a.download = `${baseName()}_${suffix}.nii.gz`
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10000)
}

// ---- segmenting ----------------------------------------------------------------------

const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0))

/**
 * The volume through `model`'s segment endpoint: the mask on the volume's grid, class
 * volumes, and the server's own time for it (its Server-Timing `segment`, upload aside).
 */
const segmentOnServer = async (model) => {
  const response = await api(`/v1/models/${encodeURIComponent(model)}/segment`, {
    method: 'POST',
    body: state.bytes,
    headers: { accept: 'application/json' },
  })
  const answer = await response.json()
  const timing = /(?:^|,)\s*segment;dur=([\d.]+)/.exec(response.headers.get('server-timing') ?? '')
  return {
    model,
    where: 'server',
    ms: timing ? Number(timing[1]) : undefined,
    mask: gunzip(fromBase64(answer.mask.data)),
    classes: answer.classes,
  }
}

/** `name` opened in this browser once (card and ONNX bytes from the server); a failure is not kept. */
const browserModel = (name) => {
  if (!state.browserModels.has(name)) {
    const opening = (async () => {
      const { openModel } = await import('/web/segment.js')
      const path = `/v1/models/${encodeURIComponent(name)}`
      const [card, onnx] = await Promise.all([
        api(path).then((r) => r.json()),
        api(`${path}/onnx`).then((r) => r.arrayBuffer()),
      ])
      return openModel(card, new Uint8Array(onnx))
    })()
    opening.catch(() => state.browserModels.delete(name))
    state.browserModels.set(name, opening)
  }
  return state.browserModels.get(name)
}

/** What the segment endpoint answers, made in this browser: no upload, the model runs here. */
const segmentInBrowser = async (name) => {
  say(`loading ${name} into this browser...`)
  const model = await browserModel(name)
  say(`segmenting with ${name} in this browser...`)
  const here = await import('/web/segment.js')
  const { mask, classes, ms } = await here.segment(model, state.volume)
  return { model: name, where: 'browser', ms, mask, classes }
}

const segmentWith = (model) =>
  $('run-on').value === 'browser' ? segmentInBrowser(model) : segmentOnServer(model)

/** Which model made the segmentation, where, and how long inference took there. */
const provenance = (s) =>
  `${s.model} ${WHERE[s.where]}${s.ms === undefined ? '' : `, inference ${Math.round(s.ms)} ms`}` +
  (s.where === 'browser' ? ' (onnxruntime-web, wasm, 1 thread)' : '')

const cell = (text, numeric = false) => {
  const td = document.createElement('td')
  td.textContent = text
  if (numeric) td.className = 'num'
  return td
}

const classCell = (c) => {
  const td = cell(c.name)
  const swatch = document.createElement('span')
  swatch.className = 'swatch'
  swatch.style.background = c.value === 0 ? 'transparent' : `rgb(${colour(c.value).join(',')})`
  td.prepend(swatch)
  return td
}

const ml = (c) => (c?.volumeMl == null ? '-' : c.volumeMl.toFixed(1))

const segment = async () => {
  const model = $('model').value
  say(`segmenting with ${model}...`)
  try {
    state.segmentation = await segmentWith(model)
    $('volumes').replaceChildren(
      ...state.segmentation.classes.map((c) => {
        const tr = document.createElement('tr')
        tr.append(classCell(c), cell(String(c.voxels), true), cell(ml(c), true))
        return tr
      }),
    )
    $('segment-info').textContent = provenance(state.segmentation)
    say(`segmented with ${model} ${WHERE[state.segmentation.where]}`)
    draw()
    updateButtons()
  } catch (e) {
    failed(e)
  }
}

// ---- fine-tuning ---------------------------------------------------------------------

/** Server-sent events from a fetch response: calls `onEvent(event, data)` per message. */
const readEvents = async (response, onEvent) => {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { done, value } = await reader.read()
    if (done) return
    buffer += value
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const field = (name) =>
        block
          .split('\n')
          .filter((l) => l.startsWith(`${name}:`))
          .map((l) => l.slice(name.length + 1).trimStart())
          .join('\n')
      onEvent(field('event') || 'message', field('data'))
    }
  }
}

const showJob = (job) => {
  const p = job.progress
  const bar = $('progress')
  bar.hidden = false
  bar.max = Math.max(p.steps, 1)
  bar.value = job.state === 'done' ? bar.max : p.step
  const loss = p.loss == null ? '' : `, loss ${p.loss.toFixed(3)}`
  $('job').textContent =
    job.state === 'running' && p.stage === 'training'
      ? `${job.name}: epoch ${Math.min(p.epoch + 1, p.epochs)} / ${p.epochs}, step ${p.step} / ${p.steps}${loss}`
      : `${job.name}: ${job.state}${job.state === 'running' ? ` (${p.stage})` : ''}${job.error ? `: ${job.error}` : ''}`
}

const finetune = async () => {
  const parent = $('model').value
  try {
    const form = new FormData()
    form.append('image', new Blob([state.bytes]), state.file.name)
    form.append('scribble', new Blob([scribbleFile()]), `${baseName()}_scribble.nii.gz`)
    form.append('epochs', $('epochs').value)
    form.append('freeze', $('freeze').checked ? 'encoder' : 'none')
    const job = await (
      await api(`/v1/models/${encodeURIComponent(parent)}/finetune`, { method: 'POST', body: form })
    ).json()
    say(`job ${job.id} ${job.state}`)
    showJob(job)
    $('finetune').disabled = true
    let last = job
    await readEvents(await api(`/v1/jobs/${job.id}/events`), (event, data) => {
      last = JSON.parse(data)
      showJob(last)
    })
    if (last.state !== 'done') throw new Error(`fine-tune failed: ${last.error ?? last.state}`)
    say(`fine-tuned: ${last.name}`)
    await loadModels(parent)
    await compare(parent, last.name)
  } catch (e) {
    failed(e)
  }
  updateButtons()
}

const compare = async (before, after) => {
  say(`comparing ${before} and ${after}...`)
  const first =
    state.segmentation?.model === before ? state.segmentation : await segmentWith(before)
  state.compare = { before: first, after: await segmentWith(after) }
  $('before-label').textContent = `before: ${before}`
  $('after-label').textContent = `after: ${after}`
  $('compare-volumes').replaceChildren(
    ...first.classes.map((c, i) => {
      const tr = document.createElement('tr')
      tr.append(classCell(c), cell(ml(c), true), cell(ml(state.compare.after.classes[i]), true))
      return tr
    }),
  )
  $('compare').hidden = false
  draw()
  say(`compared ${before} and ${after} on slice ${state.slice + 1}`)
}

// ---- wiring --------------------------------------------------------------------------

const updateButtons = () => {
  const ready = state.volume !== undefined && state.card !== undefined
  $('segment').disabled = !ready
  $('save').disabled = !ready || annotated() === 0
  $('save-mask').disabled = state.segmentation === undefined
  $('undo').disabled = state.strokes.length === 0
  $('finetune').disabled = !ready || annotated() === 0
}

$('model').addEventListener('change', chooseModel)
$('file').addEventListener('change', (e) => e.target.files[0] && openFile(e.target.files[0]))
const drop = $('drop')
drop.addEventListener('dragover', (e) => {
  e.preventDefault()
  drop.classList.add('over')
})
drop.addEventListener('dragleave', () => drop.classList.remove('over'))
drop.addEventListener('drop', (e) => {
  e.preventDefault()
  drop.classList.remove('over')
  if (e.dataTransfer.files[0]) openFile(e.dataTransfer.files[0])
})
$('slice').addEventListener('input', (e) => setSlice(Number(e.target.value)))
const view = $('view')
view.addEventListener('pointerdown', startStroke)
view.addEventListener('pointermove', moveStroke)
view.addEventListener('pointerup', endStroke)
view.addEventListener('pointercancel', endStroke)
view.addEventListener(
  'wheel',
  (e) => {
    if (!state.volume) return
    e.preventDefault()
    setSlice(state.slice + Math.sign(e.deltaY))
  },
  { passive: false },
)
$('tool-brush').addEventListener('click', () => setTool('brush'))
$('tool-eraser').addEventListener('click', () => setTool('eraser'))
$('undo').addEventListener('click', undo)
$('save').addEventListener('click', () => download(scribbleFile(), 'scribble'))
$('save-mask').addEventListener('click', () =>
  download(
    writeNifti(state.volume, state.segmentation.mask, `maco mask: ${state.segmentation.model}`),
    'mask',
  ),
)
$('segment').addEventListener('click', segment)
$('finetune').addEventListener('click', finetune)
document.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLInputElement && e.target.type !== 'range') return
  if ((e.ctrlKey || e.metaKey) && e.key === 'z') undo()
  else if (e.key === 'ArrowUp' || e.key === 'PageUp') setSlice(state.slice + 1)
  else if (e.key === 'ArrowDown' || e.key === 'PageDown') setSlice(state.slice - 1)
})
$('api-key').addEventListener('change', () => loadModels().catch(failed))

loadModels().catch(failed)
