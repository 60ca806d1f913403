import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { argmax, Sampler, validateSampling, type SamplingOptions } from '../../engine/model/sampling.js';

function softmax(logits: readonly number[], temperature = 1): number[] {
  const max = Math.max(...logits);
  const weights = logits.map((l) => Math.exp((l - max) / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => w / total);
}

function frequencies(sampler: Sampler, logits: Float32Array, draws: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let n = 0; n < draws; n++) counts[sampler.next(logits)]++;
  return counts.map((c) => c / draws);
}

/** Probability tolerance for `draws` samples: 4.5 standard deviations of the worst case p = 0.5. */
function tolerance(draws: number): number {
  return 4.5 * Math.sqrt(0.25 / draws);
}

function assertClose(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((a, i) => assert.ok(Math.abs(a - expected[i]) <= tol, `${what}: id ${i} drawn ${a}, expected ${expected[i]} ± ${tol}`));
}

/** Deterministic pseudo-normal logits for large-vocab tests. */
function randomLogits(size: number, scale: number, seed: number): Float32Array {
  let state = seed >>> 0;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 0.5) / 2 ** 32;
  };
  const logits = new Float32Array(size);
  for (let i = 0; i < size; i++) logits[i] = scale * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return logits;
}

/** Reference nucleus by a full sort: ids most likely first (ties: lower id), cut where mass ≥ topP. */
function referenceNucleus(logits: Float32Array, temperature: number, topP: number, topK = 0): Set<number> {
  const probs = softmax([...logits], temperature);
  let order = [...probs.keys()].sort((a, b) => logits[b] - logits[a] || a - b);
  if (topK > 0) order = order.slice(0, topK);
  const mass = order.reduce((sum, id) => sum + probs[id], 0);
  const kept = new Set<number>();
  let cumulative = 0;
  for (const id of order) {
    kept.add(id);
    cumulative += probs[id];
    if (cumulative >= topP * mass) break;
  }
  return kept;
}

describe('argmax', () => {
  test('returns the largest logit, the lowest id on ties', () => {
    assert.equal(argmax(Float32Array.of(0.1, 3, -1, 2.5)), 1);
    assert.equal(argmax(Float32Array.of(-1, 3, 3, 0, 3)), 1);
    assert.equal(argmax(Float32Array.of(-Infinity, -Infinity)), 0);
    assert.equal(argmax(Float32Array.of(-5)), 0);
  });

  test('rejects NaN and empty logits', () => {
    assert.throws(() => argmax(Float32Array.of(1, NaN, 2)), /NaN/);
    assert.throws(() => argmax(Float32Array.of(NaN)), /NaN/);
    assert.throws(() => argmax(new Float32Array(0)), /empty/);
  });
});

describe('validateSampling', () => {
  test('fills defaults: greedy, nucleus and top-k off', () => {
    assert.deepEqual(validateSampling({}), { temperature: 0, topP: 1, topK: 0 });
    assert.deepEqual(validateSampling({ temperature: 0.7, topP: 0.9, topK: 40, seed: 3 }), { temperature: 0.7, topP: 0.9, topK: 40, seed: 3 });
  });

  test('rejects out-of-range options, naming the option and its range', () => {
    const bad: [Partial<SamplingOptions>, RegExp][] = [
      [{ temperature: -0.1 }, /temperature.*≥ 0/],
      [{ temperature: NaN }, /temperature.*≥ 0/],
      [{ temperature: Infinity }, /temperature.*finite/],
      [{ topP: 0 }, /topP.*\(0, 1\]/],
      [{ topP: 1.01 }, /topP.*\(0, 1\]/],
      [{ topP: NaN }, /topP.*\(0, 1\]/],
      [{ topK: -1 }, /topK.*integer ≥ 0/],
      [{ topK: 2.5 }, /topK.*integer ≥ 0/],
      [{ seed: 1.5 }, /seed.*integer/],
    ];
    for (const [options, message] of bad) {
      assert.throws(
        () => validateSampling(options),
        (err: Error) => err instanceof RangeError && message.test(err.message),
        JSON.stringify(options),
      );
    }
    assert.throws(() => new Sampler({ temperature: 1, topP: 2 }), RangeError);
  });
});

describe('Sampler', () => {
  const logits = Float32Array.of(2, 1, 0.5, 0, -1);

  test('is greedy at temperature 0, ties to the lowest id', () => {
    const sampler = new Sampler({ temperature: 0, topP: 1 });
    assert.equal(sampler.next(logits), 0);
    assert.equal(sampler.next(Float32Array.of(0, 7, 7, 1)), 1);
  });

  test('behaves greedily at a very small temperature', () => {
    const sampler = new Sampler({ temperature: 1e-6, topP: 1, seed: 1 });
    const nearTie = Float32Array.of(1, 1.001, 0.5, 1.0005);
    for (let n = 0; n < 500; n++) assert.equal(sampler.next(nearTie), 1);
  });

  test('repeats its draws for the same seed, and not for another', () => {
    const run = (seed: number) => {
      const sampler = new Sampler({ temperature: 1, topP: 0.95, topK: 50, seed });
      const vocab = randomLogits(1000, 2, 9);
      return Array.from({ length: 300 }, () => sampler.next(vocab));
    };
    assert.deepEqual(run(1234), run(1234));
    assert.notDeepEqual(run(1234), run(1235));
    assert.notDeepEqual(run(1), run(1 + 2 ** 32), 'seeds that differ above 32 bits');
  });

  test('draws in proportion to softmax(logits / T)', () => {
    const draws = 20_000;
    for (const temperature of [1, 0.7, 2]) {
      const freqs = frequencies(new Sampler({ temperature, topP: 1, seed: 17 }), logits, draws);
      assertClose(freqs, softmax([...logits], temperature), tolerance(draws), `T=${temperature}`);
    }
  });

  test('top-k keeps the k most likely tokens, renormalised', () => {
    const draws = 20_000;
    const freqs = frequencies(new Sampler({ temperature: 1, topP: 1, topK: 2, seed: 5 }), logits, draws);
    const [p0, p1] = softmax([2, 1]);
    assertClose(freqs, [p0, p1, 0, 0, 0], tolerance(draws), 'topK=2');
    assert.equal(freqs[2] + freqs[3] + freqs[4], 0);
    // k ≥ V is the same as no top-k.
    const all = frequencies(new Sampler({ temperature: 1, topP: 1, topK: 99, seed: 5 }), logits, draws);
    assertClose(all, softmax([...logits]), tolerance(draws), 'topK ≥ V');
  });

  test('top-p never leaves the nucleus and draws within it in proportion', () => {
    const probs = [0.4, 0.3, 0.2, 0.1];
    const known = Float32Array.from(probs, Math.log);
    const draws = 10_000;
    const half = frequencies(new Sampler({ temperature: 1, topP: 0.5, seed: 8 }), known, draws);
    assert.equal(half[2] + half[3], 0, 'ids 2 and 3 are outside the 0.5 nucleus');
    assertClose(half, [0.4 / 0.7, 0.3 / 0.7, 0, 0], tolerance(draws), 'topP=0.5');
    const small = frequencies(new Sampler({ temperature: 1, topP: 0.3, seed: 8 }), known, 1000);
    assert.deepEqual(small, [1, 0, 0, 0], 'a nucleus smaller than the top token keeps the top token');
    const wide = frequencies(new Sampler({ temperature: 1, topP: 0.95, seed: 8 }), known, draws);
    assertClose(wide, [0.4, 0.3, 0.2, 0.1], tolerance(draws), 'topP=0.95 keeps all four');
  });

  test('matches a full-sort reference nucleus on a 73,448-token vocab', () => {
    const vocab = randomLogits(73_448, 3, 21);
    for (const [options, draws] of [
      [{ temperature: 1, topP: 0.9 }, 150],
      [{ temperature: 0.8, topP: 0.5, topK: 40 }, 150],
      [{ temperature: 1.5, topP: 1, topK: 7 }, 200],
      [{ temperature: 4, topP: 0.99 }, 60],
    ] as const) {
      const nucleus = referenceNucleus(vocab, options.temperature, options.topP, 'topK' in options ? options.topK : 0);
      const sampler = new Sampler({ ...options, seed: 99 });
      const drawn = new Set<number>();
      for (let n = 0; n < draws; n++) drawn.add(sampler.next(vocab));
      for (const id of drawn) assert.ok(nucleus.has(id), `${JSON.stringify(options)}: drew ${id}, outside the nucleus of ${nucleus.size}`);
      if (nucleus.size <= 7) assert.equal(drawn.size, nucleus.size, `${JSON.stringify(options)}: every nucleus token is reachable`);
    }
  });

  test('breaks likelihood ties by lower id at the top-k and top-p boundaries', () => {
    const drawnSet = (options: SamplingOptions, logits: Float32Array, draws = 400) => {
      const sampler = new Sampler({ ...options, seed: 4 });
      const drawn = new Set<number>();
      for (let n = 0; n < draws; n++) drawn.add(sampler.next(logits));
      return [...drawn].sort((a, b) => a - b);
    };
    // Three tokens tie at 0.3; the 0.5 nucleus needs two of them: the two lowest ids.
    const tiedNucleus = Float32Array.from([0.1, 0.3, 0.3, 0.3], Math.log);
    assert.deepEqual(drawnSet({ temperature: 1, topP: 0.5 }, tiedNucleus), [1, 2]);
    // One token above the tie, one slot left for four tied tokens.
    assert.deepEqual(drawnSet({ temperature: 1, topP: 1, topK: 2 }, Float32Array.of(1, 1, 1, 5, 1), 2000), [0, 3]);
    assert.deepEqual(drawnSet({ temperature: 1, topP: 1, topK: 3 }, new Float32Array(8)), [0, 1, 2]);
    assert.deepEqual(drawnSet({ temperature: 1, topP: 0.25 }, new Float32Array(8)), [0, 1]);
    // A large flat vocab: the nucleus is exactly the lowest quarter of the ids.
    const flat = drawnSet({ temperature: 1, topP: 0.25 }, new Float32Array(10_000), 500);
    assert.ok(flat[flat.length - 1] < 2500, `drew ${flat[flat.length - 1]}`);
  });

  test('never draws a -Infinity logit; +Infinity takes all the mass', () => {
    const masked = Float32Array.of(-Infinity, 0, -Infinity, 0);
    const sampler = new Sampler({ temperature: 1, topP: 0.9, seed: 2 });
    for (let n = 0; n < 500; n++) assert.ok([1, 3].includes(sampler.next(masked)));
    assert.equal(sampler.next(Float32Array.of(0, Infinity, 5)), 1);
    assert.throws(() => sampler.next(Float32Array.of(-Infinity, -Infinity)), /-Infinity/);
  });

  test('rejects logits containing NaN', () => {
    for (const options of [
      { temperature: 0, topP: 1 },
      { temperature: 1, topP: 0.9, seed: 1 },
      { temperature: 1, topP: 1, topK: 2 },
    ]) {
      assert.throws(() => new Sampler(options).next(Float32Array.of(0, 1, NaN, 2)), /NaN/);
    }
  });
});
