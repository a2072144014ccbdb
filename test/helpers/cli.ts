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
