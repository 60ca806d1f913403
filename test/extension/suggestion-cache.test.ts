import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SuggestionCache } from '../../extension/completion/cache.js';

test('typing through a suggestion reuses its rest', () => {
  const cache = new SuggestionCache();
  cache.remember({ documentKey: 'a.ts', prefix: 'const x = ', suffix: '\n', text: 'compute(1, 2);' });
  assert.equal(cache.lookup('a.ts', 'const x = ', '\n'), 'compute(1, 2);');
  assert.equal(cache.lookup('a.ts', 'const x = comp', '\n'), 'ute(1, 2);');
});

test('a diverging keystroke, another file or another suffix misses', () => {
  const cache = new SuggestionCache();
  cache.remember({ documentKey: 'a.ts', prefix: 'const x = ', suffix: '\n', text: 'compute(1, 2);' });
  assert.equal(cache.lookup('a.ts', 'const x = z', '\n'), undefined);
  assert.equal(cache.lookup('b.ts', 'const x = comp', '\n'), undefined);
  assert.equal(cache.lookup('a.ts', 'const x = comp', '\n}'), undefined);
  assert.equal(cache.lookup('a.ts', 'const x = compute(1, 2);', '\n'), undefined, 'fully typed: nothing left to show');
  assert.equal(cache.lookup('a.ts', 'const x', '\n'), undefined, 'deleting back is a new request');
});
