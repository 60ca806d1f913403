// The lock one model sequence is shared under: interactive work goes ahead of
// queued work and gets the lock at the holder's next yield; an aborted waiter
// leaves the queue at once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RequestLock } from '../../engine/context/request-lock.js';

/** A promise and the function that settles it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

test('interactive work runs before normal work queued earlier; each class keeps its arrival order', async () => {
  const lock = new RequestLock();
  const order: string[] = [];
  const holder = gate();
  const first = lock.run(() => holder.opened);
  const runs = [
    lock.run(async () => void order.push('normal 1')),
    lock.run(async () => void order.push('interactive 1'), { priority: 'interactive' }),
    lock.run(async () => void order.push('normal 2')),
    lock.run(async () => void order.push('interactive 2'), { priority: 'interactive' }),
  ];
  holder.open();
  await Promise.all([first, ...runs]);
  assert.deepEqual(order, ['interactive 1', 'interactive 2', 'normal 1', 'normal 2']);
});

test('a holder that yields lets waiting interactive work in, then resumes before queued normal work', async () => {
  const lock = new RequestLock();
  const order: string[] = [];
  const arrived = gate();
  const long = lock.run(async () => {
    order.push('long: step 1');
    await arrived.opened;
    assert.equal(lock.interactiveWaiting, true);
    await lock.yield();
    order.push('long: step 2');
    await lock.yield(); // nothing waits: returns at once
    order.push('long: step 3');
  });
  const normal = lock.run(async () => void order.push('normal'));
  const interactive = lock.run(async () => void order.push('interactive'), { priority: 'interactive' });
  arrived.open();
  await Promise.all([long, normal, interactive]);
  assert.deepEqual(order, ['long: step 1', 'interactive', 'long: step 2', 'long: step 3', 'normal']);
});

test('a waiter whose signal aborts leaves the queue at once and never runs', async () => {
  const lock = new RequestLock();
  const holder = gate();
  const first = lock.run(() => holder.opened);
  const controller = new AbortController();
  let ran = false;
  const waiting = lock.run(async () => void (ran = true), { priority: 'interactive', signal: controller.signal });
  assert.equal(lock.contended, true);
  controller.abort(new Error('superseded'));
  await assert.rejects(waiting, /superseded/);
  assert.equal(lock.interactiveWaiting, false);
  assert.equal(lock.contended, false);
  holder.open();
  await first;
  await lock.run(async () => undefined); // the lock is free again
  assert.equal(ran, false);
  await assert.rejects(
    lock.run(async () => undefined, { signal: controller.signal }),
    /superseded/,
    'an aborted signal is refused before queueing',
  );
});
