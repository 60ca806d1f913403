// The decode step's sparse layers through the CUDA-graph path (captured-sparse.ts), every
// block on the device, on the CPU provider through the binding addon: the fixed-shape
// graph at the decoder's capacity, its fixed buffers, in-place tail writes and masks,
// without the capture itself (the CPU provider has none). Checked against the reference
// fixture and against the host path across block boundaries and tombstones, and through a
// failed run that turns the path off mid-decode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { argmax } from '../../engine/model/sampling.js';
import type { ResidentDecoder } from '../../engine/model/resident-decoder.js';
import type { CapturedSparse } from '../../engine/model/captured-sparse.js';
import { readNpy } from '../helpers/npy.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';
import { maxAbsDiff } from '../helpers/logits.js';
import { addonCpuModel, greedySteps } from '../helpers/resident.js';

const loaded = addonCpuModel(FIXTURE);
const load = (name: string) => readNpy(path.join(FIXTURE, `${name}.npy`));
const sparseLayers = () => loaded.model.config.mixerTypes.filter((type) => type !== 'lightning-attn').length;

/** The decoder's captured sparse step (private to it: the test reaches in to break it). */
function capturedOf(decoder: ResidentDecoder): CapturedSparse | null | undefined {
  // The decoder's sparse decode steps (resident-step.ts) hold it.
  return (decoder as unknown as { steps: { capturedSparse?: CapturedSparse | null } }).steps.capturedSparse;
}

for (const name of ['long', 'cross'] as const) {
  test(`${name} scenario, sparse layers through their graphs: the reference's decode ids and logits`, async () => {
    const prompt = Array.from(load(`${name}_prompt_ids`).data);
    const sequence = loaded.model.newSequence();
    const last = await loaded.model.forward(sequence, prompt);
    // Room for far more than the fixture decodes: the graph's shapes follow the capacity, not the context.
    const decoder = await loaded.model.residentDecoder(sequence, { placement: 'device', maxTokens: prompt.length + 700 });
    const { ids, logits, stats } = await greedySteps(decoder, last);
    assert.deepEqual(ids, Array.from(load(`${name}_decode_ids`).data));
    const diff = maxAbsDiff(logits, load(`${name}_decode_logits`).data);
    assert.ok(diff <= 1e-5, `max |Δlogit| ${diff}`);
    // Steps below dense_len attend to every block, uncaptured; every sparse layer of every other step went through its graph.
    const sparseSteps = Array.from({ length: 8 }, (_, step) => prompt.length + step + 1).filter((kv) => kv >= loaded.model.config.sparse.denseLen).length;
    assert.ok(sparseSteps >= 5);
    assert.equal(stats.sparseGraphRuns, sparseSteps * sparseLayers());
    assert.equal(stats.selectionsOnDevice, stats.sparseGraphRuns);
  });
}

test('sparse layers through their graphs follow the host path across block boundaries and tombstones, old and new', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const host = loaded.model.newSequence();
  const resident = loaded.model.newSequence();
  let hostRow = await loaded.model.forward(host, prompt);
  await loaded.model.forward(resident, prompt);
  for (const sequence of [host, resident]) {
    sequence.markDead(130, 200); // block 2 wholly dead, block 3 in part
    sequence.markDead(prompt.length - 20, prompt.length - 5); // inside the tail block
  }
  const decoder = await loaded.model.residentDecoder(resident, { placement: 'device', maxTokens: prompt.length + 200 });
  let worst = 0;
  // 140 steps cross two block boundaries (the dead-block mask goes up again at each) and a tombstone made mid-decode.
  for (let step = 0; step < 140; step++) {
    if (step === 40) for (const sequence of [host, resident]) sequence.markDead(300, 1000); // blocks 5–14 wholly dead
    const id = argmax(hostRow);
    const row = await decoder.step(id);
    hostRow = await loaded.model.forward(host, [id]);
    worst = Math.max(worst, maxAbsDiff(row, hostRow));
  }
  const stats = decoder.snapshot();
  await decoder.close();
  assert.ok(worst <= 1e-5, `max |Δlogit| ${worst}`);
  assert.equal(stats.sparseGraphRuns, 140 * sparseLayers());
});

test('a sparse graph run that fails turns the path off for the decoder; the layer runs again and the tokens stay the host path’s', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const host = loaded.model.newSequence();
  let hostRow = await loaded.model.forward(host, prompt);
  const expected: number[] = [];
  for (let step = 0; step < 10; step++) {
    expected.push(argmax(hostRow));
    hostRow = await loaded.model.forward(host, [expected[step]]);
  }
  const sequence = loaded.model.newSequence();
  let row = await loaded.model.forward(sequence, prompt);
  const decoder = await loaded.model.residentDecoder(sequence, { placement: 'device', maxTokens: prompt.length + 16 });
  const ids: number[] = [];
  for (let step = 0; step < 10; step++) {
    // A real failure of the real session: released under the decoder.
    if (step === 5) await (capturedOf(decoder) as unknown as { graphs: { release(): Promise<void> }[] }).graphs[0].release();
    ids.push(argmax(row));
    row = await decoder.step(ids[step]);
  }
  const captured = capturedOf(decoder)!;
  const stats = decoder.snapshot();
  await decoder.close();
  assert.deepEqual(ids, expected);
  assert.equal(captured.usable, false);
  assert.match(captured.failure!, /sparse_step_captured/);
  assert.equal(stats.sparseGraphRuns, 5 * sparseLayers(), 'the steps before the failure went through the graphs, none after');
  assert.equal(stats.selectionsOnDevice, 10 * sparseLayers(), 'after it, the uncaptured one-run path');
});

test('offloaded, the selection and attention graphs follow the host path through pool misses, block boundaries and tombstones', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const host = loaded.model.newSequence();
  const resident = loaded.model.newSequence();
  let hostRow = await loaded.model.forward(host, prompt);
  await loaded.model.forward(resident, prompt);
  for (const sequence of [host, resident]) sequence.markDead(130, 200);
  // A pool of 8 slots a head, against more blocks than that selected over the run: slots are reused.
  const decoder = await loaded.model.residentDecoder(resident, { placement: 'offload', poolBlocks: 8, maxTokens: prompt.length + 200 });
  let worst = 0;
  for (let step = 0; step < 140; step++) {
    if (step === 40) for (const sequence of [host, resident]) sequence.markDead(300, 1000);
    const id = argmax(hostRow);
    const row = await decoder.step(id);
    hostRow = await loaded.model.forward(host, [id]);
    worst = Math.max(worst, maxAbsDiff(row, hostRow));
  }
  const captured = capturedOf(decoder)!;
  const stats = decoder.snapshot();
  await decoder.close();
  assert.ok(worst <= 1e-5, `max |Δlogit| ${worst}`);
  assert.equal(captured.splits, true);
  assert.equal(stats.sparseGraphRuns, 140 * sparseLayers(), 'every sparse layer of every step through its two graphs');
  assert.equal(stats.selectionsOnDevice, 0, 'the ids came back to the host');
  assert.ok(stats.misses > 8 * sparseLayers(), `${stats.misses} misses: the pool was refilled`);
});

test('offloaded, a failed attention graph turns capture off; the layer runs again uncaptured and the tokens stay the session path’s', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const decode = async (form: 'captured' | 'split', breakAt?: number) => {
    const sequence = loaded.model.newSequence();
    let row = await loaded.model.forward(sequence, prompt);
    const decoder = await loaded.model.residentDecoder(sequence, { placement: 'offload', poolBlocks: 8, maxTokens: prompt.length + 16, sparseStep: form });
    const ids: number[] = [];
    for (let step = 0; step < 10; step++) {
      if (step === breakAt) await (capturedOf(decoder) as unknown as { graphs: { release(): Promise<void> }[] }).graphs[1].release();
      ids.push(argmax(row));
      row = await decoder.step(ids[step]);
    }
    const captured = capturedOf(decoder);
    const stats = decoder.snapshot();
    await decoder.close();
    return { ids, captured, stats };
  };
  const split = await decode('split');
  const broken = await decode('captured', 5);
  assert.equal(split.captured ?? null, null, 'split steps build no graphs');
  assert.equal(split.stats.sparseGraphRuns, 0);
  assert.deepEqual(broken.ids, split.ids);
  assert.equal(broken.captured!.usable, false);
  assert.match(broken.captured!.failure!, /sparse_attend_captured/);
  assert.equal(broken.stats.sparseGraphRuns, 5 * sparseLayers());
});

test('only an offloading decoder asks for its host store to be page-locked; with every block on the device the prefill stages its few new blocks', async () => {
  const prompt = Array.from(load('long_prompt_ids').data);
  const pinnedLayers = async (placement: 'device' | 'offload') => {
    const sequence = loaded.model.newSequence();
    await loaded.model.forward(sequence, prompt.slice(0, 200));
    const decoder = await loaded.model.residentDecoder(sequence, { placement, maxTokens: prompt.length + 8, ...(placement === 'offload' ? { poolBlocks: 8 } : {}) });
    await decoder.prefill(prompt.slice(200));
    await decoder.step(prompt[0]);
    const layers = (decoder as unknown as { kv: { layers: { pinned?: { locked: boolean } }[] } }).kv.layers;
    const asked = layers.map((layer) => (layer.pinned ? (layer.pinned.locked ? 'locked' : 'refused') : 'not asked'));
    await decoder.close();
    return asked;
  };
  // The CPU provider has no page-locking: an offloading decoder asks and is refused once per store.
  assert.deepEqual(await pinnedLayers('offload'), Array(sparseLayers()).fill('refused'));
  assert.deepEqual(await pinnedLayers('device'), Array(sparseLayers()).fill('not asked'));
});
