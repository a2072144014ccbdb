/**
 * The web page at `/` (Node): open a NIfTI volume, scroll its slices, segment it with a
 * served model (overlay and per-class volumes in mL), scribble per class (brush, eraser,
 * undo), save the scribbles as NIfTI, fine-tune on them as a job (progress by server-sent
 * events) and compare the parent and the fine-tuned model on the same slice.
 *
 * The page is static: `index.html` and `app.js` (a plain ES module) from this folder, and
 * `/web/nifti.js`, the toolkit's own NIfTI codec bundled for the browser by esbuild (present
 * through tsx) when the server starts, held in memory: no build step for the user. It
 * calls the same HTTP API as any client, with the API key typed into the page.
 *
 * @example
 * const web = await webPage()
 * const app = createApp({ models, extend: (app, helpers) => { jobs.routes(app, helpers); web(app) } })
 */
import { build } from 'esbuild'
import type { Hono } from 'hono'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Env } from '../app.ts'

const here = (file: string) => new URL(file, import.meta.url)

/** Scripts and data only from this server; styles inline in the page; canvases to PNG. */
const POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

/** Reads the page and bundles the NIfTI module; resolves to a function that adds the routes. */
export const webPage = async (): Promise<(app: Hono<Env>) => void> => {
  const [html, script, bundle] = await Promise.all([
    readFile(here('./index.html'), 'utf8'),
    readFile(here('./app.js'), 'utf8'),
    build({
      entryPoints: [fileURLToPath(here('./nifti-browser.ts'))],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      minify: true,
      write: false,
      logLevel: 'silent',
    }),
  ])
  const nifti = bundle.outputFiles[0].text
  const headers = (type: string) => ({
    'content-type': type,
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
  })
  return (app) => {
    app.get('/', (c) =>
      c.body(html, 200, {
        ...headers('text/html; charset=utf-8'),
        'content-security-policy': POLICY,
      }),
    )
    app.get('/web/app.js', (c) => c.body(script, 200, headers('text/javascript; charset=utf-8')))
    app.get('/web/nifti.js', (c) => c.body(nifti, 200, headers('text/javascript; charset=utf-8')))
  }
}
