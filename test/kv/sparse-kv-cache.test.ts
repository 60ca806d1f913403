// The host KV store of a sparse layer: a restore (rows read straight into the store,
// saved compressed keys appended) holds exactly what appending and pooling computed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
    for (const [first, count] of [[0, 128], [128, 172]]) {
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
