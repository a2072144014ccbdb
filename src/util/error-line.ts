/**
 * The first line of what was thrown: the one-line reason the command line and the HTTP
 * errors give, never a stack.
 *
 * @example
 * errorLine(new Error('bad header\n  at parse ...')) // 'bad header'
 */
export const errorLine = (e: unknown): string =>
  (e instanceof Error ? e.message : String(e)).split('\n')[0]
