// The decode step's Lightning layers through the CUDA-graph path (captured-lightning.ts)
// on the CPU provider through the binding addon: the same fixed buffers, swapped state
// buffers and copies, without the capture itself (the CPU provider has none). Checked
// against the host path on the reference fixture, across decoders sharing the buffers,
// and through a failed run that turns the path off mid-decode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { argmax } from '../../engine/model/sampling.js';
import type { ResidentSessions } from '../../engine/model/resident-decoder.js';
import { readNpy } from '../helpers/npy.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';
import { addonCpuModel } from '../helpers/resident.js';

const loaded = addonCpuModel(FIXTURE);

const prompt = () => Array.from(readNpy(path.join(FIXTURE, 'long_prompt_ids.npy')).data);

/** The model's resident sessions (private to it: the test reaches in to find the captured path and break it). */
function sessions(): Promise<ResidentSessions> {
  return (loaded.model as unknown as { residentSessions: Promise<ResidentSessions> }).residentSessions;
}

/** `steps` greedy tokens after the prompt through the host path (the reference here). */
async function hostTokens(steps: number): Promise<number[]> {
  const sequence = loaded.model.newSequence();
  let logits = await loaded.model.forward(sequence, prompt());
  const ids: number[] = [];
  for (let step = 0; step < steps; step++) {
    ids.push(argmax(logits));
    logits = await loaded.model.forward(sequence, [ids[step]]);
  }
  return ids;
}

/** The same through a resident decoder; `midway` runs after half the steps. */
async function residentTokens(steps: number, midway?: () => Promise<void>): Promise<number[]> {
  const sequence = loaded.model.newSequence();
  const decoder = await loaded.model.residentDecoder(sequence, { placement: 'device', maxTokens: prompt().length + steps + 1 });
  let logits = await decoder.prefill(prompt());
  const ids: number[] = [];
  for (let step = 0; step < steps; step++) {
    if (step === steps / 2) await midway?.();
    ids.push(argmax(logits));
    logits = await decoder.step(ids[step]);
  }
  await decoder.close();
  return ids;
}

test('decode steps through the captured path write the host path’s tokens, for one decoder and the next', async () => {
  const reference = await hostTokens(12);
  assert.deepEqual(await residentTokens(12), reference);
  const captured = (await sessions()).captured;
  assert.ok(captured?.usable, 'the first decoder made the buffers and kept them usable');
  // A second decoder reuses the model's buffers: its states move into them on its first step.
  assert.deepEqual(await residentTokens(12), reference);
});

test('a captured run that fails turns the path off and the step runs the layer again: the same tokens', async () => {
  const reference = await hostTokens(12);
  const all = await sessions();
  const tokens = await residentTokens(12, async () => {
    // A real failure of the real session: released under the decoder.
    await all.lightningCaptured!.release();
  });
  assert.deepEqual(tokens, reference);
  assert.equal(all.captured!.usable, false);
  assert.match(all.captured!.failure!, /graph lightning_captured failed: .*released/);
  // Later decoders do not take the path again.
  assert.deepEqual(await residentTokens(12), reference);
});
