import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_BACKOFF, restartDelay } from '../../extension/engine/backoff.js';

test('restart delays double up to the cap, then restarts stop', () => {
  const policy = { ...DEFAULT_BACKOFF, initialMs: 100, maxMs: 500, maxAttempts: 5 };
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((attempt) => restartDelay(attempt, policy)),
    [100, 200, 400, 500, 500],
  );
  assert.equal(restartDelay(6, policy), undefined);
  assert.equal(restartDelay(0, policy), undefined);
});
