// Small helpers the model tests share: reproducible token ids and logit comparison.
import assert from 'node:assert/strict';

/** `count` pseudo-random ids in [0, vocab) from a linear congruential generator seeded with `seed`. */
export function tokens(count: number, seed: number, vocab: number): number[] {
  let state = seed;
  return Array.from({ length: count }, () => {
    state = (state * 1103515245 + 12345) >>> 0;
    return state % vocab;
  });
}

/** The largest |a[i] − b[i]|; the arrays must have the same length. */
export function maxAbsDiff(a: Float32Array, b: Float32Array | Int32Array): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}
