// Golden cases for where an inline completion stops (completion-scope-cases.json):
// each completion is streamed one character at a time; the case says what is kept
// and after how many characters that was known. Cutting a whole continuation
// (cutCompletion, for text a remote server generated) keeps the same.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { CompletionStopper, cutCompletion } from '../../engine/context/completion-scope.js';

interface ScopeCase {
  name: string;
  linePrefix: string;
  lineSuffix?: string;
  completion: string;
  maxLines?: number;
  maxLineChars?: number;
  kept: string;
  decidedAfter: number | null;
  /** A runaway line cut short. */
  cutShort?: boolean;
}

const cases: ScopeCase[] = JSON.parse(readFileSync(path.join(__dirname, 'completion-scope-cases.json'), 'utf8'));

for (const golden of cases) {
  test(`completion scope: ${golden.name}`, () => {
    const input = { linePrefix: golden.linePrefix, lineSuffix: golden.lineSuffix ?? '', maxLines: golden.maxLines ?? 8, maxLineChars: golden.maxLineChars };
    const stopper = new CompletionStopper(input);
    let end: number | undefined;
    let decidedAfter: number | null = null;
    for (let i = 0; i < golden.completion.length && end === undefined; i++) {
      end = stopper.push(golden.completion[i]);
      if (end !== undefined) decidedAfter = i + 1;
    }
    const kept = golden.completion.slice(0, end ?? golden.completion.length);
    assert.equal(kept, golden.kept);
    assert.equal(decidedAfter, golden.decidedAfter);
    assert.equal(cutCompletion(golden.completion, input), golden.kept, 'cut whole, as while streaming');
  });
}
