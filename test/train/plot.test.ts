import t from 'tap'
import { niceAxis, trainingPlot } from '../../src/train/plot.ts'

t.test('axes get round ticks that cover the data', async (t) => {
  t.same(niceAxis(0, 1), { min: 0, max: 1, ticks: [0, 0.2, 0.4, 0.6, 0.8, 1] })
  t.same(niceAxis(0, 480), { min: 0, max: 500, ticks: [0, 100, 200, 300, 400, 500] })
  const a = niceAxis(0.013, 2.7)
  t.ok(a.min <= 0.013 && a.max >= 2.7 && a.ticks.length >= 4 && a.ticks.length <= 8)
  t.same(niceAxis(3, 3).ticks.length > 1, true, 'a single value still gets an axis')
})

/** The points of the n-th polyline, in SVG coordinates. */
const polyline = (svg: string, n: number): [number, number][] =>
  [...svg.matchAll(/<polyline [^>]*points="([^"]*)"/g)][n][1]
    .split(' ')
    .map((p) => p.split(',').map(Number) as [number, number])

t.test('the loss falls from the top of its panel, the Dice rises', async (t) => {
  const svg = trainingPlot({
    steps: [10, 20, 30, 40].map((step) => ({ step, loss: 2 / (step / 10) })),
    epochs: [
      { epoch: 1, step: 20, loss: 1.5, valDice: 0.2 },
      { epoch: 2, step: 40, loss: 0.6, valDice: 0.7 },
    ],
  })
  t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"[^]*<\/svg>\n$/)
  const steps = polyline(svg, 0)
  t.equal(steps.length, 4)
  t.ok(
    steps.every((p, i) => i === 0 || (p[0] > steps[i - 1][0] && p[1] > steps[i - 1][1])),
    'right and down',
  )
  const dice = polyline(svg, 2)
  t.equal(dice.length, 2)
  t.ok(dice[1][1] < dice[0][1], 'higher Dice is drawn higher')
  // Dice axis is 0..1 over the panel's 170 px: 0.2 sits 34 px above the bottom at y = 200
  t.ok(Math.abs(dice[0][1] - (200 - 0.2 * 170)) < 0.06)
})

t.test('an empty or one-epoch history still draws', async (t) => {
  t.match(trainingPlot({ steps: [], epochs: [] }), /<\/svg>/)
  const one = trainingPlot({ steps: [], epochs: [{ epoch: 1, step: 5, loss: NaN, valDice: 0.5 }] })
  t.match(one, /<circle /)
  t.notMatch(one, /NaN/)
})

t.test('a run without validation: the loss panel alone, no Dice curve', async (t) => {
  const svg = trainingPlot({
    steps: [
      { step: 10, loss: 1.2 },
      { step: 30, loss: 0.9 },
    ],
    epochs: [
      { epoch: 1, step: 20, loss: 1.1 },
      { epoch: 2, step: 40, loss: 0.7 },
    ],
  })
  t.match(svg, /^<svg [^>]*width="380" height="240"/, 'one panel wide')
  t.notMatch(svg, /Validation Dice|val Dice/)
  t.equal(polyline(svg, 1).length, 2, 'the epoch means are still drawn')
  t.equal([...svg.matchAll(/<polyline /g)].length, 2)
})
