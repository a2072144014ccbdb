/**
 * The web page at `/` (Node): open a NIfTI volume, scroll its slices, segment it with a
 * served model, on the server or in the browser (overlay and per-class volumes in mL),
 * scribble per class (brush, eraser, undo), save the scribbles as NIfTI, fine-tune on them
 * as a job (progress by server-sent events) and compare the parent and the fine-tuned model
 * on the same slice.
 *
 * The page is static: `index.html` and `app.js` (a plain ES module) from this folder, and two
 * of the toolkit's own modules bundled for the browser by esbuild (present through tsx) when
 * the server starts, held in memory: `/web/nifti.js` (the NIfTI codec) and `/web/segment.js`
 * (the server's segmentation on onnxruntime-web). The ORT browser build that `segment.js`
 * imports, and its wasm, are served from node_modules under `/web/ort/`, read on first
 * request and tagged with the package's version. No build step for the user. The page calls
 * the same HTTP API as any client, with the API key typed into the page.
 *
 * @example
 * const web = await webPage()
 * const app = createApp({ models, extend: (app, helpers) => { jobs.routes(app, helpers); web(app) } })
 */
import { build, type Plugin } from 'esbuild'
import type { Hono } from 'hono'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Env } from '../app.ts'

const here = (file: string) => new URL(file, import.meta.url)

/**
 * Scripts and data only from this server ('wasm-unsafe-eval' lets onnxruntime-web compile
 * its wasm, and nothing else); styles inline in the page; canvases to PNG.
 */
const POLICY =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

/**
 * The smallest ORT build that runs in a page: the wasm backend with its Emscripten glue
 * inside (one script), and the wasm it loads. Served as `/web/ort/NAME`.
 */
const ORT_FILES = {
  'ort.wasm.bundle.min.mjs': 'text/javascript; charset=utf-8',
  'ort-wasm-simd-threaded.wasm': 'application/wasm',
} as const

const ORT_DIST = dirname(createRequire(import.meta.url).resolve('onnxruntime-web'))

const ortPackageVersion = async (): Promise<string> =>
  (JSON.parse(await readFile(join(ORT_DIST, '../package.json'), 'utf8')) as { version: string })
    .version

/** `onnxruntime-web` stays an import, of the build served in `ort/` beside the bundle. */
const ortFromServer: Plugin = {
  name: 'ort-from-server',
  setup: (b) => {
    b.onResolve({ filter: /^onnxruntime-web$/ }, () => ({
      path: './ort/ort.wasm.bundle.min.mjs',
      external: true,
    }))
  },
}

const bundle = async (entry: string): Promise<string> => {
  const out = await build({
    entryPoints: [fileURLToPath(here(entry))],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    write: false,
    logLevel: 'silent',
    plugins: [ortFromServer],
  })
  return out.outputFiles[0].text
}

/** Reads the page and bundles its modules; resolves to a function that adds the routes. */
export const webPage = async (): Promise<(app: Hono<Env>) => void> => {
  const [html, script, nifti, segment] = await Promise.all([
    readFile(here('./index.html'), 'utf8'),
    readFile(here('./app.js'), 'utf8'),
    bundle('./nifti-browser.ts'),
    bundle('./segment-browser.ts'),
  ])
  const headers = (type: string) => ({
    'content-type': type,
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
  })
  const ortVersion = await ortPackageVersion()
  return (app) => {
    app.get('/', (c) =>
      c.body(html, 200, {
        ...headers('text/html; charset=utf-8'),
        'content-security-policy': POLICY,
      }),
    )
    app.get('/web/app.js', (c) => c.body(script, 200, headers('text/javascript; charset=utf-8')))
    app.get('/web/nifti.js', (c) => c.body(nifti, 200, headers('text/javascript; charset=utf-8')))
    app.get('/web/segment.js', (c) =>
      c.body(segment, 200, headers('text/javascript; charset=utf-8')),
    )
    for (const [name, type] of Object.entries(ORT_FILES)) {
      // 14 MB of wasm: a revalidation answers 304 until the package changes.
      const tag = `"onnxruntime-web-${ortVersion}-${name}"`
      let bytes: Promise<Buffer> | undefined
      app.get(`/web/ort/${name}`, async (c) => {
        if (c.req.header('if-none-match') === tag) return c.body(null, 304, { etag: tag })
        bytes ??= readFile(join(ORT_DIST, name))
        return c.body((await bytes) as Uint8Array<ArrayBuffer>, 200, {
          ...headers(type),
          etag: tag,
        })
      })
    }
  }
}
