/** The registry of `maco` subcommands, in the order `maco --help` lists them. */
import type { Command } from './command.ts'
import { cpl } from './cpl.ts'
import { evaluate } from './eval.ts'
import { figureCommand } from './figure.ts'
import { inspect } from './inspect.ts'
import { predict } from './predict.ts'
import { serveCommand } from './serve.ts'
import { preprocess } from './preprocess.ts'
import { bench } from './bench.ts'
import { trainCommand } from './train.ts'
import { exportCommand } from './export.ts'
import { demo } from './demo.ts'
import { finetuneCommand } from './finetune.ts'

export const commands: readonly Command[] = [
  inspect,
  preprocess,
  cpl,
  evaluate,
  figureCommand,
  predict,
  serveCommand,
  bench,
  trainCommand,
  exportCommand,
  finetuneCommand,
  demo,
]
