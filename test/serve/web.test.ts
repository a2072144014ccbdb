/**
 * The web page: its routes, its NIfTI module (the toolkit's codec bundled for the browser),
 * the ORT browser build it serves, and the page itself in real headless Chromium (Debian's,
 * driven by playwright-core): open a volume, draw scribbles, undo, save them as NIfTI,
 * segment, fine-tune and compare; and segment in the browser with the shipped model, the
 * mask held to the server's. Screenshots go to tmp/test-output/. Skipped with a message
 * where /usr/bin/chromium is absent.
 */
import * as E from 'fp-ts/lib/Either.js'
import { existsSync } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import t, { type Test } from 'tap'
import { phantomCase } from '../../src/data/phantom.ts'
import { createApp } from '../../src/serve/app.ts'
import { growingRegistry, openJobs, workerRunner } from '../../src/serve/jobs.ts'
import { loadRegistry } from '../../src/serve/models.ts'
import { directoryStore, listen } from '../../src/serve/node.ts'
import { createSession } from '../../src/serve/runtime.ts'
import { webPage } from '../../src/serve/web/page.ts'
import { decodeNifti, encodeNifti } from '../../src/volume/nifti.ts'
import type { Volume } from '../../src/volume/volume.ts'
import { tinyModelDir } from '../helpers/serve-fixtures.ts'

const CHROMIUM = '/usr/bin/chromium'
const OUTPUT = join(import.meta.dirname, '../../tmp/test-output')
const SHIPPED_MODELS = join(import.meta.dirname, '../../models')
const inChromium = {
  skip: existsSync(CHROMIUM) ? false : `no browser at ${CHROMIUM} (apt-get install chromium)`,
}

const root = t.testdir()
const modelsDir = join(root, 'models')
await mkdir(modelsDir)
await tinyModelDir(modelsDir, { input: { spacing: [6, 6], size: [32, 32] } })
const sessions = (b: Uint8Array) => createSession(b, { runtime: 'web', threads: 1 })
const loaded = await loadRegistry(directoryStore(modelsDir), sessions)()
if (E.isLeft(loaded)) throw new Error(loaded.left)
const models = growingRegistry(loaded.right)
const jobs = await openJobs({
  registry: models,
  modelsDir,
  jobsDir: join(root, 'jobs'),
  createSession: sessions,
  runner: workerRunner('wasm'),
})
const web = await webPage()
const app = createApp({
  models,
  log: () => {},
  extend: (app, helpers) => {
    jobs.routes(app, helpers)
    web(app)
  },
})
const server = await listen(app, { port: 0 })
t.teardown(async () => {
  await jobs.idle()
  await server.close()
  await models.release()
})

/** A phantom heart, 128 x 128 x 4 at 1.8 mm: the volume the page opens. */
const heart = phantomCase(21, { size: [128, 128], slices: 4, spacing: [1.8, 1.8, 8] })
const heartBytes = encodeNifti(heart.image, { gzip: true })
/** The volume as a reader of the file gets it (header values in float32). */
const heartFile = decodeNifti(heartBytes)
if (E.isLeft(heartFile)) throw new Error(heartFile.left)
const heartGeometry = heartFile.right.geometry

t.test('the page, its script and its NIfTI module are served', async (t) => {
  const page = await fetch(`${server.url}/`)
  t.equal(page.status, 200)
  t.match(page.headers.get('content-type'), /^text\/html/)
  t.match(page.headers.get('content-security-policy'), /script-src 'self'/)
  t.match(await page.text(), /<script type="module" src="\/web\/app\.js"><\/script>/)
  const script = await fetch(`${server.url}/web/app.js`)
  t.match(script.headers.get('content-type'), /^text\/javascript/)
  t.match(await script.text(), /from '\/web\/nifti\.js'/)
  // The bundle is the toolkit's codec: what it reads and writes, the server reads alike.
  const bundle = await (await fetch(`${server.url}/web/nifti.js`)).text()
  const nifti = (await import(`data:text/javascript,${encodeURIComponent(bundle)}`)) as {
    readNifti: (b: Uint8Array) => Volume
    writeNifti: (like: Volume, data: Uint8Array) => Uint8Array
  }
  const read = nifti.readNifti(heartBytes)
  t.same(read.dims, [128, 128, 4])
  t.same(read.geometry, heartGeometry)
  const back = decodeNifti(nifti.writeNifti(read, heart.scribble.data))
  t.ok(E.isRight(back) && Buffer.compare(back.right.data as Uint8Array, heart.scribble.data) === 0)
  t.ok(
    E.isRight(back) &&
      back.right.geometry.affine.every((r, i) =>
        r.every((x, j) => Math.abs(x - heart.image.geometry.affine[i][j]) < 1e-4),
      ),
  )
  t.throws(() => nifti.readNifti(Uint8Array.of(1, 2, 3)))
})

t.test('the ORT browser build and its wasm are served, typed and tagged', async (t) => {
  const page = await fetch(`${server.url}/`)
  t.match(page.headers.get('content-security-policy'), /script-src 'self' 'wasm-unsafe-eval'/)
  const segment = await fetch(`${server.url}/web/segment.js`)
  t.match(segment.headers.get('content-type'), /^text\/javascript/)
  t.match(await segment.text(), /from"\.\/ort\/ort\.wasm\.bundle\.min\.mjs"/)
  const script = await fetch(`${server.url}/web/ort/ort.wasm.bundle.min.mjs`)
  t.match(script.headers.get('content-type'), /^text\/javascript/)
  t.match(await script.text(), /ONNX Runtime Web v\d/)
  const wasm = await fetch(`${server.url}/web/ort/ort-wasm-simd-threaded.wasm`)
  t.equal(wasm.headers.get('content-type'), 'application/wasm')
  const bytes = new Uint8Array(await wasm.arrayBuffer())
  t.same(Array.from(bytes.subarray(0, 4)), [0, 0x61, 0x73, 0x6d], 'the wasm magic')
  const tag = wasm.headers.get('etag')
  t.match(tag, /^"onnxruntime-web-\d+\.\d+\.\d+-ort-wasm-simd-threaded\.wasm"$/)
  const again = await fetch(`${server.url}/web/ort/ort-wasm-simd-threaded.wasm`, {
    headers: { 'if-none-match': tag! },
  })
  t.equal(again.status, 304, 'a revalidation sends no 14 MB')
  t.equal((await fetch(`${server.url}/web/ort/ort.min.mjs`)).status, 404, 'only the files it needs')
})

/** A headless Chromium page on `url`, with the page's errors collected. */
const openPage = async (t: Test, url: string) => {
  const { chromium } = await import('playwright-core')
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  })
  t.teardown(() => browser.close())
  const page = await browser.newPage({
    viewport: { width: 1400, height: 1000 },
    acceptDownloads: true,
  })
  const problems: string[] = []
  page.on('pageerror', (e) => problems.push(e.message))
  page.on('console', (m) => m.type() === 'error' && problems.push(m.text()))
  await page.goto(url)
  return { page, problems }
}

/** The phantom heart opened in the page (it shows slice 3 of 4). */
const openHeart = async (page: Page) => {
  await page.setInputFiles('#file', {
    name: 'heart.nii.gz',
    mimeType: 'application/gzip',
    buffer: Buffer.from(heartBytes),
  })
  await page.waitForFunction(
    () => document.getElementById('slice-label')?.textContent === 'slice 3 / 4',
  )
}

/** The NIfTI file a click on `button` downloads, decoded. */
const downloaded = async (page: Page, button: string) => {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(button)])
  const file = decodeNifti(new Uint8Array(await readFile((await download.path())!)))
  if (E.isLeft(file)) throw new Error(file.left)
  return { name: download.suggestedFilename(), volume: file.right }
}

/** Pixels of the view canvas that are not grey: the overlay and the scribbles. */
const colouredPixels = (page: Page) =>
  page.evaluate(() => {
    const c = document.getElementById('view') as HTMLCanvasElement
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data
    let coloured = 0
    for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) coloured++
    return coloured
  })

t.test(
  'in Chromium: open, scribble, undo, save, segment, fine-tune, compare',
  inChromium,
  async (t) => {
    const { page, problems } = await openPage(t, server.url)
    await page.waitForSelector('#model option[value="tiny"]', { state: 'attached' })
    await openHeart(page)
    t.match(
      await page.textContent('#volume-info'),
      /heart\.nii\.gz: 128 x 128 x 4 voxels, 1\.80 x 1\.80 x 8\.00 mm/,
    )

    // Scribble LV across the middle and background at the top; the canvas is 512 px for 128 voxels.
    const box = (await page.locator('#view').boundingBox())!
    const at = (x: number, y: number) =>
      [box.x + ((x + 0.5) * box.width) / 128, box.y + ((y + 0.5) * box.height) / 128] as const
    const stroke = async (from: readonly [number, number], to: readonly [number, number]) => {
      await page.mouse.move(...at(...from))
      await page.mouse.down()
      await page.mouse.move(...at(...to), { steps: 12 })
      await page.mouse.up()
    }
    const count = async () => Number((await page.textContent('#scribble-count'))?.split(' ')[0])
    await page.click('.class-button[data-value="3"]')
    await stroke([58, 64], [70, 64])
    const lv = await count()
    t.ok(lv >= 13 * 3, `${lv} LV voxels scribbled`)
    await page.click('.class-button[data-value="0"]')
    await stroke([30, 20], [100, 20])
    t.ok((await count()) > lv, 'background too')
    await page.click('#undo')
    t.equal(await count(), lv, 'undo takes the last stroke back')
    await stroke([30, 20], [100, 20])
    const scribbled = await count()
    // The canvas shows the LV scribble in its colour.
    const pixel = await page.evaluate(() => {
      const c = document.getElementById('view') as HTMLCanvasElement
      return Array.from(c.getContext('2d')!.getImageData(64, 64, 1, 1).data.slice(0, 3))
    })
    t.same(pixel, [17, 138, 255])

    const saved = await downloaded(page, '#save')
    t.equal(saved.name, 'heart_scribble.nii.gz')
    const s = saved.volume
    t.same(s.dims, [128, 128, 4])
    t.equal(s.datatype, 'uint8')
    t.same(s.geometry, heartGeometry)
    const values = Array.from(s.data as Uint8Array)
    t.equal(values.filter((v) => v !== 4).length, scribbled)
    t.equal(values[2 * 128 * 128 + 64 * 128 + 64], 3, 'LV where it was drawn, slice 3')

    await page.click('#segment')
    await page.waitForFunction(() => document.querySelectorAll('#volumes tr').length === 4)
    const rows = await page.$$eval('#volumes tr', (trs) =>
      trs.map((tr) => Array.from(tr.children, (td) => td.textContent)),
    )
    t.same(
      rows.map((r) => r[0]),
      ['background', 'RV', 'MYO', 'LV'],
    )
    t.equal(
      rows.reduce((n, r) => n + Number(r[1]), 0),
      128 * 128 * 4,
      'every voxel has a class',
    )
    const overlaid = await colouredPixels(page)
    t.ok(overlaid > scribbled, `the mask is overlaid (${overlaid} coloured pixels)`)
    await mkdir(OUTPUT, { recursive: true })
    await page.screenshot({ path: join(OUTPUT, 'web-segment.png') })

    await page.fill('#epochs', '1')
    await page.click('#finetune')
    await page.waitForFunction(
      () =>
        !document.getElementById('compare')?.hidden ||
        document.getElementById('status')?.classList.contains('error'),
      undefined,
      { timeout: 120000 },
    )
    const failed = await page.$eval('#status', (e) => e.classList.contains('error'))
    t.notOk(failed, String(await page.textContent('#status')))
    t.match(await page.textContent('#job'), /^tiny-ft-[0-9a-f]{12}: done$/)
    t.match(await page.textContent('#after-label'), /^after: tiny-ft-[0-9a-f]{12}$/)
    t.equal(await page.$$eval('#compare-volumes tr', (trs) => trs.length), 4)
    t.match(await page.textContent('#model'), /tiny-ft-[0-9a-f]{12} \(from tiny\)/)
    await page.screenshot({ path: join(OUTPUT, 'web-compare.png'), fullPage: true })
    t.same(problems, [], 'no errors in the page')
  },
)

t.test(
  'in Chromium: the shipped model in the browser gives the mask the server gives',
  inChromium,
  async (t) => {
    // The shipped ACDC model, served as `maco serve --models models` serves it: a real
    // network that finds RV, MYO and LV in the phantom, and a card that asks for the
    // largest-component clean-up.
    const shipped = await loadRegistry(directoryStore(SHIPPED_MODELS), sessions)()
    if (E.isLeft(shipped)) throw new Error(shipped.left)
    const card = shipped.right.cards.find((c) => c.name === 'acdc-maco')
    t.equal(card?.postprocess, 'largest-component')
    const shippedServer = await listen(
      createApp({ models: shipped.right, log: () => {}, extend: (app) => web(app) }),
      { port: 0 },
    )
    t.teardown(async () => {
      await shippedServer.close()
      await shipped.right.release()
    })
    const fromServer = await fetch(`${shippedServer.url}/v1/models/acdc-maco/segment`, {
      method: 'POST',
      body: heartBytes as Uint8Array<ArrayBuffer>,
    })
    const serverFile = decodeNifti(new Uint8Array(await fromServer.arrayBuffer()))
    if (E.isLeft(serverFile)) throw new Error(serverFile.left)
    const serverMask = serverFile.right.data as Uint8Array
    const voxels = (mask: Uint8Array, value: number) => mask.filter((v) => v === value).length
    for (const value of [1, 2, 3])
      t.ok(voxels(serverMask, value) > 300, `class ${value}: ${voxels(serverMask, value)} voxels`)

    const { page, problems } = await openPage(t, shippedServer.url)
    await page.waitForSelector('#model option[value="acdc-maco"]', { state: 'attached' })
    await openHeart(page)
    await page.selectOption('#run-on', 'browser')
    await page.click('#segment')
    await page.waitForFunction(
      () =>
        /in this browser/.test(document.getElementById('segment-info')?.textContent ?? '') ||
        document.getElementById('status')?.classList.contains('error'),
      undefined,
      { timeout: 60000 },
    )
    t.notOk(
      await page.$eval('#status', (e) => e.classList.contains('error')),
      String(await page.textContent('#status')),
    )
    const info = String(await page.textContent('#segment-info'))
    t.match(
      info,
      /^acdc-maco in this browser, inference \d+ ms \(onnxruntime-web, wasm, 1 thread\)$/,
    )
    t.match(await page.textContent('#view-caption'), /^slice 3: acdc-maco in this browser, /)
    t.ok((await colouredPixels(page)) > 100, 'the mask is overlaid')
    await mkdir(OUTPUT, { recursive: true })
    await page.screenshot({ path: join(OUTPUT, 'web-in-browser.png') })

    const browser = await downloaded(page, '#save-mask')
    t.equal(browser.name, 'heart_mask.nii.gz')
    t.same(browser.volume.geometry, heartGeometry)
    const browserMask = browser.volume.data as Uint8Array
    t.equal(browserMask.length, serverMask.length)
    // Every voxel, and the voxels either calls heart: the background alone would agree 95%.
    let same = 0
    let heartVoxels = 0
    let heartSame = 0
    for (let i = 0; i < serverMask.length; i++) {
      same += browserMask[i] === serverMask[i] ? 1 : 0
      if (browserMask[i] > 0 || serverMask[i] > 0) {
        heartVoxels++
        heartSame += browserMask[i] === serverMask[i] ? 1 : 0
      }
    }
    t.ok(same / serverMask.length >= 0.995, `${same} of ${serverMask.length} voxels agree`)
    t.ok(heartSame / heartVoxels >= 0.98, `${heartSame} of ${heartVoxels} heart voxels agree`)
    const rows = await page.$$eval('#volumes tr', (trs) =>
      trs.map((tr) => Number(tr.children[1].textContent)),
    )
    t.same(
      rows,
      [0, 1, 2, 3].map((v) => voxels(browserMask, v)),
      'the table counts this mask',
    )

    // Back to the server: the page says so, with the server's time, and shows its mask.
    await page.selectOption('#run-on', 'server')
    await page.click('#segment')
    await page.waitForFunction(() =>
      /on the server/.test(document.getElementById('segment-info')?.textContent ?? ''),
    )
    t.match(await page.textContent('#segment-info'), /^acdc-maco on the server, inference \d+ ms$/)
    const viaPage = await downloaded(page, '#save-mask')
    t.same(viaPage.volume.data, serverMask, "the server's mask, as the server sends it")
    t.same(problems, [], 'no errors in the page')
  },
)
