// Golden cases for what an inline suggestion shows of a raw continuation: cut where
// the engine's completion scope ends it (the one place that decides, used by the
// engine and the remote backend), then tidied for the editor by the provider.
// Inputs and expected outputs live in trim-cases.json; this runner only feeds them through.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { cutCompletion } from '../../engine/context/completion-scope.js';
import { tidySuggestion } from '../../extension/completion/trim.js';

interface TrimCase {
  name: string;
  linePrefix: string;
  lineSuffix?: string;
  completion: string;
  nextLines?: string[];
  maxLines?: number;
  expected: string;
}

const cases: TrimCase[] = JSON.parse(readFileSync(path.join(__dirname, 'trim-cases.json'), 'utf8'));

for (const golden of cases) {
  test(`trim: ${golden.name}`, () => {
    const lineSuffix = golden.lineSuffix ?? '';
    const cut = cutCompletion(golden.completion, { linePrefix: golden.linePrefix, lineSuffix, maxLines: golden.maxLines ?? 8 });
    assert.equal(tidySuggestion({ completion: cut, lineSuffix, nextLines: golden.nextLines ?? [] }), golden.expected);
  });
}

test('tidying keeps what the engine cut, apart from whitespace and repeats of the text around the cursor', () => {
  assert.equal(tidySuggestion({ completion: '\n  return 1;\n}', lineSuffix: '', nextLines: ['}'] }), '\n  return 1;');
  assert.equal(tidySuggestion({ completion: 'a, b)', lineSuffix: ') {', nextLines: [] }), 'a, b)', 'only the exact closing text is dropped');
  assert.equal(tidySuggestion({ completion: 'x\ny', lineSuffix: '', nextLines: [] }), 'x\ny');
});
