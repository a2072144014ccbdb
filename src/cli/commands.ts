/** The registry of `maco` subcommands, in the order `maco --help` lists them. */
import type { Command } from './command.ts'

export const commands: readonly Command[] = []
