/**
 * What a `maco` subcommand is: a name, its help text, its options (node:util parseArgs
 * config) and a run function. A command reports bad usage or bad input by throwing
 * `usageError`/`inputError` (exit 2), `runFailed` (exit 1) or `interrupted` (exit 130: the
 * user's Ctrl-C stopped it, the shell's code for SIGINT); `main.ts` turns each into one line
 * on stderr, never a stack trace, and nothing else ends the process.
 *
 * @example
 * export const hello: Command = {
 *   name: 'hello', summary: 'say hello', usage: 'maco hello NAME',
 *   options: {}, run: async ({ positionals }, io) => io.out(`hello ${positionals[0]}\n`),
 * }
 */
import { basename, dirname, join } from 'node:path'
import type { ParseArgsConfig } from 'node:util'
import { isNiftiName } from '../eval/cases.ts'

export type OptionSpec = NonNullable<ParseArgsConfig['options']>

export interface Parsed {
  readonly values: Record<string, string | boolean | (string | boolean)[] | undefined>
  readonly positionals: readonly string[]
}

export interface CommandIO {
  /** Results: stdout. */
  readonly out: (s: string) => void
  /** Progress and logs: stderr. */
  readonly err: (s: string) => void
  readonly isTTY: boolean
}

export interface Command {
  readonly name: string
  readonly summary: string
  readonly usage: string
  /** Extra help lines: one per option, plus notes. */
  readonly details?: string
  readonly options: OptionSpec
  readonly run: (args: Parsed, io: CommandIO) => Promise<void>
}

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 | 130,
  ) {
    super(message)
  }
}

/** Wrong flags or arguments: exit 2. */
export const usageError = (message: string): CliError => new CliError(message, 2)
/** A file or value the user gave cannot be used: exit 2. */
export const inputError = (message: string): CliError => new CliError(message, 2)
/** The run itself failed: exit 1. */
export const runFailed = (message: string): CliError => new CliError(message, 1)
/** Ctrl-C stopped the run (what to do next in `message`): exit 130, as a shell gives SIGINT. */
export const interrupted = (message: string): CliError => new CliError(message, 130)

/** Ctrl-C before a fresh run's first step: nothing was written that a rerun would refuse. */
export const stoppedBeforeFirstStep = (): CliError =>
  interrupted(
    'stopped before the first step; nothing was trained: run the same command again to start',
  )

/**
 * Runs `work` with a first Ctrl-C asking it to stop (it polls `stopRequested`, e.g. after
 * each training step, and returns what it has) rather than ending the process. The handler
 * is removed once it fires, so a second Ctrl-C gets the default: the process ends at once.
 * Before `stepping()` says the first step has begun, nothing is saved on a stop: the notice
 * says so.
 */
export const stoppableByCtrlC = async <A>(
  io: CommandIO,
  work: (stopRequested: () => boolean) => Promise<A>,
  stepping: () => boolean = () => true,
): Promise<A> => {
  let stop = false
  const onSigint = () => {
    stop = true
    io.err(
      stepping()
        ? '\nstopping after this step (Ctrl-C again to quit without a checkpoint)\n'
        : '\nstopping before the first step (Ctrl-C again to quit at once)\n',
    )
  }
  process.once('SIGINT', onSigint)
  try {
    return await work(() => stop)
  } finally {
    process.off('SIGINT', onSigint)
  }
}

/** A string option, or a usage error naming it when absent. */
export const requireString = (args: Parsed, name: string): string => {
  const v = args.values[name]
  if (typeof v !== 'string' || v === '') throw usageError(`missing --${name}`)
  return v
}

export const optionalString = (args: Parsed, name: string): string | undefined => {
  const v = args.values[name]
  return typeof v === 'string' ? v : undefined
}

/** `--name`, one of `allowed` or absent; another value is bad usage naming them all. */
export const choice = <T extends string>(
  args: Parsed,
  name: string,
  allowed: readonly T[],
): T | undefined => {
  const v = optionalString(args, name)
  if (v !== undefined && !(allowed as readonly string[]).includes(v))
    throw usageError(`--${name} must be one of ${allowed.join(', ')}, got '${v}'`)
  return v as T | undefined
}

/** A required path option naming a NIfTI file (.nii or .nii.gz), else a usage error. */
export const niftiPath = (args: Parsed, name: string): string => {
  const path = requireString(args, name)
  if (!isNiftiName(path)) throw usageError(`--${name} must end in .nii or .nii.gz, got '${path}'`)
  return path
}

/** Where a model goes: the ONNX file, its card beside it, and the name both default to. */
export interface ModelOutput {
  readonly onnx: string
  /** MODEL.json for MODEL.onnx: the server and `maco predict` look for the card there. */
  readonly card: string
  /** The file name without .onnx. */
  readonly name: string
}

/** The `-o` of a command that writes a model: an .onnx path, else a usage error. */
export const modelOutput = (out: string): ModelOutput => {
  if (!/\.onnx$/i.test(out)) throw usageError(`-o must name an .onnx file, got ${out}`)
  const name = basename(out).replace(/\.onnx$/i, '')
  return { onnx: out, card: join(dirname(out), `${name}.json`), name }
}

/** A numeric option (with a default), rejected with its name when not a finite number. */
export const numberOption = (
  args: Parsed,
  name: string,
  fallback: number,
  check: (n: number) => boolean = () => true,
): number => {
  const v = args.values[name]
  if (v === undefined) return fallback
  const n = typeof v === 'string' ? Number(v) : NaN
  if (!Number.isFinite(n) || !check(n))
    throw usageError(`--${name} must be a valid number, got '${String(v)}'`)
  return n
}

/** An integer option of at least `min`, or undefined when absent; a usage error otherwise. */
export const optionalInteger = (args: Parsed, name: string, min: number): number | undefined =>
  args.values[name] === undefined
    ? undefined
    : numberOption(args, name, 0, (n) => Number.isInteger(n) && n >= min)

export const flag = (args: Parsed, name: string): boolean => args.values[name] === true

/** Exactly `n` positional arguments, else a usage error that says what was expected. */
export const positionals = (args: Parsed, n: number, what: string): readonly string[] => {
  if (args.positionals.length !== n)
    throw usageError(`expected ${what}, got ${args.positionals.length} argument(s)`)
  return args.positionals
}
