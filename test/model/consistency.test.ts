// Self-consistency of the engine's forward pass: the same tokens give the same
// logits however they are split into calls and chunks, wherever the reference
// semantics say they must.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { SalaModel, type SelectionRecord } from '../../engine/model/sala-model.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';
import { maxAbsDiff, tokens as randomTokens } from '../helpers/logits.js';

const VOCAB = 512;
// Reordering fp32 sums (chunk boundaries, recurrent vs chunked lightning) moves logits by ~1e-7.
const TOLERANCE = 1e-5;

let model: SalaModel;
before(async () => {
  model = await SalaModel.load(FIXTURE, { device: 'cpu' });
});

const tokens = (count: number, seed: number): number[] => randomTokens(count, seed, VOCAB);

/** prefill(N) then M single-token decode steps; returns the M decode logits rows. */
async function prefillThenDecode(ids: number[], n: number): Promise<Float32Array> {
  const sequence = model.newSequence();
  await model.forward(sequence, ids.slice(0, n));
  const rows = new Float32Array((ids.length - n) * VOCAB);
  for (let i = n; i < ids.length; i++) rows.set(await model.forward(sequence, [ids[i]]), (i - n) * VOCAB);
  return rows;
}

// dense_len is 512 in the fixture config.
for (const [n, m, side] of [
  [100, 12, 'dense'],
  [700, 12, 'sparse'],
  [1100, 30, 'sparse (a new block opens)'],
] as const) {
  test(`prefill(${n}) + decode ${m} equals prefill(${n + m}) on the ${side} side of dense_len`, async () => {
    const ids = tokens(n + m, n);
    const oneShot = await model.forward(model.newSequence(), ids, { logits: m });
    const stepwise = await prefillThenDecode(ids, n);
    assert.ok(maxAbsDiff(stepwise, oneShot) <= TOLERANCE, `max diff ${maxAbsDiff(stepwise, oneShot)}`);
  });
}

test('across dense_len, prefill + decode legitimately differs from one prefill (the reference switches per call)', async () => {
  const ids = tokens(520, 7);
  const oneShot = await model.forward(model.newSequence(), ids, { logits: 10 });
  const stepwise = await prefillThenDecode(ids, 510);
  // The first two decode steps are dense in the stepwise run but sparse in the one-shot run.
  assert.ok(maxAbsDiff(stepwise.subarray(0, 2 * VOCAB), oneShot.subarray(0, 2 * VOCAB)) > 1e-4);
});

// 1103 ≡ 15 (mod 16) and 1343 ≡ 63 (mod 64) exercise the kernel's bottom-right visibility rule.
for (const length of [1000, 1103, 1343]) {
  test(`chunked prefill of ${length} tokens equals one-shot prefill: logits and every block selection`, async () => {
    const ids = tokens(length, length);
    const collect = (records: SelectionRecord[]) => (r: SelectionRecord) => records.push(r);
    const oneShotRecords: SelectionRecord[] = [];
    const oneShot = await model.forward(model.newSequence(), ids, { logits: 'all', chunkSize: length, onSelection: collect(oneShotRecords) });
    for (const chunkSize of [1, 63, 64, 200, 512]) {
      if (chunkSize === 1 && length !== 1000) continue; // token-by-token prefill is slow; once is enough
      const records: SelectionRecord[] = [];
      const chunked = await model.forward(model.newSequence(), ids, { logits: 'all', chunkSize, onSelection: collect(records) });
      assert.ok(maxAbsDiff(chunked, oneShot) <= TOLERANCE, `chunk ${chunkSize}: max diff ${maxAbsDiff(chunked, oneShot)}`);
      for (const layer of [0, 3]) {
        const whole = oneShotRecords.find((r) => r.layer === layer);
        assert.ok(whole);
        const parts = records.filter((r) => r.layer === layer);
        const joined = new Int32Array(whole.selected.length);
        for (const part of parts)
          for (let h = 0; h < 2; h++) joined.set(part.selected.subarray(h * part.queries * part.k, (h + 1) * part.queries * part.k), (h * length + part.firstPosition) * whole.k);
        assert.deepEqual(joined, whole.selected, `chunk ${chunkSize}, layer ${layer}`);
      }
    }
  });
}

test('the kernel visibility rule is what one-shot prefill uses: at L ≡ 15 (mod 16) it differs from the absolute rule', async () => {
  // Same tokens, but the one-shot prefill knows its length; a continuation call (past > 0) uses the absolute rule.
  const ids = tokens(1103, 3);
  const oneShot: SelectionRecord[] = [];
  await model.forward(model.newSequence(), ids, { logits: 'last', onSelection: (r) => oneShot.push(r) });
  const split: SelectionRecord[] = [];
  const sequence = model.newSequence();
  await model.forward(sequence, ids.slice(0, 1));
  await model.forward(sequence, ids.slice(1), { onSelection: (r) => split.push(r) });
  let differing = 0;
  for (const whole of oneShot) {
    const part = split.find((r) => r.layer === whole.layer);
    assert.ok(part && part.firstPosition === 1 && part.k === whole.k);
    for (let h = 0; h < 2; h++)
      for (let p = 1; p < 1103; p++)
        for (let j = 0; j < whole.k; j++) if (whole.selected[(h * 1103 + p) * whole.k + j] !== part.selected[(h * 1102 + p - 1) * part.k + j]) differing++;
  }
  assert.ok(differing > 0, 'expected at least one block choice to differ when one fewer fine window is visible');
});

test('a forked sequence continues independently of its parent', async () => {
  const ids = tokens(600, 11);
  const parent = model.newSequence();
  await model.forward(parent, ids);
  const child = parent.clone();
  const a = await model.forward(child, [1, 2, 3]);
  const b = await model.forward(parent, [1, 2, 3]);
  assert.equal(maxAbsDiff(a, b), 0);
  await model.forward(child, [4]);
  assert.equal(parent.length, 603);
  assert.equal(child.length, 604);
});

test('bad input: empty prompts and out-of-vocabulary ids are rejected with a clear error, state untouched', async () => {
  const sequence = model.newSequence();
  await assert.rejects(model.forward(sequence, []), /prompt is empty/);
  await assert.rejects(model.forward(sequence, [1, VOCAB]), /token id 512 at index 1 is outside the vocabulary \[0, 512\)/);
  await assert.rejects(model.forward(sequence, [1, -1]), /outside the vocabulary/);
  await assert.rejects(model.forward(sequence, [1.5]), /outside the vocabulary/);
  assert.equal(sequence.length, 0);
});
