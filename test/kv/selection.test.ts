import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blocksPerHead, compressedCount, poolPads, visibleCount } from '../../engine/kv/selection.js';
import { SparseKvCache } from '../../engine/kv/sparse-kv-cache.js';

const fine = { window: 32, stride: 16 };
const coarse = { window: 128, stride: 64 };

test('compressed key counts follow n = floor((L − window)/stride) + 1', () => {
  assert.equal(compressedCount(31, fine), 0);
  assert.equal(compressedCount(32, fine), 1);
  assert.equal(compressedCount(47, fine), 1);
  assert.equal(compressedCount(48, fine), 2);
  assert.equal(compressedCount(1531, fine), 94);
  assert.equal(compressedCount(1531, coarse), 22);
});

test('a window is visible once it lies fully in the past (16c + 31 ≤ t)', () => {
  assert.equal(visibleCount(30, fine, 100), 0);
  assert.equal(visibleCount(31, fine, 100), 1);
  assert.equal(visibleCount(46, fine, 100), 1);
  assert.equal(visibleCount(47, fine, 100), 2);
  assert.equal(visibleCount(127, coarse, 100), 1);
  assert.equal(visibleCount(126, coarse, 100), 0);
  assert.equal(visibleCount(10_000, fine, 7), 7, 'capped by what exists');
});

test('one-shot prefill: the bottom-right rule sees one fewer window exactly when L ≡ s − 1 (mod s)', () => {
  for (const L of [1000, 1024, 1531, 1103, 1343, 1087]) {
    for (const t of [40, 500, L - 1]) {
      const absolute = visibleCount(t, fine, 1000);
      const aligned = visibleCount(t, fine, 1000, L);
      assert.equal(aligned, L % 16 === 15 ? Math.max(0, absolute - 1) : absolute, `fine L=${L} t=${t}`);
      const absoluteCoarse = visibleCount(t, coarse, 1000);
      const alignedCoarse = visibleCount(t, coarse, 1000, L);
      assert.equal(alignedCoarse, L % 64 === 63 ? Math.max(0, absoluteCoarse - 1) : absoluteCoarse, `coarse L=${L} t=${t}`);
    }
  }
});

test('pool padding gives one max-pool window per block (kernel 5, stride 4, one −inf in front)', () => {
  // 24 blocks, 94 fine keys: padded length must be 4·24 + 1 = 97 = 1 + 94 + 2.
  assert.deepEqual(poolPads(94, 24, 4), [0, 0, 1, 0, 0, 2]);
});

test('blocks per head: each head its own ascending ids, padded to a common width, with a per-query mask; −1 slots ignored', () => {
  const selected = BigInt64Array.from([0, 3, -1, 0, 5, 3, 0, 1, -1, 7, 7, -1].map(BigInt)); // [Hk=2, T=2, k=3]
  const { blockIds, width, mask } = blocksPerHead(selected, 2, 2, 3);
  assert.deepEqual(blockIds, [
    [0, 3, 5],
    [0, 1, 7],
  ]);
  assert.equal(width, 3);
  // head 0: query 0 → {0, 3}, query 1 → {0, 5, 3}; head 1: query 0 → {0, 1}, query 1 → {7}
  assert.deepEqual(Array.from(mask), [1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1]);
});

test('KV cache: blocks hold appended keys head-major; compressed keys are window means, extended incrementally', () => {
  const cache = new SparseKvCache({ kvHeads: 2, headDim: 2, blockSize: 64, kernelSize: 32, kernelStride: 16 });
  const key = (t: number, h: number, i: number) => t * 10 + h * 3 + i;
  const append = (from: number, to: number) => {
    const k = new Float32Array((to - from) * 4);
    for (let t = from; t < to; t++) for (let h = 0; h < 2; h++) for (let i = 0; i < 2; i++) k[((t - from) * 2 + h) * 2 + i] = key(t, h, i);
    cache.append(
      k,
      k.map((x) => -x),
    );
  };
  append(0, 40);
  assert.equal(cache.compressedKeys().fine.length / 4, 1);
  append(40, 130);
  const { fine, coarse } = cache.compressedKeys();
  assert.equal(fine.length / 4, compressedCount(130, { window: 32, stride: 16 }));
  // entry j, head h, dim i = mean over t in [16j, 16j+31] of key = 10·(16j + 15.5) + 3h + i
  for (let j = 0; j < fine.length / 4; j++) assert.equal(fine[j * 4 + 3], 10 * (16 * j + 15.5) + 3 + 1);
  assert.equal(coarse.length / 4, 1);
  assert.equal(coarse[0], 10 * 63.5);
  // A head's block is [64, 2]: head 1, block 1, offset 2 → position 66
  const keys = new Float32Array(2 * 64 * 2);
  const values = new Float32Array(keys.length);
  cache.readBlocks(1, [-1, 1], keys, values);
  assert.equal(keys[(64 + 2) * 2 + 0], key(66, 1, 0));
  assert.equal(values[(64 + 2) * 2 + 1], -key(66, 1, 1));
  assert.equal(keys[0], 0, 'block id −1 is skipped');
  assert.deepEqual(Array.from(cache.rows(66, 67).keys), [key(66, 0, 0), key(66, 0, 1), key(66, 1, 0), key(66, 1, 1)]);
  assert.equal(cache.blockCount, 3);
  cache.truncate(50);
  assert.equal(cache.compressedKeys().fine.length / 4, 2);
});
