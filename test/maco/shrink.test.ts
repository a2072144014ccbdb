import t from 'tap'
import { scribbleComponents, shrinkScribble } from '../../src/maco/shrink.ts'
import { seeded } from '../../src/util/rng.ts'

const UNLABELLED = 4
const [W, H] = [64, 48]

/** Scribbles drawn the way annotators draw them: a class-0 loop, a thick stroke, a curve, a dot. */
const drawScribble = (): Uint8Array => {
  const s = new Uint8Array(W * H).fill(UNLABELLED)
  const put = (x: number, y: number, c: number) => {
    const [xi, yi] = [Math.round(x), Math.round(y)]
    if (xi >= 0 && yi >= 0 && xi < W && yi < H) s[yi * W + xi] = c
  }
  for (let k = 0; k < 400; k++) {
    const th = (2 * Math.PI * k) / 400
    put(32 + 25 * Math.cos(th), 24 + 18 * Math.sin(th), 0)
  }
  for (let x = 20; x <= 40; x++) for (let dy = 0; dy < 3; dy++) put(x, 20 + dy, 1)
  for (let k = 0; k <= 30; k++) put(22 + k * 0.6, 30 + 4 * Math.sin(k / 5), 2)
  put(45, 28, 1)
  put(46, 29, 1) // a diagonal pair: 8-connected, one component
  return s
}

/** Connected pieces (8-neighbours, same value) of the labelled pixels, by depth-first search. */
const pieces = (s: ArrayLike<number>, keep: (i: number) => boolean = () => true): number[][] => {
  const label = new Int32Array(s.length).fill(-1)
  const out: number[][] = []
  for (let i = 0; i < s.length; i++) {
    if (s[i] === UNLABELLED || label[i] >= 0 || !keep(i)) continue
    const piece: number[] = []
    const stack = [i]
    label[i] = out.length
    while (stack.length > 0) {
      const j = stack.pop()!
      piece.push(j)
      const [x, y] = [j % W, Math.floor(j / W)]
      for (let dy = -1; dy <= 1; dy++)
        for (let dx = -1; dx <= 1; dx++) {
          const [nx, ny] = [x + dx, y + dy]
          const n = ny * W + nx
          if (nx >= 0 && ny >= 0 && nx < W && ny < H && label[n] < 0 && s[n] === s[i] && keep(n)) {
            label[n] = out.length
            stack.push(n)
          }
        }
    }
    out.push(piece)
  }
  return out
}

/** Every output pixel is its input pixel or unlabelled. */
const onlyRemoves = (before: ArrayLike<number>, after: ArrayLike<number>) =>
  Array.from(after).every((v, i) => v === before[i] || v === UNLABELLED)

const survivors = (component: number[], after: ArrayLike<number>) =>
  component.filter((i) => after[i] !== UNLABELLED)

/** Whether the given pixels form a single 8-connected piece (or none). */
const connected = (pixels: number[], after: ArrayLike<number>) => {
  if (pixels.length === 0) return true
  const set = new Set(pixels)
  return pieces(after, (i) => set.has(i)).length === 1
}

const scribble = drawScribble()
const components = pieces(scribble)

t.test('components are the 8-connected pieces of each class', async (t) => {
  t.equal(components.length, 4)
  const found = scribbleComponents(scribble, W, H, UNLABELLED).map((c) =>
    [...c].sort((a, b) => a - b),
  )
  t.same(
    found.sort((a, b) => a[0] - b[0]),
    components.map((c) => [...c].sort((a, b) => a - b)).sort((a, b) => a[0] - b[0]),
  )
})

t.test(
  'component scope: each component loses round(ratio x size) and stays one piece',
  async (t) => {
    for (const ratio of [0.1, 0.25, 0.5, 0.7, 0.9])
      for (let seed = 0; seed < 4; seed++) {
        const out = shrinkScribble(
          scribble,
          W,
          H,
          { ratio, scope: 'component' },
          seeded(seed, ratio),
        )
        t.ok(onlyRemoves(scribble, out), 'never adds pixels or changes a class')
        for (const c of components) {
          const kept = survivors(c, out)
          t.equal(
            c.length - kept.length,
            Math.round(ratio * c.length),
            `ratio ${ratio}, ${c.length} px`,
          )
          t.ok(
            connected(kept, out),
            `ratio ${ratio}: the rest of a ${c.length}-pixel component is one piece`,
          )
        }
      }
  },
)

t.test(
  'slice scope (the paper): whole components go first, one is cut, the rest stays',
  async (t) => {
    const total = components.reduce((n, c) => n + c.length, 0)
    let partial = 0
    for (const ratio of [0.1, 0.2, 0.3, 0.4, 0.5, 0.8])
      for (let seed = 0; seed < 6; seed++) {
        const out = shrinkScribble(scribble, W, H, { ratio }, seeded(seed, 'slice', ratio))
        t.ok(onlyRemoves(scribble, out))
        const kept = components.map((c) => survivors(c, out))
        t.equal(
          total - kept.reduce((n, k) => n + k.length, 0),
          Math.round(ratio * total),
          `ratio ${ratio}`,
        )
        const cut = kept.filter((k, i) => k.length > 0 && k.length < components[i].length)
        t.ok(cut.length <= 1, 'at most one component partly removed')
        partial += cut.length
        t.ok(
          kept.every((k) => connected(k, out)),
          'what is left of each component is one piece',
        )
      }
    t.ok(partial > 20, `a component was cut in ${partial} of 36 cases`)
  },
)

t.test('ratio 0 is the identity and ratio 1 removes every scribble pixel', async (t) => {
  for (const scope of ['slice', 'component'] as const) {
    t.same(shrinkScribble(scribble, W, H, { ratio: 0, scope }, seeded(1)), scribble)
    t.same(
      shrinkScribble(scribble, W, H, { ratio: 1, scope }, seeded(1)),
      new Uint8Array(W * H).fill(UNLABELLED),
    )
  }
})

t.test('a shortened stroke keeps a run from one of its ends', async (t) => {
  const line = new Int16Array(W * H).fill(UNLABELLED)
  for (let x = 10; x < 30; x++) line[5 * W + x] = 3
  for (let seed = 0; seed < 8; seed++) {
    const out = shrinkScribble(line, W, H, { ratio: 0.4, scope: 'component' }, seeded(seed))
    t.ok(out instanceof Int16Array, 'same array type as the input')
    const xs = [...out.keys()].filter((i) => out[i] === 3).map((i) => i % W)
    const prefix = Array.from({ length: 12 }, (_, k) => 10 + k)
    const suffix = Array.from({ length: 12 }, (_, k) => 18 + k)
    t.ok(
      [prefix, suffix].some((run) => run.join() === xs.join()),
      `kept x ${xs[0]}..${xs[xs.length - 1]}`,
    )
  }
})

t.test('the same seed gives the same shrink', async (t) => {
  const a = shrinkScribble(scribble, W, H, { ratio: 0.35 }, seeded(3, 'shrink'))
  t.same(shrinkScribble(scribble, W, H, { ratio: 0.35 }, seeded(3, 'shrink')), a)
  t.not(a, scribble, 'a copy, the input untouched')
  t.same(scribble, drawScribble())
})

t.test('bad ratios and sizes are refused', async (t) => {
  t.throws(
    () => shrinkScribble(scribble, W, H, { ratio: 1.2 }, seeded(0)),
    /ratio must be in \[0, 1\]/,
  )
  t.throws(() => shrinkScribble(scribble, W, H + 1, { ratio: 0.2 }, seeded(0)), /expected 64 x 49/)
})
