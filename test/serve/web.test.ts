/**
 * The web page: its routes, its NIfTI module (the toolkit's codec bundled for the browser),
 * and the page itself in real headless Chromium (Debian's, driven by playwright-core):
 * open a volume, draw scribbles, undo, save them as NIfTI, segment, fine-tune and compare.
 * Screenshots go to tmp/test-output/. Skipped with a message where /usr/bin/chromium is absent.
 */
import * as E from 'fp-ts/lib/Either.js'
import { existsSync } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
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

t.test(
  'in Chromium: open, scribble, undo, save, segment, fine-tune, compare',
  { skip: existsSync(CHROMIUM) ? false : `no browser at ${CHROMIUM} (apt-get install chromium)` },
  async (t) => {
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
    await page.goto(server.url)
    await page.waitForSelector('#model option[value="tiny"]', { state: 'attached' })

    await page.setInputFiles('#file', {
      name: 'heart.nii.gz',
      mimeType: 'application/gzip',
      buffer: Buffer.from(heartBytes),
    })
    await page.waitForFunction(
      () => document.getElementById('slice-label')?.textContent === 'slice 3 / 4',
    )
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

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save')])
    t.equal(download.suggestedFilename(), 'heart_scribble.nii.gz')
    const saved = decodeNifti(new Uint8Array(await readFile((await download.path())!)))
    t.ok(E.isRight(saved), 'the saved scribbles are NIfTI')
    if (E.isRight(saved)) {
      const s = saved.right
      t.same(s.dims, [128, 128, 4])
      t.equal(s.datatype, 'uint8')
      t.same(s.geometry, heartGeometry)
      const values = Array.from(s.data as Uint8Array)
      t.equal(values.filter((v) => v !== 4).length, scribbled)
      t.equal(values[2 * 128 * 128 + 64 * 128 + 64], 3, 'LV where it was drawn, slice 3')
    }

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
    const overlaid = await page.evaluate(() => {
      const c = document.getElementById('view') as HTMLCanvasElement
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data
      let coloured = 0
      for (let i = 0; i < d.length; i += 4)
        if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) coloured++
      return coloured
    })
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
