import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AdaptiveDebounce, DEFAULT_DEBOUNCE, sleepUnlessCancelled } from '../../extension/completion/debounce.js';

test('the base delay holds until a few keystrokes were seen', () => {
  const debounce = new AdaptiveDebounce();
  assert.equal(debounce.next(0), DEFAULT_DEBOUNCE.baseMs);
  assert.equal(debounce.next(50), DEFAULT_DEBOUNCE.baseMs);
});

test('fast typing shortens the wait, slow typing lengthens it, within bounds', () => {
  const fast = new AdaptiveDebounce();
  for (let t = 0; t <= 400; t += 40) fast.next(t);
  assert.equal(fast.delayMs(), DEFAULT_DEBOUNCE.minMs); // 40 ms gaps × 1.5 = 60 ms
  const slow = new AdaptiveDebounce();
  for (let t = 0; t <= 3_000; t += 300) slow.next(t);
  assert.equal(slow.delayMs(), DEFAULT_DEBOUNCE.maxMs);
  const medium = new AdaptiveDebounce();
  for (let t = 0; t <= 1_000; t += 100) medium.next(t);
  assert.equal(medium.delayMs(), 150);
});

test('a long pause is not counted as a typing interval', () => {
  const debounce = new AdaptiveDebounce();
  for (let t = 0; t <= 400; t += 100) debounce.next(t);
  debounce.next(60_000);
  assert.equal(debounce.delayMs(), 150);
});

function tokenSource() {
  const listeners = new Set<() => void>();
  const token = {
    isCancellationRequested: false,
    onCancellationRequested: (listener: () => void) => {
      listeners.add(listener);
      return { dispose: () => listeners.delete(listener) };
    },
  };
  return { token, cancel: () => ((token.isCancellationRequested = true), listeners.forEach((listener) => listener())) };
}

test('sleepUnlessCancelled ends early on cancellation, and at once for a cancelled token', async () => {
  const { token, cancel } = tokenSource();
  const started = Date.now();
  const sleeping = sleepUnlessCancelled(5_000, token);
  setTimeout(cancel, 20);
  assert.equal(await sleeping, false);
  assert.ok(Date.now() - started < 1_000);
  assert.equal(await sleepUnlessCancelled(5_000, token), false);
  assert.equal(await sleepUnlessCancelled(5, tokenSource().token), true);
});
