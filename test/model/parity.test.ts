// Numerical parity with the public MiniCPM-SALA modeling code: the golden outputs
// in test/fixtures/sala-tiny-a (its README says how they were produced).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { SalaModel, type SelectionRecord } from '../../engine/model/sala-model.js';
import { readNpy } from '../helpers/npy.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';

/** The fixtures README's suggested acceptance for a float32 engine. */
const LOGIT_TOLERANCE = 1e-5;
const VOCAB = 512;

let model: SalaModel;
before(async () => {
  model = await SalaModel.load(FIXTURE, { device: 'cpu' });
});

function load(name: string) {
  return readNpy(path.join(FIXTURE, `${name}.npy`));
}

function maxAbsDiff(actual: Float32Array, expected: Float32Array | Int32Array): number {
  assert.equal(actual.length, expected.length, 'length');
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  return worst;
}

/** Arranges selection records of one call as [sparse layer, kv head, position, k] (the fixture layout). */
function selectionsByLayer(records: SelectionRecord[], layers: number[], positions: number, k: number, firstPosition = 0): Int32Array {
  const out = new Int32Array(layers.length * 2 * positions * k).fill(-9);
  for (const r of records) {
    const li = layers.indexOf(r.layer);
    assert.equal(r.k, k);
    for (let h = 0; h < 2; h++)
      for (let t = 0; t < r.queries; t++)
        for (let j = 0; j < k; j++) out[((li * 2 + h) * positions + r.firstPosition - firstPosition + t) * k + j] = r.selected[(h * r.queries + t) * k + j];
  }
  return out;
}

/** Greedy decode after a prompt, one token per call, as the fixtures do. */
async function decodeScenario(name: 'short' | 'long' | 'cross', chunkSize?: number) {
  const prompt = Array.from(load(`${name}_prompt_ids`).data);
  const sequence = model.newSequence();
  const last = await model.forward(sequence, prompt, { chunkSize });
  const ids = [argmax(last)];
  const logits: Float32Array[] = [];
  const selections: (Int32Array | null)[] = [];
  for (let step = 0; step < 8; step++) {
    const records: SelectionRecord[] = [];
    const row = await model.forward(sequence, [ids[step]], { onSelection: (r) => records.push(r) });
    logits.push(row);
    selections.push(records.length ? selectionsByLayer(records, [0, 3], 1, records[0].k, sequence.length - 1) : null);
    ids.push(argmax(row));
  }
  return { ids: ids.slice(0, 8), logits, selections, last };
}

/** Greedy pick, lowest id on ties (as torch.argmax). */
function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function stack(rows: Float32Array[]): Float32Array {
  const out = new Float32Array(rows.length * VOCAB);
  rows.forEach((r, i) => out.set(r, i * VOCAB));
  return out;
}

test('short prompt (dense path): logits at every position match the reference', async (t) => {
  const ids = Array.from(load('short_prompt_ids').data);
  const logits = await model.forward(model.newSequence(), ids, { logits: 'all' });
  t.diagnostic(
    `max |Δlogit| vs fp32 reference ${maxAbsDiff(logits, load('short_logits').data).toExponential(2)}, vs fp64 ${maxAbsDiff(logits, load('short_logits_f64ref').data).toExponential(2)}`,
  );
  assert.ok(maxAbsDiff(logits, load('short_logits').data) <= LOGIT_TOLERANCE);
  assert.ok(maxAbsDiff(logits, load('short_logits_f64ref').data) <= LOGIT_TOLERANCE);
});

test('long prompt (InfLLM-V2 sparse path): last 64 logits and every prefill block selection match', async (t) => {
  const ids = Array.from(load('long_prompt_ids').data);
  const records: SelectionRecord[] = [];
  const logits = await model.forward(model.newSequence(), ids, { logits: 64, onSelection: (r) => records.push(r) });
  t.diagnostic(
    `max |Δlogit| vs fp32 reference ${maxAbsDiff(logits, load('long_logits_last64').data).toExponential(2)}, vs fp64 ${maxAbsDiff(logits, load('long_logits_last64_f64ref').data).toExponential(2)}`,
  );
  assert.ok(maxAbsDiff(logits, load('long_logits_last64').data) <= LOGIT_TOLERANCE);
  assert.ok(maxAbsDiff(logits, load('long_logits_last64_f64ref').data) <= LOGIT_TOLERANCE);
  const expected = load('long_prefill_topk');
  assert.deepEqual(expected.shape, [2, 2, 1531, 5]);
  assert.deepEqual(selectionsByLayer(records, [0, 3], 1531, 5), expected.data);
});

for (const name of ['short', 'long', 'cross'] as const) {
  test(`${name} scenario: greedy decode ids exactly, decode logits within tolerance`, async (t) => {
    const result = await decodeScenario(name);
    assert.deepEqual(result.ids, Array.from(load(`${name}_decode_ids`).data));
    const logits = stack(result.logits);
    t.diagnostic(
      `decode max |Δlogit| vs fp32 reference ${maxAbsDiff(logits, load(`${name}_decode_logits`).data).toExponential(2)}, vs fp64 ${maxAbsDiff(logits, load(`${name}_decode_logits_f64ref`).data).toExponential(2)}`,
    );
    assert.ok(maxAbsDiff(logits, load(`${name}_decode_logits`).data) <= LOGIT_TOLERANCE);
    assert.ok(maxAbsDiff(logits, load(`${name}_decode_logits_f64ref`).data) <= LOGIT_TOLERANCE);
    if (name === 'cross') assert.ok(maxAbsDiff(result.last, load('cross_logits_last').data) <= LOGIT_TOLERANCE);
    if (name !== 'short') {
      // [step, sparse layer, kv head, k]; −2 marks a dense step in the cross scenario.
      const expected = load(`${name}_decode_topk`).data;
      for (let step = 0; step < 8; step++) {
        const want = Array.from(expected.subarray(step * 20, step * 20 + 20));
        const got = result.selections[step];
        if (want.every((b) => b === -2)) assert.equal(got, null, `step ${step} should take the dense path`);
        else assert.deepEqual(got && Array.from(got), want, `step ${step} block selection`);
      }
    }
  });
}
