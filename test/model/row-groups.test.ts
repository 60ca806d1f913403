// The resident prefill's row groups and feeds (engine/model/row-groups.ts) against a
// plain Set-and-Map statement of the same rules, on random selections of the shapes the
// models have; and the int32 ⇄ int64 conversions they go through.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  perQueryFeeds,
  rowGroups,
  selectedIds,
  selectedRowGroups,
  unionFeeds,
  type ChunkSelection,
  type RowAttention,
  type RowGroupLimits,
} from '../../engine/model/row-groups.js';
import { i64, int64Data } from '../../engine/runtime/session.js';

/** A deterministic generator (mulberry32), so a failure reproduces. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** [Hk, rows, k] distinct block ids per row, some −1, from a few near-by blocks (as a real selection) or anywhere. */
function selection(rand: () => number, Hk: number, rows: number, k: number, blocks: number, local: boolean): Int32Array {
  const ids = new Int32Array(Hk * rows * k).fill(-1);
  for (let h = 0; h < Hk; h++) {
    for (let t = 0; t < rows; t++) {
      const chosen = new Set<number>();
      const want = Math.min(blocks, k - Math.floor(rand() * 3));
      while (chosen.size < want) chosen.add(local ? Math.min(blocks - 1, Math.floor(rand() * 8) + Math.floor((t * blocks) / rows / 2)) : Math.floor(rand() * blocks));
      [...chosen].forEach((block, j) => (ids[(h * rows + t) * k + j] = block));
    }
  }
  return ids;
}

/** The rules as first written: a Set of each head's union, grown row by row. */
function referenceGroups(chunk: ChunkSelection, limits: RowGroupLimits) {
  const { kvHeads: Hk, heads: H, blockSize: B, headDim, capacity, attentionBytes, rowAttention } = limits;
  const { rows, k, selected } = chunk;
  const unionBytes = (r: number, w: number) => H * r * w * B * 4;
  const perQueryBytes = (r: number) => Math.max(H, Hk * headDim) * r * k * B * 4;
  const groups: { from: number; to: number; blocks: number[][]; perQuery: boolean }[] = [];
  let from = 0;
  let union = Array.from({ length: Hk }, () => new Set<number>());
  const close = (to: number) => {
    const blocks = union.map((set) => [...set].sort((a, b) => a - b));
    const width = Math.max(1, ...blocks.map((l) => l.length));
    const unionWork = H * (to - from) * width * B + Hk * width * B * headDim;
    const perQueryWork = H * (to - from) * k * B + Hk * (to - from) * k * B * headDim;
    const unionFits = rowAttention !== 'per-row' && unionBytes(to - from, width) <= attentionBytes;
    const perRowFits = rowAttention !== 'union' && perQueryBytes(to - from) <= attentionBytes;
    const perQuery = rowAttention === 'per-row' || (rowAttention === 'auto' && (!unionFits || (perRowFits && perQueryWork < unionWork)));
    groups.push({ from, to, blocks, perQuery });
    from = to;
    union = Array.from({ length: Hk }, () => new Set<number>());
  };
  for (let t = 0; t < rows; t++) {
    const added = union.map((set, h) => {
      const fresh = new Set<number>();
      for (let j = (h * rows + t) * k; j < (h * rows + t + 1) * k; j++) if (selected![j] >= 0 && !set.has(selected![j])) fresh.add(selected![j]);
      return fresh;
    });
    const width = Math.max(1, ...union.map((set, h) => set.size + added[h].size));
    const r = t + 1 - from;
    const fits = width <= capacity && ((rowAttention !== 'per-row' && unionBytes(r, width) <= attentionBytes) || (rowAttention !== 'union' && perQueryBytes(r) <= attentionBytes));
    if (t > from && !fits) {
      close(t);
      t--;
      continue;
    }
    union.forEach((set, h) => added[h].forEach((b) => set.add(b)));
  }
  close(rows);
  return groups;
}

test('row groups equal the Set-based rules, for every form and budget, on local and scattered selections', () => {
  const rand = random(7);
  let compared = 0;
  for (const rowAttention of ['auto', 'union', 'per-row'] as RowAttention[]) {
    for (const [capacity, attentionBytes] of [
      [Infinity, 512 * 2 ** 20],
      [40, 2 ** 20],
      [24, 256 * 1024],
    ]) {
      for (const local of [true, false]) {
        const limits: RowGroupLimits = { kvHeads: 2, heads: 4, blockSize: 16, headDim: 8, capacity, attentionBytes, rowAttention };
        const chunk: ChunkSelection = { first: 512, rows: 96, k: 6, selected: selection(rand, 2, 96, 6, 40, local) };
        const got = rowGroups(chunk, limits);
        assert.deepEqual(got, referenceGroups(chunk, limits), `${rowAttention}, capacity ${capacity}, ${attentionBytes} B, ${local ? 'local' : 'scattered'}`);
        assert.equal(got[got.length - 1].to, 96);
        compared += got.length;
      }
    }
  }
  assert.ok(compared > 18 * 2, `${compared} groups: the budgets split chunks`);
});

test('a query that alone selects more blocks than the pool holds is refused with both numbers', () => {
  const chunk: ChunkSelection = { first: 0, rows: 1, k: 4, selected: Int32Array.of(0, 1, 2, 3) };
  assert.throws(
    () => rowGroups(chunk, { kvHeads: 1, heads: 1, blockSize: 16, headDim: 8, capacity: 3, attentionBytes: 2 ** 30, rowAttention: 'auto' }),
    /one query selected 4 blocks; the pool holds 3/,
  );
});

test("the feeds of both forms say which of the group's blocks each row selected, at their slots", () => {
  const rand = random(11);
  const [Hk, rows, k] = [2, 32, 5];
  const chunk: ChunkSelection = { first: 0, rows, k, selected: selection(rand, Hk, rows, k, 30, false) };
  const [group] = rowGroups(chunk, { kvHeads: Hk, heads: 2, blockSize: 16, headDim: 8, capacity: Infinity, attentionBytes: 2 ** 30, rowAttention: 'union' });
  const slots = group.blocks.map((list) => Int32Array.from(list, (block) => 1000 + block));
  const union = unionFeeds(chunk, group, slots);
  const perRow = perQueryFeeds(chunk, group, slots);
  for (let h = 0; h < Hk; h++) {
    const list = group.blocks[h];
    for (let t = 0; t < rows; t++) {
      const chosen = new Set([...chunk.selected!.subarray((h * rows + t) * k, (h * rows + t + 1) * k)].filter((b) => b >= 0));
      const masked = new Set(list.filter((_, i) => union.mask[(h * rows + t) * union.width + i] === 1));
      assert.deepEqual(masked, chosen, `union mask, head ${h} row ${t}`);
      for (let j = 0; j < k; j++) {
        const at = (h * rows + t) * k + j;
        const block = chunk.selected![(h * rows + t) * k + j];
        assert.equal(perRow.blockIds[at], block);
        assert.equal(perRow.slotIds[at], block < 0 ? 0 : 1000 + block, 'padding reads slot 0 (its keys masked)');
      }
    }
    list.forEach((block, i) => assert.equal(union.slotIds[h * union.width + i], 1000 + block));
  }
});

test('int32 ⇄ int64: selected ids read from the low words, −1 and large ids kept both ways', () => {
  const values = [0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 123456];
  const wide = BigInt64Array.from(values, (v) => BigInt(v));
  assert.deepEqual([...selectedIds(wide)], values);
  assert.deepEqual([...int64Data(i64(Int32Array.from(values)))], [...wide]);
  // A view into a larger buffer (an output tensor's data) reads from its own offset.
  const offset = new BigInt64Array(wide.buffer, 16, 3);
  assert.deepEqual([...selectedIds(offset)], values.slice(2, 5));
});

test("with the selection on the device the form follows the chunk's union width, and each call fits the score budget", () => {
  // The 9B's sparse shape at 128K: 32 heads, 2 KV heads of 128, blocks of 64, k = 64 + 32 local = 96 of 2,048 blocks.
  const limits: RowGroupLimits = { kvHeads: 2, heads: 32, blockSize: 64, headDim: 128, capacity: Infinity, attentionBytes: 512 * 2 ** 20, rowAttention: 'auto' };
  const narrow = selectedRowGroups(2048, 2048, 96, limits, 300);
  const wide = selectedRowGroups(2048, 2048, 96, limits, 2048);
  assert.ok(
    narrow.every((group) => !group.perQuery),
    'a narrow union attends as a union',
  );
  assert.ok(
    wide.every((group) => group.perQuery),
    'a union of every block attends per row',
  );
  assert.deepEqual(selectedRowGroups(2048, 2048, 96, limits), wide, 'no width known: every block');
  // A union call's scores: 32 heads × rows × 300 blocks × 64 keys × 4 bytes ≤ 512 MiB.
  const rowsPerCall = Math.floor((512 * 2 ** 20) / (32 * 300 * 64 * 4));
  assert.equal(narrow[0].to - narrow[0].from, rowsPerCall);
  assert.equal(narrow.length, Math.ceil(2048 / rowsPerCall));
  assert.deepEqual(narrow.at(-1), { from: (narrow.length - 1) * rowsPerCall, to: 2048, perQuery: false });
  // A width past the chunk's blocks (it cannot be) counts as every block; the forms asked for are kept.
  assert.deepEqual(selectedRowGroups(64, 100, 96, limits, 5000), selectedRowGroups(64, 100, 96, limits, 100));
  assert.ok(selectedRowGroups(64, 2048, 96, { ...limits, rowAttention: 'per-row' }, 10).every((group) => group.perQuery));
  assert.ok(selectedRowGroups(64, 2048, 96, { ...limits, rowAttention: 'union' }, 2048).every((group) => !group.perQuery));
});
