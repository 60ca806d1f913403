// Inline completion on the shipped default model (its FIM tokens, real onnxruntime
// sessions) over a workspace past dense_len, as a real one is: what is fed per
// request (typing on, a backspace, the client's sliding window, the suffix cap),
// that cached and uncached computations agree, where generation stops, and that a
// completion neither waits out an answer or a file being encoded nor disturbs them.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { generate } from '../../engine/model/generation.js';
import { StartsWith, healPrompt } from '../../engine/model/token-healing.js';
import { WorkspaceContext, type ContextFile } from '../../engine/context/workspace-context.js';
import { inlineForm } from '../../engine/context/completion.js';

const MODEL = path.resolve(__dirname, '../../models/panorama-code-13m');
let model: SalaModel;
let tokenizer: Tokenizer;

before(async () => {
  model = await SalaModel.load(MODEL);
  tokenizer = await loadTokenizer(MODEL, model.config.vocabSize);
});

function file(name: string, text: string): ContextFile {
  return { path: name, text, contentHash: createHash('sha256').update(text).digest('hex'), mtimeMs: 0 };
}

function source(n: number, functions: number): string {
  return Array.from(
    { length: functions },
    (_, i) =>
      `export function scale${n}_${i}(values: number[], factor: number): number[] {\n  const out = values.map((v) => v * factor + ${i});\n  return out.filter((v) => v > ${n});\n}\n`,
  ).join('\n');
}

/** About 2,600 tokens: past dense_len (2,048), so every request runs the sparse path as in a real workspace. */
const files = [file('src/a.ts', source(1, 14)), file('src/b.ts', source(2, 14)), file('src/c.ts', source(3, 14))];
const editing = 'src/d.ts';
const before1 = `${source(4, 6)}\nexport function total(values: number[]): number {\n  let sum = 0;\n  for (const v of values) sum += v`;
const after1 = ';\n  return sum;\n}\n\nexport function mean(values: number[]): number {\n  return total(values) / values.length;\n}\n';

async function workspace(): Promise<WorkspaceContext> {
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(files);
  assert.ok(context.stats().sequenceTokens > model.config.sparse.denseLen);
  return context;
}

async function collect(stream: AsyncGenerator<string, unknown>): Promise<string> {
  let text = '';
  for (let next = await stream.next(); !next.done; next = await stream.next()) text += next.value;
  return text;
}

test('typing on feeds only the last few prefix tokens; the suggestion equals a cold start on a fresh context', async () => {
  const context = await workspace();
  const first = await context.complete(editing, before1, after1);
  assert.equal(first.breakdown.cache, 'cold');
  assert.equal(first.reusedTokens, 0);
  const typed = `${before1} * 2`;
  const warm = await context.complete(editing, typed, after1);
  assert.equal(warm.breakdown.cache, 'warm');
  assert.ok(warm.reusedTokens >= first.breakdown.prefixTokens - 8, `reused ${warm.reusedTokens} of the ${first.breakdown.prefixTokens} fed before`);
  assert.ok(warm.breakdown.prefixTokens <= 8, `fed ${warm.breakdown.prefixTokens} prefix tokens`);
  assert.equal(warm.fedTokens, warm.breakdown.prefixTokens + warm.breakdown.suffixTokens + 2, 'the prefix tail, the suffix and the two FIM tokens');
  const cold = await (await workspace()).complete(editing, typed, after1);
  assert.equal(cold.breakdown.cache, 'cold');
  assert.equal(warm.text, cold.text);
});

test('a backspace continues from a checkpoint inside what the prefix still shares', async () => {
  const context = await workspace();
  await context.complete(editing, before1, after1);
  const shorter = before1.slice(0, before1.length - 40);
  const back = await context.complete(editing, shorter, after1);
  assert.equal(back.breakdown.cache, 'warm');
  assert.ok(back.breakdown.prefixTokens <= 64 + 8, `fed ${back.breakdown.prefixTokens} prefix tokens`);
  const cold = await (await workspace()).complete(editing, shorter, after1);
  assert.equal(back.text, cold.text);
});

test("a client window that slides with the cursor keeps the restatement's start: the state is reused", async () => {
  const context = await workspace();
  const long = `${source(5, 48)}\nexport function last(values: number[]) {\n  return values[values`;
  const window = (text: string) => text.slice(Math.max(0, text.length - 6000));
  assert.ok(long.length > 6000);
  const first = await context.complete(editing, window(long), after1);
  // restated from a line start at most PREFIX_CHARS (1,000) back, not the whole 6,000-character window
  assert.ok(first.breakdown.prefixTokens <= 1 + context.format.text(long.slice(-1000)).length, `fed ${first.breakdown.prefixTokens}`);
  for (const typed of ['.', '.l', '.le']) {
    const next = await context.complete(editing, window(long + typed), after1);
    assert.equal(next.breakdown.cache, 'warm');
    assert.ok(next.breakdown.prefixTokens <= 8, `after "${typed}": fed ${next.breakdown.prefixTokens} prefix tokens`);
  }
});

test('a superseded request goes on building the prefix state while nothing else waits: the next request finds it built', async () => {
  const context = await workspace();
  const long = `${source(5, 48)}\nexport function last(values: number[]) {\n  return values[values`;
  const controller = new AbortController();
  const superseded = context.complete(editing, long.slice(-6000), after1, { signal: controller.signal });
  await new Promise((resolve) => setTimeout(resolve, 20));
  controller.abort(new Error('superseded'));
  await assert.rejects(superseded, /superseded/);
  const next = await context.complete(editing, `${long}.`.slice(-6000), after1);
  assert.equal(next.breakdown.cache, 'warm');
  assert.ok(next.breakdown.prefixTokens <= 8, `fed ${next.breakdown.prefixTokens} prefix tokens`);
});

test('the suffix restated is the rest of the line and the next line, at most 24 tokens', async () => {
  const context = await workspace();
  const result = await context.complete(editing, before1, after1);
  assert.equal(result.breakdown.suffixTokens, context.format.text(';\n  return sum;\n').length);
  const longLine = ` + ${Array.from({ length: 40 }, (_, i) => `values[${i}]`).join(' + ')};\n  return sum;\n`;
  const capped = await context.complete(editing, before1, longLine);
  assert.equal(capped.breakdown.suffixTokens, 24);
});

test('mid-line the suggestion is the rest of the line; it equals plain generation over the restated prompt, cut at the newline', async () => {
  const context = await workspace();
  const prefix = `${before1};\n  return Math.max(sum, `;
  const suffix = ');\n}\n\nexport function mean(values: number[]): number {\n  return 0;\n}\n';
  const deltas: string[] = [];
  const result = await context.complete(editing, prefix, suffix, { maxTokens: 24, onDelta: (delta) => deltas.push(delta) });
  assert.equal(result.breakdown.scope, 'line');
  assert.ok(!result.text.includes('\n'), JSON.stringify(result.text));
  assert.equal(deltas.join(''), result.text, 'what was streamed is the suggestion');
  // uncached: the whole prompt in one generation on a fresh context
  const fresh = await workspace();
  const f = fresh.format;
  const prompt = [...f.fimStart(editing), ...f.text(prefix), ...f.fimEndIds(f.text(');\n}\n'))];
  const reference = await collect(generate(model, tokenizer, prompt, { sequence: fresh.sequence, maxTokens: 24, stop: ['\n'], stopIds: f.stopIds }));
  assert.equal(result.text, reference);
});

test('with no code after the cursor on its line, the prefix is continued with its last token healed; it equals plain generation over the healed prompt', async () => {
  const context = await workspace();
  const head = `${source(4, 6)}\nexport function twice(values: number[]): number[] {\n`;
  const result = await context.complete(editing, `${head}  return scale4_2(`, '\n}\n', { maxTokens: 24 });
  assert.equal(result.breakdown.form, 'continued');
  assert.equal(result.breakdown.suffixTokens, 0);
  // The file's six scale4_ functions all take (values, factor): the call is finished from them.
  assert.equal(result.text, 'values, factor);');
  // uncached: the header, the prefix less its last token, generation held to start with that token's text
  const fresh = await workspace();
  const f = fresh.format;
  const { ids, healed } = healPrompt([...f.fimStart(editing), ...f.text(`${head}  return scale4_2(`)], tokenizer);
  assert.equal(healed, '(');
  const reference = await collect(
    generate(model, tokenizer, ids, { sequence: fresh.sequence, maxTokens: 24, stop: ['\n'], stopIds: f.prefixStopIds, constraint: new StartsWith(healed, tokenizer) }),
  );
  assert.equal(result.text, reference.slice(healed.length));
  // Cut after a space, the healed token is the space: the model writes the word that spans the cut.
  const spaced = await context.complete(editing, `${head}  return `, '\n}\n', { maxTokens: 24 });
  assert.equal(spaced.breakdown.cache, 'warm');
  assert.ok(/^\S/.test(spaced.text), JSON.stringify(spaced.text));
  // Code after the cursor keeps fill-in-the-middle.
  const inside = await context.complete(editing, `${head}  return scale4_2(`, ');\n}\n', { maxTokens: 24 });
  assert.equal(inside.breakdown.form, 'fim');
});

test('form asks for a form: fim at a line end restates the suffix and equals plain FIM generation; continued mid-line feeds no suffix', async () => {
  assert.equal(inlineForm('  return f(', ''), 'continued');
  assert.equal(inlineForm('  return f(', '  '), 'continued');
  assert.equal(inlineForm('  return f(', ');'), 'fim');
  assert.equal(inlineForm('    ', ''), 'continued', 'after indentation, as after code');
  assert.equal(inlineForm('', '\n'), 'fim', 'column 0 is filled in before the next line');
  assert.equal(inlineForm('', ''), 'fim');
  assert.equal(inlineForm('x', ');', 'continued'), 'continued');
  assert.equal(inlineForm('x', '', 'fim'), 'fim');
  const context = await workspace();
  const head = `${source(4, 6)}\nexport function twice(values: number[]): number[] {\n`;
  const filled = await context.complete(editing, `${head}  return scale4_2(`, '\n}\n', { maxTokens: 24, form: 'fim' });
  assert.equal(filled.breakdown.form, 'fim');
  assert.equal(filled.breakdown.suffixTokens, context.format.text('\n}\n').length);
  const fresh = await workspace();
  const f = fresh.format;
  const prompt = [...f.fimStart(editing), ...f.text(`${head}  return scale4_2(`), ...f.fimEndIds(f.text('\n}\n'))];
  const reference = await collect(generate(model, tokenizer, prompt, { sequence: fresh.sequence, maxTokens: 24, stop: ['\n'], stopIds: f.stopIds }));
  assert.equal(filled.text, reference);
  const continued = await context.complete(editing, `${head}  return scale4_2(`, ');\n}\n', { maxTokens: 24, form: 'continued' });
  assert.equal(continued.breakdown.form, 'continued');
  assert.equal(continued.breakdown.suffixTokens, 0);
});

test('after a blank line the healed token holds both newlines; the suggestion is the next line, not cut at once by the blank-line stop', async () => {
  const context = await workspace();
  const prefix = `${source(4, 6)}\n`;
  assert.ok(prefix.endsWith('}\n\n'));
  const { healed } = healPrompt([...context.format.fimStart(editing), ...context.format.text(prefix)], tokenizer);
  assert.ok(healed.endsWith('\n\n'), JSON.stringify(healed));
  // Column 0 is filled in by default (inlineForm); continued, as asked here, the healed token is what this checks.
  const result = await context.complete(editing, prefix, '', { maxTokens: 24, maxLines: 1, form: 'continued' });
  assert.equal(result.breakdown.form, 'continued');
  // The next function's line, whole (the new weights number it 5 rather than 6): not cut to nothing.
  assert.match(result.text, /^export function scale4_\d\(values: number\[\], factor: number\): number\[\] \{$/);
});

test('on an empty line the completion is a block of at most maxLines lines; what is streamed is the suggestion', async () => {
  const context = await workspace();
  const deltas: string[] = [];
  const result = await context.complete(editing, `${before1};\n  `, '\n  return sum;\n}\n', { maxLines: 2, onDelta: (delta) => deltas.push(delta) });
  assert.equal(result.breakdown.scope, 'block');
  assert.ok(result.text.split('\n').length <= 2, JSON.stringify(result.text));
  assert.equal(deltas.join(''), result.text);
});

test('an API completion (inline: false) restates the prompt whole and equals plain generation after the context', async () => {
  const context = await workspace();
  const result = await context.complete('untitled', before1, after1, { inline: false, maxTokens: 12 });
  assert.equal(result.breakdown.scope, 'free');
  assert.equal(result.breakdown.suffixTokens, context.format.text(after1).length);
  const fresh = await workspace();
  const f = fresh.format;
  const prompt = [...f.fimStart('untitled'), ...f.text(before1), ...f.fimEnd(after1)];
  const reference = await collect(generate(model, tokenizer, prompt, { sequence: fresh.sequence, maxTokens: 12, stop: ['\n\n'], stopIds: f.stopIds }));
  assert.equal(result.text, reference);
});

test('a completion sent while an answer is being written runs at its next token; neither result changes', async () => {
  const context = await workspace();
  const events: string[] = [];
  const stream = context.ask('What does scale2_3 return?', { maxTokens: 48 });
  const first = await stream.next();
  assert.equal(first.done, false);
  const completion = context.complete(editing, before1, after1).then((r) => {
    events.push('completed');
    return r;
  });
  let answer = typeof first.value === 'string' ? first.value : '';
  for (let next = await stream.next(); !next.done; next = await stream.next()) answer += next.value;
  events.push('answered');
  const completed = await completion;
  assert.deepEqual(events, ['completed', 'answered']);
  const alone = await workspace();
  assert.equal(answer, await collect(alone.ask('What does scale2_3 return?', { maxTokens: 48 })));
  assert.equal(completed.text, (await alone.complete(editing, before1, after1)).text);
});

test('a completion after other work continues from its set-aside state; an edit makes it start over', async () => {
  const context = await workspace();
  await context.complete(editing, before1, after1);
  await collect(context.ask('Where is scale1_2 defined?', { maxTokens: 8 }));
  const typed = `${before1} * 3`;
  const restored = await context.complete(editing, typed, after1);
  assert.equal(restored.breakdown.cache, 'restored');
  assert.ok(restored.breakdown.prefixTokens <= 8);
  assert.equal(restored.text, (await (await workspace()).complete(editing, typed, after1)).text);
  await context.update([file('src/e.ts', source(6, 2))]);
  const after = await context.complete(editing, `${typed}4`, after1);
  assert.equal(after.breakdown.cache, 'cold');
});

test('a completion sent while a file is encoded gets in between its pieces; the file is encoded exactly as without it', async () => {
  const big = file('src/big.ts', source(7, 24));
  const context = await workspace();
  const events: string[] = [];
  const encoding = context.update([big]).then(() => events.push('encoded'));
  await new Promise((resolve) => setTimeout(resolve, 50));
  const completion = context.complete(editing, before1, after1).then((r) => {
    events.push('completed');
    return r;
  });
  await Promise.all([encoding, completion]);
  assert.deepEqual(events, ['completed', 'encoded']);
  const reference = await workspace();
  await reference.update([big]);
  const span = context.span('src/big.ts');
  const expected = reference.span('src/big.ts');
  assert.ok(span && expected);
  assert.deepEqual([span.start, span.end], [expected.start, expected.end]);
  assert.deepEqual(context.sequence.tokens.slice(0, span.end), reference.sequence.tokens.slice(0, expected.end));
  for (const [layer, cache] of context.sequence.sparse) {
    const rows = cache.rows(span.start, span.end);
    const want = reference.sequence.sparse.get(layer)?.rows(span.start, span.end);
    assert.ok(want);
    assert.ok(rows.keys.every((v, i) => v === want.keys[i]) && rows.values.every((v, i) => v === want.values[i]), `layer ${layer}: K/V of the file differ`);
  }
  const lightning = await context.withState(async (state) => state.end.lightning);
  const wanted = await reference.withState(async (state) => state.end.lightning);
  for (const [layer, state] of lightning) {
    const want = wanted.get(layer);
    assert.ok(want && state.every((v, i) => v === want[i]), `lightning layer ${layer} differs`);
  }
});

test('cancelling a completion that waits in the queue answers at once and frees its place', async () => {
  const context = await workspace();
  const running = context.complete('untitled', before1, '', { inline: false, maxTokens: 160, stop: [] });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const controller = new AbortController();
  const queued = context.complete(editing, before1, after1, { signal: controller.signal });
  const cancelledAt = performance.now();
  controller.abort(new Error('superseded'));
  await assert.rejects(queued, /superseded/);
  const rejectedAfter = performance.now() - cancelledAt;
  let runningDone = false;
  void running.then(() => (runningDone = true));
  assert.ok(rejectedAfter < 50 && !runningDone, `rejected after ${rejectedAfter.toFixed(0)} ms, while the first still ran`);
  // the next request takes the lock after the running one, as if the cancelled one had never queued
  const next = await context.complete(editing, before1, after1);
  assert.ok(runningDone);
  assert.equal(next.text, (await (await workspace()).complete(editing, before1, after1)).text);
});
