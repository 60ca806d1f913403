import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isRelativeWorkspacePath, LIMITS, parseWebviewMessage } from '../../webview/protocol.js';

const chip = { id: 'sel:src/a.ts:1-2', kind: 'selection', path: 'src/a.ts', startLine: 1, endLine: 2, label: 'a.ts:1-2' };

test('well-formed webview messages are accepted and typed', () => {
  assert.deepEqual(parseWebviewMessage({ type: 'ready' }), { type: 'ready' });
  assert.deepEqual(parseWebviewMessage({ type: 'ask', question: 'why?', context: [chip] }), { type: 'ask', question: 'why?', context: [chip] });
  assert.deepEqual(parseWebviewMessage({ type: 'stop', requestId: 'r1' }), { type: 'stop', requestId: 'r1' });
  assert.deepEqual(parseWebviewMessage({ type: 'openSource', path: 'src/a.ts', line: 3 }), { type: 'openSource', path: 'src/a.ts', line: 3 });
  assert.deepEqual(parseWebviewMessage({ type: 'insertCode', code: 'x()' }), { type: 'insertCode', code: 'x()' });
});

test('unknown types and non-objects are rejected', () => {
  for (const raw of [null, 'ready', 42, [], {}, { type: 'eval', code: '1' }, { type: 'READY' }]) assert.equal(parseWebviewMessage(raw), undefined, JSON.stringify(raw));
});

test('paths that leave the workspace are rejected', () => {
  for (const path of ['../etc/passwd', 'src/../../x', '/etc/passwd', 'C:/Windows', 'src\\a.ts', '', 'a//b', 'a\0b']) {
    assert.equal(isRelativeWorkspacePath(path), false, path);
    assert.equal(parseWebviewMessage({ type: 'openSource', path, line: 1 }), undefined, path);
    assert.equal(parseWebviewMessage({ type: 'ask', question: 'q', context: [{ ...chip, path }] }), undefined, path);
  }
  assert.equal(isRelativeWorkspacePath('src/..hidden/a.ts'), true);
});

test('fields of the wrong type or out of bounds are rejected', () => {
  assert.equal(parseWebviewMessage({ type: 'ask', question: '   ', context: [] }), undefined);
  assert.equal(parseWebviewMessage({ type: 'ask', question: 'x'.repeat(LIMITS.questionChars + 1), context: [] }), undefined);
  assert.equal(parseWebviewMessage({ type: 'ask', question: 'q', context: Array(LIMITS.chips + 1).fill(chip) }), undefined);
  assert.equal(parseWebviewMessage({ type: 'ask', question: 'q', context: [{ ...chip, startLine: 5, endLine: 2 }] }), undefined);
  assert.equal(parseWebviewMessage({ type: 'openSource', path: 'a.ts', line: 0 }), undefined);
  assert.equal(parseWebviewMessage({ type: 'openSource', path: 'a.ts', line: 1.5 }), undefined);
  assert.equal(parseWebviewMessage({ type: 'copyCode', code: 7 }), undefined);
  assert.equal(parseWebviewMessage({ type: 'stop', requestId: 'x'.repeat(LIMITS.idChars + 1) }), undefined);
});

test('extra fields do not pass through', () => {
  assert.deepEqual(parseWebviewMessage({ type: 'ready', injected: true }), { type: 'ready' });
  const parsed = parseWebviewMessage({ type: 'ask', question: 'q', context: [{ ...chip, text: 'smuggled' }] });
  assert.ok(parsed?.type === 'ask');
  assert.equal('text' in parsed.context[0], false);
});

test('"Show what it read" carries a request id, and nothing else gets through', () => {
  assert.deepEqual(parseWebviewMessage({ type: 'showRead', requestId: 'r1' }), { type: 'showRead', requestId: 'r1' });
  for (const requestId of ['', 7, 'x'.repeat(LIMITS.idChars + 1)]) assert.equal(parseWebviewMessage({ type: 'showRead', requestId }), undefined);
});
