/**
 * `maco`: the command-line entry. Parses `maco COMMAND [options]`, prints help, runs the
 * command and maps its outcome to an exit code: 0 success, 1 failed run, 2 bad usage or
 * bad input, 130 stopped by Ctrl-C, always with a one-line reason on stderr.
 */
import { parseArgs } from 'node:util'
import { CliError, type Command, type CommandIO } from './command.ts'
import { commands } from './commands.ts'

const overview = (): string =>
  [
    'maco: scribble-supervised segmentation (MaCo): preprocess, train, evaluate, export, serve.',
    '',
    'Usage: maco COMMAND [options]     maco COMMAND --help',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(12)} ${c.summary}`),
    '',
  ].join('\n')

export const helpOf = (c: Command): string =>
  [`Usage: ${c.usage}`, '', c.summary, ...(c.details ? ['', c.details] : []), ''].join('\n')

const reason = (e: unknown): string =>
  (e instanceof Error ? e.message : String(e)).split('\n')[0].replace(/^TypeError \[\w+\]: /, '')

/** Runs the CLI on `argv` (without `node script`); resolves to the exit code. */
export const runCli = async (argv: readonly string[], io: CommandIO): Promise<number> => {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const sub = name === 'help' ? commands.find((c) => c.name === rest[0]) : undefined
    io.out(sub ? helpOf(sub) : overview())
    return 0
  }
  const command = commands.find((c) => c.name === name)
  if (!command) {
    io.err(`maco: unknown command '${name}' (see maco --help)\n`)
    return 2
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(helpOf(command))
    return 0
  }
  let parsed
  try {
    parsed = parseArgs({
      args: [...rest],
      options: command.options,
      allowPositionals: true,
      strict: true,
    })
  } catch (e) {
    io.err(`maco ${name}: ${reason(e)} (see maco ${name} --help)\n`)
    return 2
  }
  try {
    await command.run(parsed, io)
    return 0
  } catch (e) {
    if (e instanceof CliError) {
      io.err(`maco ${name}: ${e.message}\n`)
      return e.exitCode
    }
    io.err(`maco ${name}: failed: ${reason(e)}\n`)
    if (process.env.MACO_DEBUG) io.err(`${(e as Error).stack}\n`)
    return 1
  }
}

const isMain =
  process.argv[1] !== undefined &&
  /(src[\\/]cli[\\/]main\.ts|bin[\\/]maco(\.js)?)$/.test(process.argv[1])
if (isMain) {
  const code = await runCli(process.argv.slice(2), {
    out: (s) => void process.stdout.write(s),
    err: (s) => void process.stderr.write(s),
    isTTY: process.stderr.isTTY === true,
  })
  process.exitCode = code
}
