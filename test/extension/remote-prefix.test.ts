// The remote backend's pure parts: the workspace prefix (engine's header format,
// engine's order, byte-stable while files do not change, an edit moves the file
// to the tail), the SSE parser on well-formed and broken streams, the request
// shapes, and the path:line mentions Find Where… offers for a remote answer.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { PromptFormat } from '../../engine/context/prompt-format.js';
import { byteLevelFallback } from '../../engine/model/tokenizer.js';
import { chatMessages, completionPrompt, mentionedSources, PREAMBLE } from '../../extension/remote/remote-backend.js';
import { normalizeBaseUrl, RemoteError, sseData } from '../../extension/remote/remote-client.js';
import { formatFile, planPrefix, WorkspacePrefix } from '../../extension/remote/workspace-prefix.js';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A workspace whose files have distinct, increasing mtimes (a.ts oldest), plus an ignored folder. */
function workspace(): string {
  const root = mkdtempSync(path.join(tmpdir(), 'panorama-prefix-'));
  dirs.push(root);
  mkdirSync(path.join(root, 'src'));
  mkdirSync(path.join(root, 'node_modules'));
  writeFileSync(path.join(root, '.gitignore'), 'node_modules/\n');
  writeFileSync(path.join(root, 'node_modules', 'dep.js'), 'module.exports = 1;\n');
  const files = ['src/a.ts', 'src/b.ts', 'c.md', 'src/d.ts'];
  files.forEach((file, index) => {
    writeFileSync(path.join(root, file), `// ${file}\nexport const v${index} = ${index};\n`);
    const when = new Date(Date.UTC(2026, 0, 1, 0, index));
    utimesSync(path.join(root, file), when, when);
  });
  utimesSync(path.join(root, '.gitignore'), new Date(Date.UTC(2025, 0, 1)), new Date(Date.UTC(2025, 0, 1)));
  return root;
}

test('the file header is what the engine writes for a model without <|file|> (PromptFormat plain-text fallback)', () => {
  const tokenizer = byteLevelFallback(300);
  const format = new PromptFormat(tokenizer);
  for (const [file, content] of [
    ['src/a.ts', 'const x = 1;\n'],
    ['docs/no newline.md', '# title'],
    ['e.txt', ''],
  ]) {
    assert.equal(formatFile(file, content), tokenizer.decode(format.file(file, content).ids), file);
  }
});

test('the prefix holds the workspace files in the engine order (stale first), ignored files left out', async () => {
  const root = workspace();
  const plan = await new WorkspacePrefix(root, { budgetChars: 100_000 }).current();
  assert.deepEqual(plan.files, ['.gitignore', 'src/a.ts', 'src/b.ts', 'c.md', 'src/d.ts']);
  assert.ok(plan.text.startsWith('\n### file: .gitignore\nnode_modules/\n\n### file: src/a.ts\n'));
  assert.ok(!plan.text.includes('dep.js'));
});

test('the prefix is byte-identical while files do not change, a touch included; an edit moves the file to the tail', async () => {
  const root = workspace();
  const prefix = new WorkspacePrefix(root, { budgetChars: 100_000 });
  const first = await prefix.current();
  prefix.markDirty();
  const again = await prefix.current();
  assert.equal(again.text, first.text);
  assert.equal(again.hash, first.hash);
  // a fresh instance on the same files builds the same bytes too (a reload of the window)
  assert.equal((await new WorkspacePrefix(root, { budgetChars: 100_000 }).current()).text, first.text);

  // same bytes, new mtime (a checkout, a save without changes): the order stays
  const now = new Date();
  utimesSync(path.join(root, 'src', 'a.ts'), now, now);
  prefix.markDirty();
  assert.equal((await prefix.current()).text, first.text);

  writeFileSync(path.join(root, 'src', 'b.ts'), '// src/b.ts\nexport const v1 = 42;\n');
  // without markDirty the cached plan stands (the file watcher is what marks it)
  assert.equal((await prefix.current()).text, first.text);
  prefix.markDirty();
  const edited = await prefix.current();
  assert.notEqual(edited.hash, first.hash);
  assert.deepEqual(edited.files, ['.gitignore', 'src/a.ts', 'c.md', 'src/d.ts', 'src/b.ts']);
  assert.ok(edited.text.endsWith(formatFile('src/b.ts', '// src/b.ts\nexport const v1 = 42;\n')));
  // everything before the edited file's old place is still a shared prefix for the server's cache
  const shared = formatFile('.gitignore', 'node_modules/\n') + formatFile('src/a.ts', '// src/a.ts\nexport const v0 = 0;\n');
  assert.ok(first.text.startsWith(shared) && edited.text.startsWith(shared));
});

test('a deleted file leaves the prefix, a new one joins it', async () => {
  const root = workspace();
  const prefix = new WorkspacePrefix(root, { budgetChars: 100_000 });
  await prefix.current();
  rmSync(path.join(root, 'c.md'));
  writeFileSync(path.join(root, 'src', 'e.ts'), 'export {};\n');
  prefix.markDirty();
  const plan = await prefix.current();
  assert.ok(!plan.files.includes('c.md'));
  assert.equal(plan.files.at(-1), 'src/e.ts');
});

test('a budget of 0 sends no files and no system message (for a server that holds the workspace itself)', async () => {
  const plan = await new WorkspacePrefix(workspace(), { budgetChars: 0 }).current();
  assert.deepEqual([plan.text, plan.files], ['', []]);
  assert.deepEqual(chatMessages(plan, { question: 'Why?' }), [{ role: 'user', content: 'Why?' }]);
  assert.equal(completionPrompt(plan, 'a.ts', 'let '), '\n### file: a.ts\nlet ');
});

test('over the budget, the stalest files give way (the engine layout rule, in characters)', () => {
  const file = (name: string, chars: number, editCount: number, firstSeenMs: number) => ({ path: name, text: 'x'.repeat(chars), editCount, firstSeenMs });
  const files = [file('old.ts', 500, 0, 1), file('mid.ts', 500, 0, 2), file('edited.ts', 500, 1, 0), file('new.ts', 100, 0, 3)];
  const budget = formatFile('edited.ts', 'x'.repeat(500)).length + formatFile('new.ts', 'x'.repeat(100)).length + formatFile('mid.ts', 'x'.repeat(500)).length;
  const plan = planPrefix(files, budget);
  assert.deepEqual(plan.files, ['mid.ts', 'new.ts', 'edited.ts']);
  assert.deepEqual(
    plan.excluded.map((entry) => entry.path),
    ['old.ts'],
  );
  assert.ok(plan.text.length <= budget);
});

test('requests: the prefix is the system message, the selection and the question the user message; completions continue after a file header', () => {
  const plan = planPrefix([{ path: 'a.ts', text: 'let a = 1;\n', editCount: 0, firstSeenMs: 0 }], 1_000);
  const messages = chatMessages(plan, { question: 'What is a?', selection: { path: 'a.ts', text: 'let a = 1;', startLine: 1 } });
  assert.deepEqual(messages[0], { role: 'system', content: PREAMBLE + plan.text });
  assert.equal(messages[1].role, 'user');
  assert.match(messages[1].content, /^Selected code \(a\.ts, from line 1\):\n```\nlet a = 1;\n```\n\nWhat is a\?$/);
  assert.equal(completionPrompt(plan, 'b.ts', 'const b = '), `${plan.text}\n### file: b.ts\nconst b = `);
});

test('mentions of workspace files in an answer become sources (path:line, ranges, unique base names)', () => {
  const known = ['engine/index/layout.ts', 'src/a.ts', 'test/a.ts', 'README.md'];
  const answer = 'See engine/index/layout.ts:47-52 and layout.ts:60; README.md explains it. a.ts:3 is ambiguous, src/a.ts:3 is not; nope.ts:1 is unknown; layout.ts:60 again.';
  assert.deepEqual(mentionedSources(answer, known), [
    { path: 'engine/index/layout.ts', startLine: 47, endLine: 52, weight: 0 },
    { path: 'engine/index/layout.ts', startLine: 60, endLine: 60, weight: 0 },
    { path: 'README.md', startLine: 1, endLine: 1, weight: 0 },
    { path: 'src/a.ts', startLine: 3, endLine: 3, weight: 0 },
  ]);
});

test('base URLs: /v1 is added to a bare origin; bad ones are refused with what to write', () => {
  assert.equal(normalizeBaseUrl('http://gpu-box:8000'), 'http://gpu-box:8000/v1');
  assert.equal(normalizeBaseUrl(' http://gpu-box:8000/v1/ '), 'http://gpu-box:8000/v1');
  assert.equal(normalizeBaseUrl('https://llm.example.com/openai/v1'), 'https://llm.example.com/openai/v1');
  for (const bad of ['', 'gpu-box:8000', 'ftp://gpu-box/v1', 'http://user:secret@gpu-box/v1']) {
    assert.throws(
      () => normalizeBaseUrl(bad),
      (error: unknown) => error instanceof RemoteError && error.kind === 'config' && /panorama\.remote\.baseUrl|Remote API Key/.test(error.message),
      bad,
    );
  }
});

async function collect(chunks: string[]): Promise<string[]> {
  async function* source(): AsyncGenerator<Uint8Array> {
    for (const chunk of chunks) yield new TextEncoder().encode(chunk);
  }
  const events: string[] = [];
  for await (const data of sseData(source())) events.push(data);
  return events;
}

test('SSE: events split across chunks, CRLF split between chunks, comments, multi-line data, a last event without a blank line', async () => {
  assert.deepEqual(await collect(['data: {"a"', ':1}\n\n: keep-alive\n\nda', 'ta: [DONE]\n\n']), ['{"a":1}', '[DONE]']);
  assert.deepEqual(await collect(['data: one\r', '\ndata: two\r\n\r\n', 'event: x\ndata:three']), ['one\ntwo', 'three']);
  assert.deepEqual(await collect(['id: 1\nretry: 10\n\n', 'data: é', '\n\n']), ['é']);
});
