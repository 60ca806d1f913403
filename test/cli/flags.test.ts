// The one flag parser every command uses: an integer is decimal digits, and a bad
// value is a usage error that names the flag and what was given.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs } from 'node:util';
import { integerFlag, isUsageError, numberFlag, stringFlag, UsageError } from '../../engine/cli/flags.js';

test('integerFlag reads decimal integers, signs and surrounding spaces included', () => {
  assert.equal(integerFlag({ n: '42' }, 'n', 0), 42);
  assert.equal(integerFlag({ n: ' 7 ' }, 'n', 0), 7);
  assert.equal(integerFlag({ n: '-3' }, 'n', -10), -3);
  assert.equal(integerFlag({ n: '+5' }, 'n', 0), 5);
  assert.equal(integerFlag({ n: '0' }, 'n', 0), 0);
  assert.equal(integerFlag({}, 'n', 0), undefined);
});

test('integerFlag refuses what is not written as an integer, naming the flag and the value', () => {
  for (const raw of ['', ' ', 'ten', '1.5', '1e3', '0x10', '12abc', 'Infinity', '9007199254740993']) {
    assert.throws(
      () => integerFlag({ 'max-tokens': raw }, 'max-tokens', 0),
      (err: unknown) => err instanceof UsageError && err.message === `--max-tokens must be an integer ≥ 0, got "${raw}"`,
      `"${raw}" is not an integer`,
    );
  }
});

test('integerFlag enforces the range and says it', () => {
  assert.throws(() => integerFlag({ budget: '0' }, 'budget', 1), /--budget must be an integer ≥ 1, got "0"/);
  assert.throws(() => integerFlag({ port: '70000' }, 'port', 0, 65535), /--port must be an integer from 0 to 65535, got "70000"/);
  assert.equal(integerFlag({ port: '65535' }, 'port', 0, 65535), 65535);
});

test('numberFlag reads finite numbers and refuses the rest', () => {
  assert.equal(numberFlag({ t: '0.8' }, 't'), 0.8);
  assert.equal(numberFlag({ t: '1e-2' }, 't'), 0.01);
  for (const raw of ['', 'warm', 'Infinity', 'NaN']) assert.throws(() => numberFlag({ t: raw }, 't'), new RegExp(`--t must be a number, got "${raw}"`));
});

test('stringFlag and isUsageError: parseArgs mistakes count as usage errors too', () => {
  assert.equal(stringFlag({ s: 'x' }, 's'), 'x');
  assert.equal(stringFlag({ s: true }, 's'), undefined);
  let parseError: unknown;
  try {
    parseArgs({ args: ['--nope'], options: {} });
  } catch (err) {
    parseError = err;
  }
  assert.ok(isUsageError(parseError), 'an unknown flag is a usage error');
  assert.ok(isUsageError(new UsageError('x')));
  assert.ok(!isUsageError(new Error('disk full')));
});
