// SalaModel.feed on a provider that keeps tensors on the device: the CPU provider
// through the binding addon (PANORAMA_NATIVE_CPU=1), the CUDA path's code with host
// memory as its device. Feeding through a resident decoder must leave the sequence
// exactly where forward() leaves it: same tokens, Lightning states and next logits.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { SalaModel } from '../../engine/model/sala-model.js';
import type { ResidentSessions } from '../../engine/model/resident-decoder.js';
import { readNpy } from '../helpers/npy.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';
import { setEnv } from '../helpers/env.js';

let model: SalaModel;
let restoreEnv: () => void;
before(async () => {
  restoreEnv = setEnv({ PANORAMA_NATIVE_CPU: '1' });
  model = await SalaModel.load(FIXTURE, { device: 'cpu' });
});
after(async () => {
  await model.release();
  restoreEnv();
});

const prompt = Array.from(readNpy(path.join(FIXTURE, 'long_prompt_ids.npy')).data);

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

test('feed() in pieces through the resident decoder leaves the sequence where forward() does', async () => {
  const fed = model.newSequence();
  const forwarded = model.newSequence();
  // Three calls, the last past dense_len, as files are fed one after another.
  const cuts = [0, 100, 300, prompt.length];
  for (let i = 0; i + 1 < cuts.length; i++) {
    await model.feed(fed, prompt.slice(cuts[i], cuts[i + 1]), { chunkSize: 64 });
    await model.forward(forwarded, prompt.slice(cuts[i], cuts[i + 1]), { logits: 'last', chunkSize: 64 });
  }
  assert.deepEqual(fed.tokens, forwarded.tokens);
  for (const [layer, state] of forwarded.lightning) {
    // States accumulate over the whole prompt: compare relative to their size (float32 sums in another order).
    const scale = state.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const d = maxAbsDiff(fed.lightning.get(layer)!, state) / scale;
    assert.ok(d < 1e-6, `Lightning state of layer ${layer} differs by ${d} of its largest value ${scale}`);
  }
  const next = [prompt[3]];
  const a = await model.forward(fed, next);
  const b = await model.forward(forwarded, next);
  const diff = maxAbsDiff(a, b);
  assert.ok(diff < 1e-5, `next-token logits differ by ${diff}`);
});

test('a feed() aborted before its first chunk feeds nothing, and the sequence stays usable', async () => {
  const sequence = model.newSequence();
  const controller = new AbortController();
  controller.abort(new Error('stopped'));
  await assert.rejects(model.feed(sequence, prompt.slice(0, 200), { signal: controller.signal }), /stopped/);
  assert.equal(sequence.length, 0);
  await model.feed(sequence, prompt.slice(0, 200));
  assert.equal(sequence.length, 200);
});

test('a feeder held across pieces: synced checkpoints equal forward()’s, and rolling back to one continues as forward() does', async () => {
  const fed = model.newSequence();
  const forwarded = model.newSequence();
  await model.forward(fed, prompt.slice(0, 300));
  await model.forward(forwarded, prompt.slice(0, 300));
  const feeder = await model.feeder(fed, prompt.length - 300);
  const checkpoints = [];
  for (let at = 300; at < prompt.length; at += 64) {
    await feeder.feed(prompt.slice(at, at + 64));
    await feeder.sync();
    checkpoints.push(fed.checkpoint());
    await model.forward(forwarded, prompt.slice(at, at + 64), { logits: 'last' });
    for (const [layer, state] of forwarded.lightning) {
      const scale = state.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const d = maxAbsDiff(checkpoints[checkpoints.length - 1].lightning.get(layer)!, state) / scale;
      assert.ok(d < 1e-6, `checkpoint at ${fed.length}, layer ${layer}: ${d}`);
    }
  }
  await feeder.close();
  assert.ok(checkpoints.length >= 2);
  fed.rollback(checkpoints[0]);
  const reference = model.newSequence();
  await model.forward(reference, prompt.slice(0, checkpoints[0].length));
  const next = prompt.slice(checkpoints[0].length, checkpoints[0].length + 8);
  const diff = maxAbsDiff(await model.forward(fed, next), await model.forward(reference, next));
  assert.ok(diff < 1e-5, `after the rollback the logits differ by ${diff}`);
});

test('a resident feed that fails is rolled back by its caller, and feeds from then on take the host executor', async () => {
  const sequence = model.newSequence();
  await model.forward(sequence, prompt.slice(0, 300));
  const before = sequence.checkpoint();
  // A real failure of a real session: the resident decoder's chunked attention, released.
  const sessions = await (model as unknown as { residentSessions: Promise<ResidentSessions> }).residentSessions;
  for (const session of Object.values(sessions.attendRows)) await session.release();
  assert.equal(model.feedsOnDevice, true);
  await assert.rejects(model.feed(sequence, prompt.slice(300, 600)), /sparse_attend_\w+ failed/);
  assert.equal(model.feedsOnDevice, false);
  sequence.rollback(before);
  await model.feed(sequence, prompt.slice(300, 600));
  const reference = model.newSequence();
  await model.forward(reference, prompt.slice(0, 600));
  const next = prompt.slice(600, 604);
  const diff = maxAbsDiff(await model.forward(sequence, next), await model.forward(reference, next));
  assert.ok(diff < 1e-5, `logits differ by ${diff}`);
});
