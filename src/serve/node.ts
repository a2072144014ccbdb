/**
 * The Node side of serving: models read from a folder, and the Hono app on an HTTP
 * server (@hono/node-server). Everything platform-neutral is in `app.ts`; this file is
 * the only one of the service that touches `node:` modules.
 *
 * @example
 * const registry = await loadRegistry(directoryStore('models'), (b) => createSession(b))()
 * const server = await listen(createApp({ models: registry.right }), { port: 8787 })
 * server.url // 'http://127.0.0.1:8787'
 * await server.close()
 */
import { serve } from '@hono/node-server'
import { readdir, readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { ModelStore } from './models.ts'

/** A folder of `NAME.onnx` + `NAME.json` files. */
export const directoryStore = (dir: string): ModelStore => ({
  where: dir,
  list: async () =>
    (await readdir(dir, { withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name),
  read: async (file) => {
    try {
      const bytes = await readFile(join(dir, file))
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw e
    }
  },
})

export interface Listening {
  readonly url: string
  readonly port: number
  /** Stops accepting connections and resolves when open ones have ended. */
  readonly close: () => Promise<void>
}

/** Serves `app` on `host:port` (port 0: any free port); resolves once it listens. */
export const listen = (
  app: { fetch: (request: Request) => Response | Promise<Response> },
  options: { port?: number; host?: string } = {},
): Promise<Listening> => {
  const host = options.host ?? '127.0.0.1'
  return new Promise((resolve, reject) => {
    const server = serve(
      { fetch: app.fetch, port: options.port ?? 8787, hostname: host },
      (info: AddressInfo) =>
        resolve({
          url: `http://${host.includes(':') ? `[${host}]` : host}:${info.port}`,
          port: info.port,
          close: () =>
            new Promise<void>((done, failed) => {
              server.close((e) => (e ? failed(e) : done()))
              if ('closeIdleConnections' in server) server.closeIdleConnections()
            }),
        }),
    )
    // Idle keep-alive connections outlive a busy event loop (a long segmentation blocks the
    // timers too): with Node's 5 s default the server could close a socket a client was just
    // reusing, and the client saw ECONNRESET. 65 s is what load balancers expect of a backend.
    if ('keepAliveTimeout' in server) {
      server.keepAliveTimeout = 65_000
      server.headersTimeout = 66_000
    }
    server.once('error', reject)
  })
}
