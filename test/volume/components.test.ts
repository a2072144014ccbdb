import t from 'tap'
import { keepLargestComponents } from '../../src/volume/components.ts'
import { seeded } from '../../src/util/rng.ts'

/**
 * Brute force: union every pair of same-valued voxels at Chebyshev distance 1 (26-connected),
 * then keep each value's largest set. Quadratic, so only for small grids.
 */
const bruteForce = (labels: Uint8Array, dims: readonly number[], values: number[]) => {
  const [nx, ny, nz] = dims
  const parent = labels.map((_, i) => i) as unknown as Int32Array
  const find = (i: number): number => (parent[i] === i ? i : (parent[i] = find(parent[i])))
  const at = (i: number) => [i % nx, Math.floor(i / nx) % ny, Math.floor(i / (nx * ny))]
  for (let i = 0; i < labels.length; i++)
    for (let j = i + 1; j < labels.length; j++) {
      if (labels[i] !== labels[j]) continue
      const [a, b] = [at(i), at(j)]
      if (a.every((v, k) => Math.abs(v - b[k]) <= 1)) parent[find(i)] = find(j)
    }
  const out = Uint8Array.from(labels)
  for (const value of values) {
    const size = new Map<number, number>()
    labels.forEach((v, i) => v === value && size.set(find(i), (size.get(find(i)) ?? 0) + 1))
    if (size.size < 2) continue
    const best = Math.max(...size.values())
    // Ties: the component met first in voxel order wins, as documented.
    const first = labels.findIndex((v, i) => v === value && size.get(find(i)) === best)
    labels.forEach((v, i) => v === value && find(i) !== find(first) && (out[i] = 0))
  }
  void nz
  return out
}

t.test('matches brute-force 26-connected labelling on random sparse label maps', async (t) => {
  for (let trial = 0; trial < 40; trial++) {
    const rng = seeded(7, 'components', trial)
    const dims = [3 + rng.int(6), 3 + rng.int(6), 1 + rng.int(4)]
    const n = dims[0] * dims[1] * dims[2]
    const density = 0.15 + 0.3 * rng.uniform()
    const labels = Uint8Array.from({ length: n }, () =>
      rng.uniform() < density ? 1 + rng.int(3) : 0,
    )
    t.same(
      keepLargestComponents(labels, dims, [1, 2, 3]),
      bruteForce(labels, dims, [1, 2, 3]),
      `trial ${trial} ${dims}`,
    )
  }
})

t.test('a blob far from the heart goes; the heart stays whole', async (t) => {
  const dims = [12, 10, 3]
  const labels = new Uint8Array(12 * 10 * 3)
  const set = (x: number, y: number, z: number, v: number) => (labels[(z * 10 + y) * 12 + x] = v)
  for (let z = 0; z < 3; z++)
    for (let y = 2; y < 6; y++) for (let x = 2; x < 6; x++) set(x, y, z, 3)
  set(10, 9, 0, 3) // a stray LV voxel in a corner
  set(11, 0, 2, 2) // the only MYO voxel: a single component, kept
  // Diagonal across slices is still connected (26-neighbours).
  set(6, 6, 2, 3)
  const out = keepLargestComponents(labels, dims, [1, 2, 3])
  t.equal(out[(0 * 10 + 9) * 12 + 10], 0, 'stray voxel removed')
  t.equal(out[(2 * 10 + 6) * 12 + 6], 3, 'diagonal neighbour kept')
  t.equal(out[(2 * 10 + 0) * 12 + 11], 2, 'single-component class untouched')
  t.equal(out.filter((v) => v === 3).length, 4 * 4 * 3 + 1)
  t.equal(labels[(0 * 10 + 9) * 12 + 10], 3, 'the input is not modified')
})
