// The pull's progress: bytes resumed from disk count as done but not toward the rate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProgressMeter, formatBytes } from '../../engine/hub/download-progress.js';

test('rate and ETA come from the bytes received in the last seconds; resumed bytes are done, not fast', () => {
  let now = 0;
  const meter = new ProgressMeter(10_000_000, () => now);
  meter.skip(4_000_000); // a resumed part
  assert.equal(meter.bytesPerSecond, 0);
  assert.equal(meter.etaSeconds, undefined, 'no rate yet, no ETA');
  for (let i = 0; i < 10; i++) {
    now += 100;
    meter.add(100_000); // 1 MB/s
  }
  assert.equal(meter.bytesDone, 5_000_000);
  assert.ok(Math.abs(meter.bytesPerSecond - 1_000_000) < 1, String(meter.bytesPerSecond));
  assert.ok(Math.abs((meter.etaSeconds ?? 0) - 5) < 0.01, String(meter.etaSeconds));
  // a later resume in the middle of a run does not inflate the rate either
  meter.skip(1_000_000);
  now += 100;
  meter.add(100_000);
  assert.ok(Math.abs(meter.bytesPerSecond - 1_000_000) < 1, String(meter.bytesPerSecond));
});

test('the rate forgets what is older than its window', () => {
  let now = 0;
  const meter = new ProgressMeter(1e9, () => now);
  for (let i = 0; i < 50; i++) {
    now += 100;
    meter.add(1_000_000); // 10 MB/s
  }
  for (let i = 0; i < 100; i++) {
    now += 100;
    meter.add(10_000); // then 100 KB/s for 10 s
  }
  assert.ok(Math.abs(meter.bytesPerSecond - 100_000) < 1000, String(meter.bytesPerSecond));
});

test('sizes read as people write them', () => {
  assert.deepEqual([0, 1023, 1536, 5.8 * 2 ** 20, 19 * 2 ** 30].map(formatBytes), ['0 B', '1023 B', '1.5 KiB', '5.8 MiB', '19 GiB']);
});
