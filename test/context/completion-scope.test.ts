// Golden cases for where an inline completion stops (completion-scope-cases.json):
// each completion is streamed one character at a time; the case says what is kept
// and after how many characters that was known. Where the engine's unit is the
// provider's (mid-line, blocks), stopping early must not change what it shows,
// unless a runaway line was cut short.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { CompletionStopper } from '../../engine/context/completion-scope.js';
import { trimCompletion } from '../../extension/completion/trim.js';

interface ScopeCase {
  name: string;
  linePrefix: string;
  lineSuffix?: string;
  completion: string;
  maxLines?: number;
  maxLineChars?: number;
  kept: string;
  decidedAfter: number | null;
  /** A runaway line cut short: the provider shows the start of what it would have. */
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
    const shown = (text: string) => trimCompletion({ completion: text, linePrefix: input.linePrefix, lineSuffix: input.lineSuffix, nextLines: [], maxLines: input.maxLines });
    if (!golden.cutShort && (stopper.scope === 'block' || input.lineSuffix.trim() !== '')) assert.equal(shown(kept), shown(golden.completion), 'the provider shows the same suggestion');
    else assert.ok(shown(golden.completion).startsWith(shown(kept)), 'a line completion shows the start of what the provider would');
  });
}
