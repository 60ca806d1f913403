// Golden cases for the inline suggestion trimmer: inputs and expected outputs
// live in trim-cases.json; this runner only feeds them through.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trimCompletion } from '../../extension/completion/trim';

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
    const actual = trimCompletion({
      completion: golden.completion,
      linePrefix: golden.linePrefix,
      lineSuffix: golden.lineSuffix ?? '',
      nextLines: golden.nextLines ?? [],
      maxLines: golden.maxLines ?? 8,
    });
    assert.equal(actual, golden.expected);
  });
}
