// The forward plan decides a call once for every executor: dense or sparse, the prompt's
// visibility rule, k, the chunks and the logit rows. First the plan itself against the
// reference's rules (docs/spec/minicpm-sala.md), then both executors (the host path and
// the resident decoder, on the CPU provider) carrying it out.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { derivedSizes, loadConfig, parseConfig, type DerivedSizes, type SalaConfig } from '../../engine/model/config.js';
import { ModelInputError as PlanInputError, forwardPlan, selectionRows, type ForwardPlan, type PlanOptions } from '../../engine/model/forward-plan.js';
import { SELECTION_SCORE_BYTES } from '../../engine/model/resident-decoder.js';
import { SALA_9B_SHAPE } from '../../bench/random-model.js';
import { ModelInputError, SalaModel, type SelectionRecord } from '../../engine/model/sala-model.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';
import { maxAbsDiff, tokens as randomTokens } from '../helpers/logits.js';

// The fixture: vocab 512, dense_len 512, 64-token blocks, topk 4 + 1 local block = 5, kernels 32/16.
const VOCAB = 512;
const TOLERANCE = 1e-5;

let config: SalaConfig;
let sizes: DerivedSizes;
let model: SalaModel;
before(async () => {
  config = await loadConfig(FIXTURE);
  sizes = derivedSizes(config);
  model = await SalaModel.load(FIXTURE, { device: 'cpu' });
});

const tokens = (count: number, seed: number): number[] => randomTokens(count, seed, VOCAB);

function plan(past: number, count: number, options: PlanOptions = {}): ForwardPlan {
  return forwardPlan(config, sizes, past, tokens(count, count), options);
}

test('the fixture is what these tests assume', () => {
  assert.deepEqual([config.vocabSize, config.sparse.denseLen, config.sparse.blockSize, sizes.topkTotal], [VOCAB, 512, 64, 5]);
});

test('dense below dense_len, sparse from it (inclusive), decided by the kv length of the whole call whatever the chunk size', () => {
  for (const chunkSize of [1, 7, 64, 511, 512, 4096]) {
    for (const [past, count, sparse] of [
      [0, 511, false],
      [0, 512, true],
      [100, 411, false],
      [100, 412, true],
      [510, 1, false],
      [511, 1, true],
      [0, 1300, true],
    ] as const) {
      const p = plan(past, count, { chunkSize });
      const what = `past ${past}, ${count} new, chunks of ${chunkSize}`;
      assert.equal(p.callLength, past + count, what);
      assert.equal(p.sparse, sparse, what);
      // Every chunk follows the call, including the early ones whose own kv length is below dense_len.
      assert.ok(
        p.chunks.every((chunk) => (chunk.selection !== undefined) === sparse),
        what,
      );
      assert.equal(plan(past, count, { chunkSize, attention: 'dense' }).sparse, false, `${what}, forced dense`);
    }
  }
});

test('the bottom-right visibility rule holds only for an all-new prefill of more than one token', () => {
  assert.equal(plan(0, 700).promptLength, 700);
  assert.equal(plan(0, 700, { chunkSize: 7 }).promptLength, 700);
  assert.equal(plan(0, 1).promptLength, undefined);
  assert.equal(plan(1, 699).promptLength, undefined);
  assert.equal(plan(699, 1).promptLength, undefined);
  // 527 ≡ 15 (mod 16): under the rule the last query sees one fine key fewer (30 of 31) than the same position in a continuation.
  const lastFine = (p: ForwardPlan) => p.chunks.at(-1)!.selection!.fineVisible.at(-1);
  assert.equal(lastFine(plan(0, 527)), 30);
  assert.equal(lastFine(plan(1, 526)), 31);
  assert.equal(plan(0, 527).chunks[0].selection!.fineCount, 31);
});

test('k is min(topk + local, blocks of the whole call); each chunk selects rawK = min(k, its blocks)', () => {
  const p = plan(0, 600, { chunkSize: 64 });
  assert.equal(p.k, 5);
  assert.deepEqual(
    p.chunks.map((chunk) => [chunk.blocks, chunk.selection!.k, chunk.selection!.rawK]),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((blocks) => [blocks, 5, Math.min(5, blocks)]),
  );
  // A short call has fewer blocks than topk + local (dense_len lowered so that it is sparse).
  const lowDense = { ...config, sparse: { ...config.sparse, denseLen: 64 } };
  const short = forwardPlan(lowDense, sizes, 0, tokens(130, 1), { chunkSize: 50 });
  assert.equal(short.k, 3);
  assert.deepEqual(
    short.chunks.map((chunk) => chunk.selection!.rawK),
    [1, 2, 3],
  );
  // Pool pads: one −inf in front, then up to block_size / kernel_stride = 4 rows per block.
  const last = p.chunks.at(-1)!.selection!;
  assert.equal(last.fineCount, Math.floor((600 - 32) / 16) + 1);
  assert.deepEqual(last.poolPads, [0, 0, 1, 0, 0, 4 * 10 - last.fineCount]);
  // Before any complete window the graph still gets one masked row.
  const first = p.chunks[0].selection!;
  assert.equal(first.fineCount, 3);
  assert.equal(first.coarseCount, 0);
  assert.deepEqual(first.poolPads, [0, 0, 1, 0, 0, 4 - 3]);
  assert.ok(first.coarseVisible.every((n) => n === 0));
});

test('chunks cover the ids in order from the past length, at most chunkSize each (default 512)', () => {
  const ids = tokens(1300, 2);
  const p = forwardPlan(config, sizes, 40, ids);
  assert.deepEqual(
    p.chunks.map((chunk) => [chunk.start, chunk.firstPosition, chunk.ids.length, chunk.blocks]),
    [
      [0, 40, 512, 9],
      [512, 552, 512, 17],
      [1024, 1064, 276, 21],
    ],
  );
  assert.deepEqual(
    p.chunks.flatMap((chunk) => chunk.ids),
    ids,
  );
  assert.deepEqual(
    plan(0, 10, { chunkSize: 0 }).chunks.map((chunk) => chunk.ids.length),
    Array(10).fill(1),
  );
  for (const chunk of p.chunks) assert.equal(chunk.selection!.fineVisible.length, chunk.ids.length);
});

test("logit rows: every new position for 'all', the last for 'last' (the default), the last N (clamped to 1…count) for N", () => {
  const rows = (p: ForwardPlan) =>
    p.chunks.flatMap((chunk) => (chunk.logitsFrom === undefined ? [] : Array.from({ length: chunk.ids.length - chunk.logitsFrom }, (_, i) => chunk.start + chunk.logitsFrom! + i)));
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
  const all = plan(0, 1300, { logits: 'all' });
  assert.equal(all.logitRows, 1300);
  assert.deepEqual(rows(all), range(0, 1300));
  assert.deepEqual(rows(plan(0, 1300)), [1299]);
  const last600 = plan(0, 1300, { logits: 600 });
  assert.equal(last600.logitRows, 600);
  assert.deepEqual(
    last600.chunks.map((chunk) => chunk.logitsFrom),
    [undefined, 188, 0],
  );
  assert.deepEqual(rows(last600), range(700, 1300));
  assert.equal(plan(0, 5, { logits: 50 }).logitRows, 5);
  assert.equal(plan(0, 5, { logits: 0 }).logitRows, 1);
});

test('bad ids are one ModelInputError, whichever rule they break', () => {
  assert.equal(PlanInputError, ModelInputError, 'sala-model.ts re-exports the plan’s error');
  const refuses = (ids: number[], message: RegExp) =>
    assert.throws(
      () => forwardPlan(config, sizes, 0, ids),
      (err) => err instanceof ModelInputError && message.test(err.message),
    );
  refuses([], /^no tokens to run: the prompt is empty$/);
  refuses([1, 1.5], /^token id 1\.5 at index 1 is outside the vocabulary \[0, 512\)$/);
  refuses([-1], /^token id -1 at index 0 is outside the vocabulary \[0, 512\)$/);
  refuses([3, 4, VOCAB], /^token id 512 at index 2 is outside the vocabulary \[0, 512\)$/);
  refuses([Number.NaN], /^token id NaN at index 0 is outside the vocabulary/);
  assert.doesNotThrow(() => forwardPlan(config, sizes, 0, [0, VOCAB - 1]));
});

test('the host path carries out the plan: chunks of 1, 7 and 512 give the same logits, and selection records follow the plan', async () => {
  const ids = tokens(600, 5);
  const results = new Map<number, Float32Array>();
  for (const chunkSize of [1, 7, 512]) {
    const records: SelectionRecord[] = [];
    results.set(chunkSize, await model.forward(model.newSequence(), ids, { chunkSize, logits: 'all', onSelection: (r) => records.push(r) }));
    const p = forwardPlan(config, sizes, 0, ids, { chunkSize });
    const expected = p.chunks.flatMap((chunk) => sizes.sparseLayers.map((layer) => [layer, chunk.firstPosition, chunk.ids.length, p.k]));
    assert.deepEqual(
      records.map((r) => [r.layer, r.firstPosition, r.queries, r.k]),
      expected,
      `chunks of ${chunkSize}`,
    );
  }
  for (const chunkSize of [1, 7]) {
    // Chunk boundaries only reorder fp32 sums (~1e-7).
    const diff = maxAbsDiff(results.get(chunkSize)!, results.get(512)!);
    assert.ok(diff <= TOLERANCE, `chunks of ${chunkSize}: max |Δlogit| ${diff}`);
  }
});

test('the resident decoder carries out the same plan: its prefill in chunks of 7 and 512 gives the host path’s last logits', async () => {
  const ids = tokens(600, 6);
  const host = await model.forward(model.newSequence(), ids);
  for (const placement of ['offload', 'device'] as const) {
    for (const chunkSize of [7, 512]) {
      const decoder = await model.residentDecoder(model.newSequence(), { placement, poolBlocks: 16, maxTokens: 700 });
      const last = await decoder.prefill(ids, { chunkSize });
      await decoder.close();
      const diff = maxAbsDiff(last, host);
      assert.ok(diff <= TOLERANCE, `${placement}, chunks of ${chunkSize}: max |Δlogit| ${diff}`);
    }
  }
});

test("a selection budget shortens a sparse call's chunks to what the whole call's keys allow, and changes nothing else", () => {
  const perRow = config.numAttentionHeads * 36 * 4; // 600 tokens: (600 − 32) / 16 + 1 = 36 fine keys
  assert.equal(selectionRows(config, 600, perRow * 5 + 1), 5);
  assert.equal(selectionRows(config, 600, 1), 1, 'at least one row');
  const whole = plan(0, 600, { chunkSize: 512 });
  const capped = plan(0, 600, { chunkSize: 512, selectionBytes: perRow * 5 });
  assert.deepEqual(
    capped.chunks.map((c) => c.ids.length),
    [...new Array<number>(120).fill(5)],
  );
  // Per position, the same selection feeds as in the uncapped plan.
  const byPosition = (p: ForwardPlan) =>
    p.chunks.flatMap((c) => c.ids.map((_, i) => [c.firstPosition + i, c.selection!.k, c.selection!.fineVisible[i], c.selection!.coarseVisible[i]]));
  assert.deepEqual(byPosition(capped), byPosition(whole));
  // A dense call is not capped: its attention is bounded by dense_len already.
  assert.deepEqual(
    plan(0, 300, { chunkSize: 512, selectionBytes: 1 }).chunks.map((c) => c.ids.length),
    [300],
  );
});

test("the device prefill's default selection budget keeps the measured 2,048-token chunks after 128K and bounds them at 1M (the 9B shape)", () => {
  const nineB = parseConfig(SALA_9B_SHAPE, 'MiniCPM-SALA-9B shape');
  assert.ok(selectionRows(nineB, 131072 + 2048, SELECTION_SCORE_BYTES) >= 2048);
  const atOneM = selectionRows(nineB, 1048576 + 2048, SELECTION_SCORE_BYTES);
  assert.ok(atOneM >= 256 && atOneM < 512, `${atOneM} rows at 1M`);
});

test("a call may select more blocks than the config (topk), the prefill's budget otherwise; a bad one is refused", () => {
  assert.equal(plan(0, 1024).k, sizes.topkTotal);
  assert.equal(plan(0, 1024, { topk: 10 }).k, 10 + sizes.localBlocks);
  assert.equal(plan(0, 600, { topk: 100 }).k, 10, 'never more than the blocks of the call');
  for (const topk of [0, 1.5, -1]) assert.throws(() => plan(0, 600, { topk }), PlanInputError);
});

test("the resident decoder under a tight selection budget (chunks of a few rows) gives the host path's last logits", async () => {
  const ids = tokens(600, 7);
  const host = await model.forward(model.newSequence(), ids);
  const decoder = await model.residentDecoder(model.newSequence(), { placement: 'device', maxTokens: 700, selectionBytes: config.numAttentionHeads * 37 * 4 * 3 });
  const last = await decoder.prefill(ids, { chunkSize: 512 });
  // 200 chunks of 3 rows, each sparse layer attending at least once per chunk.
  assert.ok(decoder.snapshot().prefillAttendCalls >= 200 * sizes.sparseLayers.length, `${decoder.snapshot().prefillAttendCalls} attention calls`);
  await decoder.close();
  const diff = maxAbsDiff(last, host);
  assert.ok(diff <= TOLERANCE, `max |Δlogit| ${diff}`);
});

test('both executors refuse bad ids with the same error and message, and leave the sequence as it was', async () => {
  const caught = async (run: () => Promise<unknown>): Promise<Error> => {
    try {
      await run();
    } catch (err) {
      assert.ok(err instanceof Error);
      return err;
    }
    assert.fail('expected a refusal');
  };
  const sequence = model.newSequence();
  await model.forward(sequence, [5, 6, 7]);
  const other = model.newSequence();
  await model.forward(other, [5, 6, 7]);
  const decoder = await model.residentDecoder(other, { placement: 'device', maxTokens: 32 });
  for (const ids of [[], [1, VOCAB], [1, 1.5], [-1]]) {
    const host = await caught(() => model.forward(sequence, ids));
    const prefill = await caught(() => decoder.prefill(ids));
    assert.ok(host instanceof ModelInputError && prefill instanceof ModelInputError, `ids ${JSON.stringify(ids)}`);
    assert.equal(prefill.message, host.message);
  }
  for (const id of [VOCAB, 1.5, -1]) {
    const host = await caught(() => model.forward(sequence, [id]));
    const step = await caught(() => decoder.step(id));
    assert.ok(step instanceof ModelInputError);
    assert.equal(step.message, host.message);
  }
  assert.equal(sequence.length, 3);
  assert.equal(other.length, 3);
  await decoder.close();
});
