import t from 'tap'
import { formatSeconds } from '../../src/util/duration.ts'

t.test('short durations keep a decimal, longer ones whole seconds', async (t) => {
  t.equal(formatSeconds(0), '0.0s')
  t.equal(formatSeconds(4.25), '4.3s')
  t.equal(formatSeconds(9.94), '9.9s')
  t.equal(formatSeconds(9.96), '10s', 'rounds into the next unit, not to "10.0s"')
  t.equal(formatSeconds(42.4), '42s')
})

t.test('minutes and seconds, then hours and minutes, rounded to what is shown', async (t) => {
  t.equal(formatSeconds(59.6), '1m00s')
  t.equal(formatSeconds(222.2), '3m42s')
  t.equal(formatSeconds(119.7), '2m00s', 'not 1m60s')
  t.equal(formatSeconds(3599.6), '1h00m')
  t.equal(formatSeconds(5400), '1h30m')
  t.equal(formatSeconds(7170), '2h00m', '1h59.5m rounds up to the hour')
  t.equal(formatSeconds(90_000), '25h00m')
})

t.test('a duration not yet known is a question mark', async (t) => {
  t.equal(formatSeconds(Number.NaN), '?')
  t.equal(formatSeconds(Number.POSITIVE_INFINITY), '?')
})
