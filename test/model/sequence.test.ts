// Tombstones and rollback: the operations the workspace context is built on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SalaModel, type SelectionRecord } from '../../engine/model/sala-model.js';
import { randomModel, SMALL_20M } from '../../bench/random-model.js';

/** A tiny model whose every layer is sparse (NoPE): with no recurrent state, a dead span is exactly absent. */
function allSparseModel(denseLen: number) {
  return randomModel(
    {
      ...SMALL_20M,
      vocab_size: 300,
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 3,
      mixer_types: ['minicpm4', 'minicpm4', 'minicpm4'],
      num_attention_heads: 4,
      num_key_value_heads: 1,
      head_dim: 16,
      lightning_nh: 4,
      lightning_nkv: 4,
      lightning_head_dim: 16,
      sparse_config: { ...SMALL_20M.sparse_config, window_size: 64, topk: 8, dense_len: denseLen },
    },
    5,
  );
}

function ids(count: number, seed: number): number[] {
  return Array.from({ length: count }, (_, i) => 3 + ((i * 7919 + seed * 104729) % 290));
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

test('a tombstoned span is exactly absent from attention (all-sparse model, dense path)', async () => {
  const { config, weights } = allSparseModel(100_000);
  const model = await SalaModel.create(config, weights);
  const [a, x, q] = [ids(150, 1), ids(90, 2), ids(20, 3)];
  const withDead = model.newSequence();
  await model.forward(withDead, [...a, ...x]);
  withDead.markDead(a.length, a.length + x.length);
  const answer = await model.forward(withDead, q, { logits: 'all' });
  const without = await model.forward(model.newSequence(), [...a, ...q], { logits: q.length });
  assert.ok(maxAbsDiff(answer, without) < 1e-5, `max diff ${maxAbsDiff(answer, without)}`);
  // …and it does matter when it is alive.
  const alive = model.newSequence();
  await model.forward(alive, [...a, ...x]);
  assert.ok(maxAbsDiff(await model.forward(alive, q, { logits: 'all' }), without) > 1e-3);
});

test('block selection never picks a fully tombstoned block unless the block is forced (init or local)', async () => {
  const { config, weights } = allSparseModel(256);
  const model = await SalaModel.create(config, weights);
  const sequence = model.newSequence();
  await model.forward(sequence, ids(1200, 4));
  sequence.markDead(130, 900); // blocks 3..13 fully dead
  const records: SelectionRecord[] = [];
  for (let step = 0; step < 4; step++) await model.forward(sequence, [7 + step], { onSelection: (r) => records.push(r) });
  assert.ok(records.length > 0);
  for (const r of records) for (const block of r.selected) assert.ok(block < 3 || block > 13, `selected dead block ${block}`);
  // Without tombstones, the same steps do pick some of those blocks (so the check above can fail).
  const fresh = model.newSequence();
  await model.forward(fresh, ids(1200, 4));
  const picked: number[] = [];
  for (let step = 0; step < 4; step++) await model.forward(fresh, [7 + step], { onSelection: (r) => picked.push(...r.selected) });
  assert.ok(picked.some((b) => b >= 3 && b <= 13));
});

test('rollback to a checkpoint then a new continuation equals a fresh run of the same tokens', async () => {
  const { config, weights } = randomModel(
    {
      ...SMALL_20M,
      vocab_size: 300,
      hidden_size: 64,
      intermediate_size: 128,
      num_attention_heads: 4,
      head_dim: 16,
      lightning_nh: 4,
      lightning_nkv: 4,
      lightning_head_dim: 16,
      sparse_config: { ...SMALL_20M.sparse_config, dense_len: 256, window_size: 64, topk: 2 },
    },
    9,
  );
  const model = await SalaModel.create(config, weights);
  const [context, question, other] = [ids(700, 5), ids(40, 6), ids(30, 7)];
  const sequence = model.newSequence();
  await model.forward(sequence, context);
  const mark = sequence.checkpoint();
  await model.forward(sequence, question);
  for (let i = 0; i < 5; i++) await model.forward(sequence, [11 + i]);
  sequence.markDead(650, 720);
  sequence.rollback(mark);
  assert.equal(sequence.length, 700);
  assert.deepEqual(sequence.deadRanges, [[650, 700]]);
  sequence.rollback({ ...mark, length: 700 });
  const resumed = await model.forward(sequence, other, { logits: 'all' });
  const reference = model.newSequence();
  await model.forward(reference, context);
  reference.markDead(650, 700);
  const expected = await model.forward(reference, other, { logits: 'all' });
  assert.ok(maxAbsDiff(resumed, expected) < 1e-5, `max diff ${maxAbsDiff(resumed, expected)}`);
  assert.throws(() => sequence.rollback({ ...mark, length: 10_000 }), /cannot roll back/);
  assert.throws(() => sequence.markDead(5, 100_000), RangeError);
});
