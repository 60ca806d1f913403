// Convert once: the first int4 load writes the int4 blocks beside a bf16-sharded checkpoint,
// later loads read them (same logits, no quantizing), a changed source file makes them stale.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, utimesSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeSalaCheckpoint } from './sala-checkpoint.js';
import { loadModel, CONVERTED_DIR, type ConvertEvent } from '../../engine/hub/converted-form.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-convert-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const IDS = [5, 17, 300, 42, 9, 1000, 77, 8];

async function run(options: { precision: 'int4' | 'fp32' }): Promise<{ logits: Float32Array; events: ConvertEvent[]; ms: number }> {
  const events: ConvertEvent[] = [];
  const started = performance.now();
  const model = await loadModel(dir, { device: 'cpu', ...options }, (e) => events.push(e));
  const ms = performance.now() - started;
  const logits = await model.forward(model.newSequence(IDS.length), IDS, { logits: 'last' });
  return { logits, events, ms };
}

test('the first int4 load converts and writes the form; the second reads it and gives the same logits', async () => {
  await writeSalaCheckpoint(dir);
  const first = await run({ precision: 'int4' });
  const phases = new Set(first.events.map((e) => e.phase));
  assert.ok(phases.has('convert') && phases.has('written'), [...phases].join());
  const file = path.join(dir, CONVERTED_DIR, 'int4.safetensors');
  assert.ok(existsSync(file));
  const second = await run({ precision: 'int4' });
  assert.deepEqual(
    second.events.map((e) => e.phase).filter((p) => p !== 'read'),
    [],
    'nothing converted or written',
  );
  assert.ok(second.events.some((e) => e.phase === 'read' && e.done === e.total && (e.total ?? 0) > 0));
  assert.deepEqual(second.logits, first.logits);
  // diagnostic, not asserted (a shared machine's timing varies): the numbers for the report
  console.log(`# int4 load: first (converting) ${first.ms.toFixed(0)} ms, second (converted form) ${second.ms.toFixed(0)} ms; form ${statSync(file).size} bytes`);
});

test('a changed source file makes the converted form stale: the next load converts again', async () => {
  const shard = path.join(dir, 'model-00002-of-00002.safetensors');
  const later = new Date(Date.now() + 5000);
  utimesSync(shard, later, later);
  const again = await run({ precision: 'int4' });
  assert.ok(again.events.some((e) => e.phase === 'convert'));
  assert.ok(again.events.some((e) => e.phase === 'written'));
  const after = await run({ precision: 'int4' });
  assert.ok(!after.events.some((e) => e.phase === 'convert'));
});

test('fp32 loads need no converted form', async () => {
  const plain = await run({ precision: 'fp32' });
  assert.deepEqual(plain.events, []);
});
