/**
 * A run's epochs fitted into a wall-clock budget. The `cpu` recipe promises a training in
 * 90 minutes on two cores, and two-core machines differ: the same MaCo step measured 0.56 s
 * on one and 1.5 s on another. With a budget the run keeps as many of its epochs as fit, the
 * cost of an epoch timed on the machine before the first step (`probeEpochCost`); the count
 * is fixed then, so the learning-rate schedule spans the run that happens and config.json
 * records it (`--epochs N` repeats the run anywhere). Should the machine turn slower after the
 * probe (another job, a loaded CI), the trainer's deadline (trainer.ts) stops the run in time
 * after an epoch, resumable, instead of overrunning.
 *
 * @example
 * fitEpochs({ budgetSeconds: 5400, spentSeconds: 40, perEpoch: 172, most: 50,
 *   cost: { stepSeconds: 1.5, validationSeconds: 30 } })
 * // Right(17): 17 epochs of 288 s fit in 95% of the 5360 s left
 */
import * as E from 'fp-ts/lib/Either.js'
import type { EpochCost } from './trainer.ts'

/**
 * The share of the time left that epochs may fill: the rest covers checkpoints, the plot,
 * and steps slower than the probe's.
 */
export const BUDGET_FILL = 0.95

export interface BudgetFit {
  /** The budget, seconds from the start of the command. */
  readonly budgetSeconds: number
  /** Seconds already spent (data preparation, the probe). */
  readonly spentSeconds: number
  readonly perEpoch: number
  readonly cost: EpochCost
  /** The config's epochs: a budget never adds epochs. */
  readonly most: number
}

export const epochSeconds = (cost: EpochCost, perEpoch: number): number =>
  perEpoch * cost.stepSeconds + cost.validationSeconds

/** A budget of minutes as the user gave it, at most two decimals: '90 min', '0.67 min'. */
export const budgetText = (minutes: number): string => `${Number(minutes.toFixed(2))} min`

/** Seconds as the budget's lines give them: '40 s', '2.1 min'. */
export const duration = (seconds: number): string =>
  seconds < 60 ? `${seconds.toFixed(0)} s` : `${(seconds / 60).toFixed(1)} min`

/** The epochs that fit (at most `most`); Left, in one line, when not even one does. */
export const fitEpochs = (f: BudgetFit): E.Either<string, number> => {
  const epoch = epochSeconds(f.cost, f.perEpoch)
  const fit = Math.floor(((f.budgetSeconds - f.spentSeconds) * BUDGET_FILL) / epoch)
  return fit >= 1
    ? E.right(Math.min(f.most, fit))
    : E.left(
        `a budget of ${duration(f.budgetSeconds)} fits no epoch here: ${duration(f.spentSeconds)} ` +
          `went to loading the data and timing, and an epoch takes about ${duration(epoch)} ` +
          `(${f.perEpoch} steps of ${f.cost.stepSeconds.toFixed(2)} s and a validation of ` +
          `${f.cost.validationSeconds.toFixed(1)} s); give a larger --budget, or --budget 0 for none`,
      )
}
