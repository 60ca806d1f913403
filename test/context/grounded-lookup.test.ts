// Grounded lookups: which questions are lookups, which lines an answer may give, and
// that decoding held by LineChoice can only spell those lines, whatever the logits
// prefer (the shipped tokenizer, greedy over a preference the constraint has to override).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { LineChoice, candidateLines, canonicalQuestion, inCode, lookupConstraint, notFoundAnswer, parseLookup } from '../../engine/context/grounded-lookup.js';

const MODEL = path.resolve(__dirname, '../../models/panorama-code-13m');
const END = 7;
let tokenizer: Tokenizer;

before(async () => {
  tokenizer = await loadTokenizer(MODEL, 8192);
});

test('lookups are recognised in the trained form and as people type them; other questions are not', () => {
  assert.deepEqual(parseLookup('Where is `parse_args` defined?'), { name: 'parse_args', kind: 'defined' });
  assert.deepEqual(parseLookup('where is BlockPool declared'), { name: 'BlockPool', kind: 'defined' });
  assert.deepEqual(parseLookup('  Where is `os.path.join` used? '), { name: 'os.path.join', kind: 'used' });
  assert.deepEqual(parseLookup('Where is $store called?'), { name: '$store', kind: 'used' });
  assert.equal(parseLookup('Where are retries scheduled?'), undefined);
  assert.equal(parseLookup('Where is `x` defined and why?'), undefined);
  assert.equal(parseLookup('What does `f` return?'), undefined);
  assert.equal(canonicalQuestion({ name: 'BlockPool', kind: 'defined' }), 'Where is `BlockPool` defined?');
});

test('candidate lines: whole-word occurrences, trimmed and distinct; a use is not a definition', () => {
  const files = [
    ['class Pool:', '    def take(self):', '        return Pool()', 'pool = Pool()', 'PoolSize = 3', '    pool = Pool()'],
    ['import { Pool } from "./pool";', 'export const Pool = 1;', 'x'],
  ];
  assert.deepEqual(candidateLines(files, { name: 'Pool', kind: 'defined' }), [
    'class Pool:',
    'export const Pool = 1;',
    'import { Pool } from "./pool";',
    'pool = Pool()',
    'return Pool()',
  ]);
  assert.deepEqual(candidateLines(files, { name: 'Pool', kind: 'used' }), ['import { Pool } from "./pool";', 'pool = Pool()', 'return Pool()']);
  assert.deepEqual(candidateLines(files, { name: 'Poo', kind: 'used' }), []);
  // Only in a string or a comment: not offered while a line has the name as code.
  const mentions = [
    'def retry(action, attempts=3):',
    'log(`too many requests; retry shortly`)',
    '# retry with a longer delay',
    '// retry() is called by the queue',
    ' * @param retry how often',
    "raise ValueError('retry failed')",
    'this.#retry = 3;',
  ];
  assert.deepEqual(candidateLines([mentions], { name: 'retry', kind: 'defined' }), ['def retry(action, attempts=3):', 'this.#retry = 3;']);
  assert.deepEqual(
    candidateLines([mentions.slice(1, 6)], { name: 'retry', kind: 'defined' }),
    [...mentions.slice(1, 6).map((l) => l.trim())].sort(),
    'mentions alone are still offered',
  );
  assert.ok(inCode('x = "a\\"" + retry', 'retry'), 'an escaped quote does not end the string early');
  assert.ok(!inCode('x = "retry" # retry', 'retry'));
  assert.ok(inCode('y = retry # again', 'retry'));
  assert.ok(inCode('*rest, last = retry()', 'retry'), 'Python unpacking is code, not a comment line');
  assert.ok(!inCode('*/ retry', 'retry'));
  // too long to be an answer line
  assert.deepEqual(candidateLines([[`f(${'a'.repeat(200)}, Pool)`]], { name: 'Pool', kind: 'used' }), []);
});

/** Greedy decoding through the constraint from logits that prefer the tokens of `wanted`, then anything else by id. */
function decodeWith(choice: LineChoice, wanted: string, maxSteps = 80): string {
  const preferred = new Set(tokenizer.encode(wanted, { addSpecialTokens: false }));
  const generated: number[] = [];
  for (let step = 0; step < maxSteps; step++) {
    const logits = new Float32Array(8192).map((_, id) => (preferred.has(id) ? 5 : 0) - id * 1e-6);
    choice.mask(logits, generated);
    let best = 0;
    for (let id = 1; id < logits.length; id++) if (logits[id] > logits[best]) best = id;
    assert.ok(Number.isFinite(logits[best]), `step ${step}: the constraint left no token`);
    if (best === END || best === 0) break;
    generated.push(best);
  }
  return tokenizer.decode(generated);
}

test('a held answer is one candidate line whatever the logits prefer, and ends there', () => {
  const candidates = ['def take(self, n: int) -> list:', 'class TakePool(Pool):', 'take = make_take()'];
  const choice = new LineChoice(candidates, tokenizer, [0, END]);
  // The logits want a line that is not there; the answer is still one of the candidates.
  const answer = decodeWith(choice, 'def take(self):\n    pass');
  assert.ok(candidates.includes(answer), JSON.stringify(answer));
  assert.equal(decodeWith(choice, 'class TakePool(Pool):'), 'class TakePool(Pool):');
});

test('a use answer lists up to three candidate lines, one per line', () => {
  const candidates = ['a = take(1)', 'b = take(2)', 'c = take(3)', 'd = take(4)'];
  const choice = lookupConstraint({ name: 'take', kind: 'used' }, candidates, tokenizer, [0, END]);
  const answer = decodeWith(choice, 'a = take(1)\nb = take(2)\nc = take(3)\nd = take(4)\n');
  const lines = answer.split('\n');
  assert.ok(lines.length >= 1 && lines.length <= 3, JSON.stringify(answer));
  for (const line of lines) assert.ok(candidates.includes(line), JSON.stringify(line));
  // A line is given once, however much the logits want it again.
  const once = decodeWith(lookupConstraint({ name: 'take', kind: 'used' }, candidates, tokenizer, [0, END]), 'a = take(1)\na = take(1)\na = take(1)\n');
  const given = once.split('\n');
  assert.equal(new Set(given).size, given.length, JSON.stringify(once));
  assert.equal(given[0], 'a = take(1)');
});

test('a name with no candidate line can only be answered not found', () => {
  const choice = lookupConstraint({ name: 'frobnicate', kind: 'defined' }, [], tokenizer, [0, END]);
  assert.equal(decodeWith(choice, 'def frobnicate():'), notFoundAnswer('frobnicate'));
});
