import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockPool } from '../../engine/kv/block-pool.js';

test('a block selected again keeps its slot; misses fill free slots first, then the least recently used', () => {
  const pool = new BlockPool(2, 3);
  const first = pool.place(0, [5, 9]);
  assert.deepEqual(first.slots, [0, 1]);
  assert.deepEqual(first.misses, [
    { block: 5, slot: 0 },
    { block: 9, slot: 1 },
  ]);
  const again = pool.place(0, [9, 5, 7]);
  assert.deepEqual(again.slots, [1, 0, 2]);
  assert.deepEqual(again.misses, [{ block: 7, slot: 2 }]);
  // 9 and 7 used now; 5 is the least recently used and gives its slot to 11.
  const evict = pool.place(0, [9, 7, 11]);
  assert.deepEqual(evict.slots, [1, 2, 0]);
  assert.deepEqual(evict.misses, [{ block: 11, slot: 0 }]);
  assert.deepEqual(
    pool.resident(0).sort((a, b) => a - b),
    [7, 9, 11],
  );
  assert.deepEqual(pool.resident(1), [], 'heads are independent');
  assert.equal(pool.hits, 4);
  assert.equal(pool.misses, 4);
  assert.equal(pool.hitRate, 0.5);
});

test('a step never evicts a block it also needs, and asking for more blocks than slots is an error', () => {
  const pool = new BlockPool(1, 4);
  pool.place(0, [1, 2, 3, 4]);
  // 1 and 2 are the oldest, but this step needs 1: the misses take the slots of 2 and 3.
  const step = pool.place(0, [1, 4, 8, 9]);
  const resident = new Set(pool.resident(0));
  for (const block of [1, 4, 8, 9]) assert.ok(resident.has(block), `block ${block} resident`);
  assert.equal(new Set(step.slots).size, 4, 'distinct slots');
  assert.throws(() => pool.place(0, [1, 2, 3, 4, 5]), /5 blocks requested at once/);
  assert.throws(() => new BlockPool(1, 0), /at least one slot/);
});

test('insert places a device-made block without counting a miss', () => {
  const pool = new BlockPool(1, 2);
  const slot = pool.insert(0, 3);
  assert.equal(pool.misses, 0);
  assert.deepEqual(pool.place(0, [3]), { slots: [slot], misses: [] });
  assert.equal(pool.insert(0, 3), slot, 'inserting a resident block keeps its slot');
});
