// The host KV store of a sparse layer: a restore (rows read straight into the store,
// saved compressed keys appended) holds exactly what appending and pooling computed;
// past a memory budget, blocks spill to disk and come back exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { SparseKvCache, type SparseGeometry } from '../../engine/kv/sparse-kv-cache.js';

const rows = (tokens: number, width: number, seed: number) => Float32Array.from({ length: tokens * width }, (_, i) => Math.sin(seed + i * 0.37));

for (const kvHeads of [1, 2]) {
  test(`a restore from saved rows and compressed keys equals the cache it was saved from (${kvHeads} KV head${kvHeads > 1 ? 's' : ''})`, () => {
    const geometry: SparseGeometry = { kvHeads, headDim: 8, blockSize: 16, kernelSize: 8, kernelStride: 4 };
    const width = kvHeads * geometry.headDim;
    const built = new SparseKvCache(geometry);
    const keys = rows(300, width, 1);
    const values = rows(300, width, 2);
    built.append(keys.subarray(0, 100 * width), values.subarray(0, 100 * width));
    built.compressedKeys(); // pooled partway, then extended: as an indexing run does
    built.append(keys.subarray(100 * width), values.subarray(100 * width));
    const { fine, coarse } = built.compressedKeys();

    const restored = new SparseKvCache(geometry);
    restored.reserve(300);
    for (const [first, count] of [
      [0, 128],
      [128, 172],
    ]) {
      const direct = restored.rowsAt(first, count);
      assert.equal(direct !== undefined, kvHeads === 1, 'rows are read in place only where a token row is contiguous');
      if (direct) {
        direct.keys.set(keys.subarray(first * width, (first + count) * width));
        direct.values.set(values.subarray(first * width, (first + count) * width));
        restored.commitRows(first + count);
      } else {
        restored.append(keys.subarray(first * width, (first + count) * width), values.subarray(first * width, (first + count) * width));
      }
      const from = restored.compressedCounts(first);
      const to = restored.compressedCounts(first + count);
      restored.appendCompressed(fine.subarray(from.fine * width, to.fine * width), coarse.subarray(from.coarse * width, to.coarse * width));
    }
    assert.equal(restored.length, 300);
    assert.deepEqual(restored.rows(0, 300), built.rows(0, 300));
    const again = restored.compressedKeys();
    assert.deepEqual(again.fine, fine);
    assert.deepEqual(again.coarse, coarse);
    assert.throws(() => restored.appendCompressed(fine.subarray(0, width), new Float32Array(0)), /compressed keys past/);
  });
}

for (const kvHeads of [1, 2]) {
  test(`past its memory budget the store spills its oldest blocks to disk and reads them back exactly (${kvHeads} KV head${kvHeads > 1 ? 's' : ''})`, () => {
    const geometry: SparseGeometry = { kvHeads, headDim: 8, blockSize: 16, kernelSize: 8, kernelStride: 4 };
    const width = kvHeads * geometry.headDim;
    const blockBytes = 2 * kvHeads * 16 * 8 * 4;
    const spilled = new SparseKvCache(geometry, 0, { memoryBytes: 6 * blockBytes, dir: os.tmpdir() });
    const plain = new SparseKvCache(geometry);
    const keys = rows(1000, width, 3);
    const values = rows(1000, width, 4);
    for (let at = 0, step = 1; at < 1000; at += step, step = ((step * 7) % 61) + 1) {
      const end = Math.min(1000, at + step);
      for (const cache of [spilled, plain]) cache.append(keys.subarray(at * width, end * width), values.subarray(at * width, end * width));
      if (at % 5 === 0) assert.deepEqual(spilled.compressedKeys(), plain.compressedKeys()); // pooled as it grows, as prefill does
    }
    assert.ok(spilled.spilledBlocks > 40, `${spilled.spilledBlocks} of ${spilled.blockCount} blocks spilled`);
    assert.ok(spilled.memoryBytes <= 6 * blockBytes, `${spilled.memoryBytes} bytes in memory`);
    assert.equal(spilled.store(), undefined, 'no whole in-memory store once blocks spilled');
    assert.deepEqual(spilled.rows(0, 1000), plain.rows(0, 1000));
    assert.deepEqual(spilled.rows(37, 555), plain.rows(37, 555));
    const pick = [0, 5, -1, 40, 61, 3]; // complete blocks: past the length a block holds stale rows (masked by position)
    for (let h = 0; h < kvHeads; h++) {
      const [a, b] = [0, 1].map(() => ({ keys: new Float32Array(pick.length * 128), values: new Float32Array(pick.length * 128) }));
      spilled.readBlocks(h, pick, a.keys, a.values);
      plain.readBlocks(h, pick, b.keys, b.values);
      assert.deepEqual(a, b);
    }
    assert.deepEqual(spilled.compressedKeys(), plain.compressedKeys());
    assert.deepEqual(spilled.prefix(700).rows(0, 700), plain.rows(0, 700));
    assert.deepEqual(spilled.clone().rows(0, 1000), plain.rows(0, 1000));

    // A rollback into the spilled part brings the new tail block back; appending goes on exactly.
    for (const cache of [spilled, plain]) {
      cache.truncate(150);
      cache.append(keys.subarray(500 * width, 900 * width), values.subarray(500 * width, 900 * width));
    }
    assert.equal(spilled.length, 550);
    assert.deepEqual(spilled.rows(0, 550), plain.rows(0, 550));
    assert.deepEqual(spilled.compressedKeys(), plain.compressedKeys());
  });
}

test('a cache made or reserved for N tokens holds their compressed keys without regrowing', () => {
  const geometry: SparseGeometry = { kvHeads: 2, headDim: 8, blockSize: 16, kernelSize: 8, kernelStride: 4 };
  const width = geometry.kvHeads * geometry.headDim;
  const reserved = () => {
    const cache = new SparseKvCache(geometry);
    cache.reserve(1000);
    return cache;
  };
  for (const make of [() => new SparseKvCache(geometry, 1000), reserved]) {
    const cache = make();
    cache.append(rows(10, width, 1), rows(10, width, 2));
    const first = cache.compressedKeys();
    for (let at = 10; at < 1000; at += 99) {
      const take = Math.min(99, 1000 - at);
      cache.append(rows(take, width, at), rows(take, width, at + 1));
      const now = cache.compressedKeys();
      assert.equal(now.fine.buffer, first.fine.buffer, `fine keys moved at ${at + take} tokens`);
      assert.equal(now.coarse.buffer, first.coarse.buffer, `coarse keys moved at ${at + take} tokens`);
    }
    assert.equal(cache.compressedKeys().fine.length, ((1000 - 8) / 4 + 1) * width);
  }
  // Past its reserve a cache still grows.
  const small = new SparseKvCache(geometry, 100);
  small.append(rows(100, width, 1), rows(100, width, 2));
  const before = small.compressedKeys().fine.buffer;
  small.append(rows(100, width, 3), rows(100, width, 4));
  assert.notEqual(small.compressedKeys().fine.buffer, before);
});
