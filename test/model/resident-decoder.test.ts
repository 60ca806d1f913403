// The device-resident decode path (KV offloaded to host memory with a block pool,
// or every block resident) must compute exactly what the host path computes: the
// reference's fixtures, through real onnxruntime sessions (the CPU provider here;
// the same graphs run on WebGPU on a GPU: docs/benchmarks/offload-webgpu.md).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { SalaModel } from '../../engine/model/sala-model.js';
import { argmax } from '../../engine/model/sampling.js';
import type { ResidentOptions } from '../../engine/model/resident-decoder.js';
import { readNpy } from '../helpers/npy.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';
import { maxAbsDiff } from '../helpers/logits.js';
import { greedySteps } from '../helpers/resident.js';

const LOGIT_TOLERANCE = 1e-5;

let model: SalaModel;
before(async () => {
  model = await SalaModel.load(FIXTURE, { device: 'cpu' });
});

function load(name: string) {
  return readNpy(path.join(FIXTURE, `${name}.npy`));
}

/** Greedy steps through a resident decoder after the scenario's prompt; `room` × the tokens of the run are its capacity. */
async function decodeResident(name: 'short' | 'long' | 'cross', options: Omit<ResidentOptions, 'maxTokens'>, room = 1) {
  const prompt = Array.from(load(`${name}_prompt_ids`).data);
  const sequence = model.newSequence();
  const last = await model.forward(sequence, prompt);
  const decoder = await model.residentDecoder(sequence, { ...options, maxTokens: room * (prompt.length + 16) });
  return { ...(await greedySteps(decoder, last)), sequence };
}

for (const name of ['short', 'long', 'cross'] as const) {
  for (const placement of ['offload', 'device'] as const) {
    test(`${name} scenario, KV ${placement === 'offload' ? 'offloaded with a minimal block pool' : 'all on the device'}: the reference's decode ids and logits`, async (t) => {
      // The fixture selects 5 blocks per head and dense_len is 8 blocks: 8 slots force evictions on the long prompt.
      const result = await decodeResident(name, { placement, poolBlocks: 8 });
      assert.deepEqual(result.ids, Array.from(load(`${name}_decode_ids`).data));
      const diff = maxAbsDiff(result.logits, load(`${name}_decode_logits`).data);
      t.diagnostic(`max |Δlogit| ${diff.toExponential(2)}; hits ${result.stats.hits}, misses ${result.stats.misses}, block bytes up ${result.stats.blockBytes}`);
      assert.ok(diff <= LOGIT_TOLERANCE, `max |Δlogit| ${diff}`);
      if (placement === 'device') assert.equal(result.stats.blockBytes, 0, 'nothing but the new rows moves when every block is resident');
      // Below dense_len, every block resident in a decoder sized to the run: the store is read in place, against the reference.
      assert.equal(result.stats.denseStoreSteps > 0, placement === 'device' && name !== 'long', `${result.stats.denseStoreSteps} dense steps over the store`);
      // Past dense_len (the long prompts), every block resident: each sparse layer's selection feeds its attention on the device.
      const selecting = name !== 'short' && placement === 'device';
      assert.equal(result.stats.selectionsOnDevice > 0, selecting, `${result.stats.selectionsOnDevice} selections on the device`);
    });
  }
}

test('the offload pool reuses resident blocks and uploads only misses; a larger pool misses less', async () => {
  const small = await decodeResident('long', { placement: 'offload', poolBlocks: 8 });
  const large = await decodeResident('long', { placement: 'offload', poolBlocks: 64 });
  assert.ok(small.stats.hits > 0 && small.stats.misses > 0);
  assert.ok(large.stats.misses <= small.stats.misses, `${large.stats.misses} ≤ ${small.stats.misses}`);
  // Every miss uploads one block of K and V per head: blockSize · hs · 4 bytes · 2.
  assert.equal(small.stats.blockBytes, small.stats.misses * 64 * 64 * 4 * 2);
  assert.ok(small.stats.deviceKvBytes < large.stats.deviceKvBytes);
});

test('dense attention on the resident path equals the sparse selection where dense_len is not reached, and differs past it', async () => {
  const shortSparse = await decodeResident('short', { placement: 'device' });
  const shortDense = await decodeResident('short', { placement: 'device', attention: 'dense' });
  assert.ok(maxAbsDiff(shortDense.logits, shortSparse.logits) <= 1e-6);
  const longDense = await decodeResident('long', { placement: 'device', attention: 'dense' });
  const longSparse = await decodeResident('long', { placement: 'device' });
  assert.ok(maxAbsDiff(longDense.logits, longSparse.logits) > 1e-4, 'the long prompt selects a strict subset of blocks');
  // Sized to the run the dense steps read the store in place; with room for 4× more they gather the past blocks: the same logits.
  assert.equal(longDense.stats.denseStoreSteps, longDense.stats.steps * 2, 'both sparse layers, every step');
  const roomy = await decodeResident('long', { placement: 'device', attention: 'dense' }, 4);
  assert.equal(roomy.stats.denseStoreSteps, 0);
  assert.deepEqual(roomy.ids, longDense.ids);
  assert.ok(maxAbsDiff(roomy.logits, longDense.logits) <= LOGIT_TOLERANCE, `${maxAbsDiff(roomy.logits, longDense.logits)}`);
  await assert.rejects(model.residentDecoder(model.newSequence(), { placement: 'offload', attention: 'dense', maxTokens: 64 }), /placement "device"/);
});

test('closing hands the state back: the host path continues exactly where the resident decoder stopped', async () => {
  const resident = await decodeResident('long', { placement: 'offload', poolBlocks: 8 });
  const viaHost = await model.forward(resident.sequence, [resident.next]);
  // The same sequence decoded on the host path all the way.
  const prompt = Array.from(load('long_prompt_ids').data);
  const sequence = model.newSequence();
  let row = await model.forward(sequence, prompt);
  for (let step = 0; step < 9; step++) row = await model.forward(sequence, [argmax(row)]);
  assert.ok(maxAbsDiff(viaHost, row) <= LOGIT_TOLERANCE);
});

for (const placement of ['offload', 'device'] as const) {
  test(`tombstoned tokens are masked on the resident path exactly as on the host path (KV ${placement})`, async () => {
    const prompt = Array.from(load('long_prompt_ids').data);
    const host = model.newSequence();
    const resident = model.newSequence();
    let hostRow = await model.forward(host, prompt);
    await model.forward(resident, prompt);
    for (const sequence of [host, resident]) {
      sequence.markDead(70, 300); // most of blocks 1–4: blocks 2 and 3 wholly dead
      sequence.markDead(prompt.length - 20, prompt.length - 5); // inside the tail block
    }
    const decoder = await model.residentDecoder(resident, { placement, poolBlocks: placement === 'offload' ? 8 : undefined, maxTokens: prompt.length + 16 });
    for (let step = 0; step < 6; step++) {
      const id = argmax(hostRow);
      const row = await decoder.step(id);
      hostRow = await model.forward(host, [id]);
      assert.ok(maxAbsDiff(row, hostRow) <= LOGIT_TOLERANCE, `step ${step}`);
    }
    assert.equal(decoder.snapshot().selectionsOnDevice > 0, placement === 'device');
    await decoder.close();
  });
}

test("a selection fed to the attention on the device gives the split runs' logits, across a block boundary and a new tombstone", async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const decode = async (split: boolean) => {
    const sequence = model.newSequence();
    let row = await model.forward(sequence, prompt);
    sequence.markDead(130, 200); // block 2 wholly dead, block 3 in part
    const decoder = await model.residentDecoder(sequence, { placement: 'device', sparseStep: split ? 'split' : 'fused', maxTokens: prompt.length + 80 });
    const rows: Float32Array[] = [];
    // Enough steps to cross into a new block (the masks are uploaded again there) and a tombstone made mid-decode.
    for (let step = 0; step < 70; step++) {
      if (step === 30) sequence.markDead(300, 340);
      row = await decoder.step(argmax(row));
      rows.push(row);
    }
    const stats = decoder.snapshot();
    await decoder.close();
    return { rows, stats };
  };
  const fused = await decode(false);
  const split = await decode(true);
  assert.equal(split.stats.selectionsOnDevice, 0);
  assert.ok(fused.stats.selectionsOnDevice >= 70, `${fused.stats.selectionsOnDevice}`);
  const worst = Math.max(...fused.rows.map((row, i) => maxAbsDiff(row, split.rows[i])));
  assert.ok(worst <= 1e-5, `max |Δlogit| ${worst}`);
});

test('a host KV store that spilled to disk gives the same logits, on the host path and on the resident path', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const plain = model.newSequence();
  // ~6 blocks of the fixture's K/V per layer in memory: most of the prompt's blocks go to the spill file.
  const blockBytes = 2 * model.config.numKeyValueHeads * model.config.sparse.blockSize * model.sizes.sparseHeadDim * 4;
  model.setHostKvBudget(6 * blockBytes * model.sizes.sparseLayers.length);
  const spilled = model.newSequence();
  model.setHostKvBudget(Infinity);
  const spilledCache = [...spilled.sparse.values()][0];
  let plainRow = await model.forward(plain, prompt, { chunkSize: 128 });
  let spilledRow = await model.forward(spilled, prompt, { chunkSize: 128 });
  assert.ok(spilledCache.spilledBlocks > 4, `${spilledCache.spilledBlocks} blocks spilled`);
  assert.equal(maxAbsDiff(plainRow, spilledRow), 0, 'prefill logits identical');
  for (let step = 0; step < 4; step++) {
    const id = argmax(plainRow);
    plainRow = await model.forward(plain, [id]);
    spilledRow = await model.forward(spilled, [id]);
    assert.equal(maxAbsDiff(plainRow, spilledRow), 0, `host decode step ${step}`);
  }
  const decoder = await model.residentDecoder(spilled, { placement: 'offload', poolBlocks: 8, maxTokens: spilled.length + 8 });
  for (let step = 0; step < 4; step++) {
    const id = argmax(plainRow);
    const row = await decoder.step(id);
    plainRow = await model.forward(plain, [id]);
    assert.ok(maxAbsDiff(row, plainRow) <= LOGIT_TOLERANCE, `resident step ${step} over a spilled store`);
  }
  await decoder.close();
});

test('generate() decodes through the resident decoder when asked (the default on a GPU): the same tokens as the host path', async () => {
  const { generate } = await import('../../engine/model/generation.js');
  const { byteLevelFallback } = await import('../../engine/model/tokenizer.js');
  const tokenizer = byteLevelFallback(512);
  const prompt = Array.from(load('long_prompt_ids').data);
  const run = async (resident: boolean) => {
    const stream = generate(model, tokenizer, prompt, { maxTokens: 12, temperature: 0, resident: resident ? { poolBlocks: 8 } : false });
    let next = await stream.next();
    while (!next.done) next = await stream.next();
    return next.value;
  };
  const host = await run(false);
  const resident = await run(true);
  assert.equal(host.tokens.length, 12);
  assert.deepEqual(resident.tokens, host.tokens);
});

test('a device-memory budget sizes the pool, and one too small for a step is refused with the minimum', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const sequence = model.newSequence();
  await model.forward(sequence, prompt);
  // Fixture: 2 sparse layers × 2 KV heads × 64 × 64 floats × 4 bytes × (K, V) = 128 KiB per slot; 8 slots needed.
  const decoder = await model.residentDecoder(sequence, { placement: 'offload', poolBytes: 10 * 128 * 1024, maxTokens: prompt.length + 4 });
  const pools = decoder.snapshot().deviceKvBytes;
  await decoder.step(5);
  await decoder.close();
  const ten = await model.residentDecoder(sequence, { placement: 'offload', poolBlocks: 10, maxTokens: prompt.length + 4 });
  assert.equal(ten.snapshot().deviceKvBytes, pools, 'the budget bought 10 slots per head');
  await ten.close();
  await assert.rejects(
    model.residentDecoder(sequence, { placement: 'offload', poolBytes: 7 * 128 * 1024, maxTokens: prompt.length + 4 }),
    /holds 7 blocks per head; this model needs at least 8 \(1\.0 MiB\)/,
  );
});

test("'--device auto' keeps a small model on the CPU and says why", async () => {
  const { loadConfig } = await import('../../engine/model/config.js');
  const { loadWeights } = await import('../../engine/model/weights.js');
  const config = await loadConfig(FIXTURE);
  const { weights } = await loadWeights(FIXTURE, config);
  const auto = await SalaModel.create(config, weights, { device: 'auto' });
  assert.equal(auto.device.kind, 'cpu');
  assert.match(auto.device.reason, /auto: a \d+M-parameter model decodes faster on the CPU/);
  await auto.release();
});

test('fp16 weights (CPU provider) decode within 2e-3 of fp32 with the same greedy tokens; auto precision is fp32 on the CPU', async (t) => {
  const { loadConfig } = await import('../../engine/model/config.js');
  const { loadWeights } = await import('../../engine/model/weights.js');
  const { MATRIX_INPUTS } = await import('../../engine/model/graphs.js');
  const config = await loadConfig(FIXTURE);
  const { weights } = await loadWeights(FIXTURE, config);
  // The fixture's weights are bf16 values, which fp16 holds exactly: jitter the matrices
  // (by up to 2^-9, relative) so that storing them in fp16 really rounds.
  let state = 7;
  for (const [name, data] of weights) {
    if (name.endsWith('norm.weight')) continue;
    const jittered = Float32Array.from(data, (value) => {
      state = (state * 1103515245 + 12345) >>> 0;
      return value * (1 + ((state / 4294967296) * 2 - 1) / 512);
    });
    weights.set(name, jittered);
  }
  assert.ok(MATRIX_INPUTS.has('w_mlp_down') && !MATRIX_INPUTS.has('w_in_norm'));
  const single = await SalaModel.create(config, weights, { device: 'cpu' });
  const half = await SalaModel.create(config, weights, { device: 'cpu', precision: 'fp16' });
  assert.deepEqual(single.precision, { kind: 'fp32', reason: 'auto: fp32 on the CPU' });
  assert.equal(half.precision.kind, 'fp16');
  // The long scenario decodes on the sparse path through an evicting pool.
  const prompt = Array.from(load('long_prompt_ids').data);
  const decode = async (m: SalaModel) => {
    const sequence = m.newSequence();
    const last = await m.forward(sequence, prompt);
    const decoder = await m.residentDecoder(sequence, { placement: 'offload', poolBlocks: 8, maxTokens: prompt.length + 16 });
    const ids = [argmax(last)];
    const logits = new Float32Array(8 * config.vocabSize);
    for (let step = 0; step < 8; step++) {
      const row = await decoder.step(ids[step]);
      logits.set(row, step * config.vocabSize);
      ids.push(argmax(row));
    }
    await decoder.close();
    return { ids, logits };
  };
  const want = await decode(single);
  const got = await decode(half);
  const diff = maxAbsDiff(got.logits, want.logits);
  t.diagnostic(`fp16 vs fp32: max |Δlogit| ${diff.toExponential(2)}`);
  // Measured 4.0e-4 (largest |logit| ~0.9); exactly 0 would mean the fp16 copies were never used. The CPU
  // provider has no fp16 Gemm: onnxruntime computes it in fp32 from the fp16 weights (its inserted Casts
  // cancel the graph's activation Casts), so this checks the fp16 weights and their plumbing; fp16
  // arithmetic on a GPU is checked by bench:offload (fp16 vs fp32 on the device).
  assert.ok(diff > 1e-6 && diff <= 2e-3, `max |Δlogit| ${diff}`);
  assert.deepEqual(got.ids, want.ids);
  await Promise.all([single.release(), half.release()]);
});

/** Prefill on the resident path from `past` tokens of the prompt fed by the host path, then 8 greedy decode steps. */
async function prefillResident(name: 'short' | 'long' | 'cross', past: number, options: Omit<ResidentOptions, 'maxTokens'>, chunkSize: number) {
  const prompt = Array.from(load(`${name}_prompt_ids`).data);
  const sequence = model.newSequence();
  if (past > 0) await model.forward(sequence, prompt.slice(0, past));
  const decoder = await model.residentDecoder(sequence, { ...options, maxTokens: prompt.length + 16 });
  const last = await decoder.prefill(prompt.slice(past), { chunkSize });
  return { ...(await greedySteps(decoder, last)), last, sequence };
}

for (const name of ['short', 'long', 'cross'] as const) {
  for (const placement of ['offload', 'device'] as const) {
    test(`${name} scenario prefilled on the resident path (KV ${placement}, 100-token chunks): the host path's last logits, then the reference's decode`, async (t) => {
      const prompt = Array.from(load(`${name}_prompt_ids`).data);
      const host = await model.forward(model.newSequence(), prompt);
      const result = await prefillResident(name, 0, { placement, poolBlocks: 8 }, 100);
      const prefillDiff = maxAbsDiff(result.last, host);
      const decodeDiff = maxAbsDiff(result.logits, load(`${name}_decode_logits`).data);
      t.diagnostic(`prefill max |Δlogit| ${prefillDiff.toExponential(2)}, decode ${decodeDiff.toExponential(2)}; hits ${result.stats.hits}, misses ${result.stats.misses}`);
      assert.ok(prefillDiff <= LOGIT_TOLERANCE, `prefill max |Δlogit| ${prefillDiff}`);
      assert.deepEqual(result.ids, Array.from(load(`${name}_decode_ids`).data));
      assert.ok(decodeDiff <= LOGIT_TOLERANCE, `decode max |Δlogit| ${decodeDiff}`);
      assert.equal(result.stats.prefilledTokens, prompt.length);
      assert.equal(result.sequence.length, prompt.length + 8);
    });
  }
}

test('a continuation prefilled on the resident path equals the host path continuing the same sequence; row groups and chunking do not change it', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const past = 700; // past dense_len (512): the continuation selects blocks
  const hostSequence = model.newSequence();
  await model.forward(hostSequence, prompt.slice(0, past));
  const host = await model.forward(hostSequence, prompt.slice(past), { chunkSize: 256 });
  // An 8-slot pool cannot hold the union of a 128-row chunk's selections: the rows split into groups.
  const offload = await prefillResident('long', past, { placement: 'offload', poolBlocks: 8 }, 128);
  const device = await prefillResident('long', past, { placement: 'device' }, 831);
  assert.ok(maxAbsDiff(offload.last, host) <= LOGIT_TOLERANCE, `offload ${maxAbsDiff(offload.last, host)}`);
  assert.ok(maxAbsDiff(device.last, host) <= LOGIT_TOLERANCE, `device ${maxAbsDiff(device.last, host)}`);
  assert.deepEqual(offload.ids, device.ids);
  assert.ok(offload.stats.misses > 0 && offload.stats.hits > 0);
  // 2 sparse layers: the device path attends once per layer and chunk, the 8-slot pool in groups.
  assert.equal(device.stats.prefillAttendCalls, 2);
  assert.ok(offload.stats.prefillAttendCalls > 2 * 7, `${offload.stats.prefillAttendCalls} calls for 7 chunks`);
  // The same through the host path's decode, to the resident decode's ids.
  let row = host;
  const ids: number[] = [];
  for (let step = 0; step < 8; step++) {
    ids.push(argmax(row));
    row = await model.forward(hostSequence, [ids[step]]);
  }
  assert.deepEqual(device.ids, ids);
});

test("each row over its own blocks (the per-row form) gives the union form's result, offloaded and all on the device, in row groups under a budget", async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const past = 700;
  const hostSequence = model.newSequence();
  await model.forward(hostSequence, prompt.slice(0, past));
  const host = await model.forward(hostSequence, prompt.slice(past), { chunkSize: 256 });
  const union = await prefillResident('long', past, { placement: 'device', rowAttention: 'union' }, 256);
  const perRow = await prefillResident('long', past, { placement: 'device', rowAttention: 'per-row' }, 256);
  // Two rows' gathered keys per call (2 heads × 5 blocks × 64 keys × 64 floats × 4 bytes each): 2 rows per call.
  const perRowTight = await prefillResident('long', past, { placement: 'offload', poolBlocks: 8, rowAttention: 'per-row', attentionBytes: 2 * 2 * 5 * 64 * 64 * 4 }, 256);
  for (const [name, result] of [
    ['union', union],
    ['per-row', perRow],
    ['per-row in a pool, 2 rows a call', perRowTight],
  ] as const) {
    assert.ok(maxAbsDiff(result.last, host) <= LOGIT_TOLERANCE, `${name}: ${maxAbsDiff(result.last, host)}`);
    assert.deepEqual(result.ids, union.ids, name);
  }
  assert.equal(union.stats.prefillAttendCalls, 2 * 4, 'one call per layer and chunk');
  assert.equal(perRow.stats.prefillAttendCalls, 2 * 4);
  // 831 rows in chunks of 256, 256, 256 and 63: 128 · 3 + 32 calls per layer.
  assert.equal(perRowTight.stats.prefillAttendCalls, 2 * (128 * 3 + 32));
});

test("with every block on the device the chunk reads its selection where it was made: both forms and small calls give the host route's result with fewer bytes up", async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const past = 700;
  const hostSequence = model.newSequence();
  await model.forward(hostSequence, prompt.slice(0, past));
  const host = await model.forward(hostSequence, prompt.slice(past), { chunkSize: 256 });
  const viaHost = await prefillResident('long', past, { placement: 'device', rowAttention: 'union', prefillSelection: 'host' }, 256);
  const union = await prefillResident('long', past, { placement: 'device', rowAttention: 'union' }, 256);
  const perRow = await prefillResident('long', past, { placement: 'device', rowAttention: 'per-row' }, 256);
  // Two rows' gathered keys per call (2 heads × 64 floats × 5 blocks × 64 keys × 4 bytes each).
  const perRowTight = await prefillResident('long', past, { placement: 'device', rowAttention: 'per-row', attentionBytes: 2 * 2 * 64 * 5 * 64 * 4 }, 256);
  // Three rows' scores over at most 24 blocks (4 heads × 24 × 64 keys × 4 bytes): a few rows a call.
  const unionTight = await prefillResident('long', past, { placement: 'device', rowAttention: 'union', attentionBytes: 3 * 4 * 24 * 64 * 4 }, 256);
  for (const [name, result] of [
    ['the ids through the host', viaHost],
    ['the union, compacted on the device', union],
    ['per row', perRow],
    ['per row, 2 rows a call', perRowTight],
    ['the union, a few rows a call', unionTight],
  ] as const) {
    assert.ok(maxAbsDiff(result.last, host) <= LOGIT_TOLERANCE, `${name}: ${maxAbsDiff(result.last, host)}`);
    assert.deepEqual(result.ids, viaHost.ids, name);
  }
  assert.ok(maxAbsDiff(union.last, perRow.last) <= 1e-5, `the two device forms: ${maxAbsDiff(union.last, perRow.last)}`);
  assert.equal(perRowTight.stats.prefillAttendCalls, 2 * (128 * 3 + 32));
  assert.ok(unionTight.stats.prefillAttendCalls > 2 * 4 * 64, `${unionTight.stats.prefillAttendCalls} calls`);
  // The ids no longer go up as slots and masks: what else crosses the bus shrinks.
  assert.ok(union.stats.otherBytes < viaHost.stats.otherBytes, `${union.stats.otherBytes} against ${viaHost.stats.otherBytes} bytes`);
});

test('dense prefill on the resident path: the sparse result below dense_len, a different one past it, and the same in bounded memory', async () => {
  const shortSparse = await prefillResident('short', 0, { placement: 'device' }, 64);
  const shortDense = await prefillResident('short', 0, { placement: 'device', attention: 'dense' }, 64);
  assert.ok(maxAbsDiff(shortDense.last, shortSparse.last) <= 1e-6);
  const longDense = await prefillResident('long', 0, { placement: 'device', attention: 'dense' }, 512);
  const longSparse = await prefillResident('long', 0, { placement: 'device' }, 512);
  assert.ok(maxAbsDiff(longDense.last, longSparse.last) > 1e-4, 'the long prompt selects a strict subset of blocks');
  // A budget of two rows' scores at the longest context (4 heads × 1,536 keys × 4 bytes each): hundreds of calls.
  const tight = await prefillResident('long', 0, { placement: 'device', attention: 'dense', attentionBytes: 2 * 4 * 1536 * 4 }, 512);
  assert.ok(maxAbsDiff(tight.last, longDense.last) <= 1e-6, `${maxAbsDiff(tight.last, longDense.last)}`);
  assert.equal(longDense.stats.prefillAttendCalls, 2 * 3);
  assert.ok(tight.stats.prefillAttendCalls > 100 * longDense.stats.prefillAttendCalls, `${tight.stats.prefillAttendCalls} calls`);
});

test('resident prefill refuses bad input and keeps the sequence as it was', async () => {
  const sequence = model.newSequence();
  await model.forward(sequence, [5, 6, 7]);
  const decoder = await model.residentDecoder(sequence, { placement: 'device', maxTokens: 16 });
  await assert.rejects(decoder.prefill([]), /no tokens/);
  await assert.rejects(decoder.prefill([1, 512]), /token id 512 at index 1 is outside the vocabulary/);
  await assert.rejects(decoder.prefill(Array.from({ length: 14 }, () => 3)), /sized for 16 tokens; 17 do not fit/);
  assert.equal(sequence.length, 3);
  await decoder.close();
});

test('tombstoned tokens are masked in a resident prefill as in the host path, in both row forms', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const past = 900;
  const host = model.newSequence();
  await model.forward(host, prompt.slice(0, past));
  host.markDead(70, 300);
  host.markDead(past - 20, past - 5);
  const want = await model.forward(host, prompt.slice(past), { chunkSize: 300 });
  for (const rowAttention of ['union', 'per-row'] as const) {
    const sequence = model.newSequence();
    await model.forward(sequence, prompt.slice(0, past));
    sequence.markDead(70, 300);
    sequence.markDead(past - 20, past - 5);
    const decoder = await model.residentDecoder(sequence, { placement: 'offload', poolBlocks: 12, rowAttention, maxTokens: prompt.length + 1 });
    const got = await decoder.prefill(prompt.slice(past), { chunkSize: 300 });
    await decoder.close();
    assert.ok(maxAbsDiff(got, want) <= LOGIT_TOLERANCE, `${rowAttention}: ${maxAbsDiff(got, want)}`);
  }
  // And the tombstones did change the answer.
  const clean = model.newSequence();
  await model.forward(clean, prompt.slice(0, past));
  assert.ok(maxAbsDiff(await model.forward(clean, prompt.slice(past), { chunkSize: 300 }), want) > 1e-4);
});

test('a decoder state that cannot be allocated is refused with what to change, and the sequence is left as it was', async () => {
  const { ResidentMemoryError } = await import('../../engine/model/resident-decoder.js');
  const prompt = Array.from(load('long_prompt_ids').data);
  const sequence = model.newSequence();
  await model.forward(sequence, prompt);
  const lightning = [...sequence.lightning.values()].map((state) => state.slice());
  // Room for 2^40 tokens on the device: no typed array that large exists (on a GPU, the allocation fails the same way).
  await assert.rejects(model.residentDecoder(sequence, { placement: 'device', maxTokens: 2 ** 40 }), (err: unknown) => {
    assert.ok(err instanceof ResidentMemoryError);
    assert.match(
      err.message,
      /could not hold the decoder's state on cpu \(KV all on the device, room for 1099511627776 tokens\): .+\. Offload the KV to host memory, or shorten the context\./,
    );
    return true;
  });
  // A pool past the largest tensor a device takes is refused before anything is allocated, naming the largest budget.
  const { MAX_KV_TENSOR_BYTES } = await import('../../engine/model/resident-decoder.js');
  const slotBytes = model.config.numKeyValueHeads * model.config.sparse.blockSize * model.sizes.sparseHeadDim * 4;
  const largestMiB = Math.floor((Math.floor(MAX_KV_TENSOR_BYTES / slotBytes) * slotBytes * 2 * model.sizes.sparseLayers.length) / 2 ** 20);
  await assert.rejects(model.residentDecoder(sequence, { placement: 'offload', poolBlocks: 2 ** 34, maxTokens: prompt.length + 8 }), (err: unknown) => {
    assert.ok(err instanceof ResidentMemoryError);
    assert.match(
      err.message,
      /KV offloaded.*: each sparse layer's K and V pools would take [\d.]+ GiB apiece, over the 4 GiB one device tensor may hold\. Give the KV pools less memory \(--gpu-kv-mb, at most (\d+) here\)/,
    );
    assert.equal(Number(/at most (\d+) here/.exec(err.message)![1]), largestMiB);
    return true;
  });
  await assert.rejects(
    model.residentDecoder(sequence, { placement: 'offload', poolBytes: (largestMiB + 64) * 2 ** 20, maxTokens: prompt.length + 8 }),
    /over the 4 GiB one device tensor may hold/,
  );
  assert.equal(sequence.length, prompt.length);
  [...sequence.lightning.values()].forEach((state, i) => assert.deepEqual(state, lightning[i]));
  // And the sequence still decodes exactly.
  const result = await greedySteps(
    await model.residentDecoder(sequence, { placement: 'offload', poolBlocks: 8, maxTokens: prompt.length + 16 }),
    await model.forward(model.newSequence(), prompt),
  );
  assert.deepEqual(result.ids, Array.from(load('long_decode_ids').data));
});

test('resident prefill over a host store that spilled to disk equals the in-memory one', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const past = 1000;
  const blockBytes = 2 * model.config.numKeyValueHeads * model.config.sparse.blockSize * model.sizes.sparseHeadDim * 4;
  model.setHostKvBudget(6 * blockBytes * model.sizes.sparseLayers.length);
  const spilled = model.newSequence();
  model.setHostKvBudget(Infinity);
  const plain = model.newSequence();
  for (const sequence of [plain, spilled]) await model.forward(sequence, prompt.slice(0, past), { chunkSize: 128 });
  assert.ok([...spilled.sparse.values()][0].spilledBlocks > 4);
  const rows: Float32Array[] = [];
  for (const sequence of [plain, spilled]) {
    const decoder = await model.residentDecoder(sequence, { placement: 'offload', poolBlocks: 8, maxTokens: prompt.length + 1 });
    rows.push(await decoder.prefill(prompt.slice(past), { chunkSize: 200 }));
    await decoder.close();
  }
  assert.equal(maxAbsDiff(rows[1], rows[0]), 0);
});
