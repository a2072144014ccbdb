/** Runs the `maco` CLI in-process and captures what it prints and its exit code. */
import { runCli } from '../../src/cli/main.ts'

export const maco = async (
  ...argv: string[]
): Promise<{ code: number; out: string; err: string }> => {
  let out = ''
  let err = ''
  const code = await runCli(argv, {
    out: (s) => void (out += s),
    err: (s) => void (err += s),
    isTTY: false,
  })
  return { code, out, err }
}

/**
 * `maco` in-process, with a Ctrl-C (SIGINT emitted to this process) once stderr matches `when`
 * and a handler beyond the `listeners` there were before is in place (what the CLI installs).
 */
export const macoWithCtrlC = async (
  when: RegExp,
  ...argv: string[]
): Promise<{ code: number; err: string; sent: boolean; handlerGone: boolean }> => {
  const listeners = process.listenerCount('SIGINT')
  let err = ''
  let sent = false
  const code = await runCli(argv, {
    out: () => {},
    err: (s) => {
      err += s
      if (!sent && when.test(err) && process.listenerCount('SIGINT') > listeners) {
        sent = true
        process.emit('SIGINT')
      }
    },
    isTTY: false,
  })
  return { code, err, sent, handlerGone: process.listenerCount('SIGINT') === listeners }
}

/**
 * The environment for a `node --import tsx src/cli/main.ts ...` child process, without tap's
 * coverage (@tapjs/processinfo's switch). Such children, stopped by a signal, left V8
 * coverage whose source maps were 3 lines long for 293-line files; merged with the rest it
 * made tap's report wrong for most of src/ (79.8 % in all where it is 82 %). The same code is
 * covered in-process by other tests.
 */
export const childEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
  ...process.env,
  ...extra,
  _TAPJS_PROCESSINFO_COVERAGE_: '0',
})
