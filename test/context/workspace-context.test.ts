// The workspace context on the fixture model: log-structured updates, compaction,
// questions with sources, completions with a reused prefix state.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { WorkspaceContext, type ContextFile } from '../../engine/context/workspace-context.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';

let model: SalaModel;
let tokenizer: Tokenizer;

before(async () => {
  model = await SalaModel.load(FIXTURE);
  tokenizer = await loadTokenizer(FIXTURE, model.config.vocabSize);
});

function file(name: string, text: string, mtimeMs = 0): ContextFile {
  return { path: name, text, contentHash: createHash('sha256').update(text).digest('hex'), mtimeMs };
}

function source(n: number, lines = 12): string {
  return Array.from({ length: lines }, (_, i) => `export function f${n}_${i}(x: number) { return x * ${i + n}; }`).join('\n') + '\n';
}

const files = [file('src/a.ts', source(1)), file('src/b.ts', source(2)), file('src/c.ts', source(3)), file('lib/d.ts', source(4))];

async function collect<R>(stream: AsyncGenerator<string, R>) {
  const deltas: string[] = [];
  let next = await stream.next();
  while (!next.done) {
    deltas.push(next.value);
    next = await stream.next();
  }
  return { deltas, result: next.value };
}

test('files are laid out one after another with exact spans; an unchanged re-save costs nothing', async () => {
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(files);
  const layout = context.layout();
  assert.deepEqual(
    layout.map((s) => s.path),
    files.map((f) => f.path),
  );
  for (let i = 1; i < layout.length; i++) assert.equal(layout[i].start, layout[i - 1].end);
  const stats = context.stats();
  assert.equal(stats.sequenceTokens, layout[layout.length - 1].end);
  assert.equal(stats.liveTokens, stats.sequenceTokens);
  // byte-level tokenizer: the span is the header plus the bytes of the file
  const a = context.span('src/a.ts');
  assert.ok(a);
  assert.equal(a.end - a.start - a.headerTokens, Buffer.byteLength(files[0].text));
  assert.equal(a.lineStarts.length, 12);
  await context.update([files[1]]);
  assert.equal(context.stats().sequenceTokens, stats.sequenceTokens);
});

test('an edit tombstones the old span and appends the new version; compaction equals a fresh build of the same layout', async () => {
  const context = new WorkspaceContext(model, tokenizer, { compactAt: 1, patchShare: 0 });
  await context.update(files);
  const before = context.stats();
  const edited = file('src/b.ts', source(2).replace('x * 3', 'x * 33'));
  await context.update([edited]);
  const after = context.stats();
  const b = context.span('src/b.ts');
  assert.ok(b);
  assert.equal(b.start, before.sequenceTokens, 'new version at the tail');
  assert.equal(b.editCount, 1);
  assert.equal(after.deadTokens, b.end - b.start - 1, 'the old span of b is dead (one byte shorter than the new one)');
  assert.deepEqual(
    context.layout().map((s) => s.path),
    ['src/a.ts', 'src/c.ts', 'lib/d.ts', 'src/b.ts'],
  );

  await context.compact();
  assert.equal(context.stats().deadTokens, 0);
  const compacted = context.layout();
  assert.equal(compacted[0].start, context.span('src/a.ts')?.start);
  for (let i = 1; i < compacted.length; i++) assert.equal(compacted[i].start, compacted[i - 1].end, 'spans stay contiguous after compaction');
  assert.equal(compacted[compacted.length - 1].end, context.sequence.length);
  assert.deepEqual(
    context.layout().map((s) => s.path),
    ['src/a.ts', 'src/c.ts', 'lib/d.ts', 'src/b.ts'],
  );
  const fresh = new WorkspaceContext(model, tokenizer);
  await fresh.update([files[0], files[2], files[3], edited]);
  assert.deepEqual(context.sequence.tokens, fresh.sequence.tokens);
  const question = 'What does f2_2 return?';
  const [x, y] = [await collect(context.ask(question, { maxTokens: 12 })), await collect(fresh.ask(question, { maxTokens: 12 }))];
  assert.equal(x.result.text, y.result.text);
});

test('an edit to the file last in the context re-feeds it in place from just before the change, equal to a fresh build', async () => {
  const long = file('src/long.ts', source(5, 80));
  // (Patches off: a patch is cheaper for all but edits near the end; this is the in-place path.)
  const context = new WorkspaceContext(model, tokenizer, { compactAt: 1, patchShare: 0 });
  await context.update([...files, long]);
  const start = context.span('src/long.ts')?.start;
  const fileTokens = context.stats().sequenceTokens - (start ?? 0);
  assert.ok(fileTokens > 3000, `the tail file is long enough to hold checkpoints (${fileTokens} tokens)`);

  const edits = [long.text.replace('x * 75;', 'x * 750;'), long.text.replace('x * 40;', 'x * 4;'), long.text.replace('f5_0', 'g5_0')];
  for (const text of edits) {
    const edited = file('src/long.ts', text);
    const before = context.stats();
    await context.update([edited]);
    const after = context.stats();
    const span = context.span('src/long.ts');
    assert.equal(span?.start, start, 'in place');
    assert.equal(after.deadTokens, 0, 'no tombstone');
    assert.equal(span?.end, context.sequence.length);
    const changedAt = Buffer.byteLength(
      text.slice(
        0,
        [...text].findIndex((ch, i) => ch !== long.text[i]),
      ),
    );
    const refed = after.encodedTokens - before.encodedTokens;
    assert.ok(refed <= span!.end - span!.start - span!.headerTokens - changedAt + 128 + 64, `re-fed ${refed} tokens for a change at byte ${changedAt} of ${fileTokens}`);
    assert.ok(refed >= span!.end - span!.start - span!.headerTokens - changedAt, `re-fed ${refed} tokens: at least from the change on`);

    const fresh = new WorkspaceContext(model, tokenizer);
    await fresh.update([...files, edited]);
    assert.deepEqual(context.sequence.tokens, fresh.sequence.tokens);
    for (const [layer, state] of fresh.sequence.lightning) {
      const mine = context.sequence.lightning.get(layer)!;
      const diff = state.reduce((m, v, i) => Math.max(m, Math.abs(v - mine[i])), 0);
      assert.ok(diff < 1e-4, `lightning layer ${layer} state differs by ${diff}`);
    }
    const question = 'What does f5_70 return?';
    const [x, y] = [await collect(context.ask(question, { maxTokens: 8 })), await collect(fresh.ask(question, { maxTokens: 8 }))];
    assert.equal(x.result.text, y.result.text);
  }

  // A small file now follows it: an edit near its end is still in place (the small file
  // is fed again after it), one near its start is an append (old span tombstoned).
  const small = file('src/a.ts', source(1) + '// more\n');
  await context.update([small]);
  const deadBefore = context.stats().deadTokens;
  const nearEnd = file('src/long.ts', edits[edits.length - 1].replace('x * 80;', 'x * 8;'));
  const encodedBefore = context.stats().encodedTokens;
  await context.update([nearEnd]);
  assert.equal(context.stats().deadTokens, deadBefore, 'in place: no new tombstone');
  assert.equal(context.span('src/long.ts')?.start, start);
  assert.equal(context.span('src/a.ts')?.start, context.span('src/long.ts')?.end, 'the small file follows it again');
  assert.equal(context.span('src/a.ts')?.end, context.sequence.length);
  assert.ok(context.stats().encodedTokens - encodedBefore < fileTokens / 2, 'fed far fewer tokens than the file');
  const fresh = new WorkspaceContext(model, tokenizer);
  await fresh.update([...files.slice(1), nearEnd, small]);
  // Same tokens after the live prefix: the in-place context holds a.ts's old span (dead) first.
  assert.deepEqual(context.sequence.tokens.slice(context.span('src/b.ts')!.start), fresh.sequence.tokens.slice(fresh.span('src/b.ts')!.start));

  await context.update([file('src/long.ts', long.text)]);
  assert.ok(context.stats().deadTokens > deadBefore + fileTokens - 10, 'an edit near the start of a file followed by another is an append');
  assert.equal(context.span('src/long.ts')?.end, context.sequence.length);
});

test('a small edit anywhere is a patch: its lines tombstoned and appended under a path:line header, the rest of the file left in place; compaction makes it whole', async () => {
  const context = new WorkspaceContext(model, tokenizer, { compactAt: 1 });
  await context.update(files);
  const b = context.span('src/b.ts')!;
  const lines = files[1].text.split('\n');
  const liveBefore = context.stats().liveTokens;
  const edit = async (text: string) => {
    const before = context.stats();
    await context.update([file('src/b.ts', text)]);
    const after = context.stats();
    // The file reads back as edited, through its pieces.
    assert.deepEqual(context.fileIds('src/b.ts'), context.format.file('src/b.ts', text).ids);
    assert.equal(after.liveTokens + after.deadTokens, after.sequenceTokens, 'live spans and tombstones tile the sequence');
    return { fed: after.encodedTokens - before.encodedTokens, dead: after.deadTokens - before.deadTokens };
  };

  // One line changed (line 2): the line and a short header go last; only the old line is dead.
  const v1 = [...lines];
  v1[1] = v1[1].replace('x * 3;', 'x * 33;');
  const first = await edit(v1.join('\n'));
  const header = Buffer.byteLength('\n### file: src/b.ts:2\n');
  assert.equal(first.fed, header + Buffer.byteLength(v1[1]) + 1, 'fed: the header and line 2 with its newline');
  assert.equal(first.dead, Buffer.byteLength(lines[1]) + 1, 'dead: the old line 2');
  const span = context.span('src/b.ts')!;
  assert.equal(span.start, b.start, 'the file stays where it was');
  assert.equal(span.editCount, 1);
  assert.equal(span.pieces?.length, 3);
  assert.equal(tokenizer.decode(context.sequence.tokens.slice(-first.fed)), `\n### file: src/b.ts:2\n${v1[1]}\n`);
  assert.deepEqual(context.locate(context.sequence.length - 2), { path: 'src/b.ts', line: 2 }, 'the patch maps to its line');
  assert.deepEqual(context.locate(b.start + b.lineStarts[4] + 3), { path: 'src/b.ts', line: 5 });
  assert.equal(context.locate(b.start + b.lineStarts[1] + 3), undefined, "a tombstone is nobody's");

  // Two lines inserted after line 6: later lines move down by two.
  const v2 = [...v1.slice(0, 6), '// added', 'const y = 2;', ...v1.slice(6)];
  const inserted = await edit(v2.join('\n'));
  assert.ok(inserted.fed < 120, `an insertion feeds the new lines and a neighbour (${inserted.fed} tokens)`);
  assert.deepEqual(context.locate(b.start + b.lineStarts[9] + 3), { path: 'src/b.ts', line: 12 }, 'old line 10 is line 12 now');

  // Line 2 edited again: the earlier patch is replaced whole, header included; pieces stay few.
  const v3 = [...v2];
  v3[1] = v3[1].replace('x * 33;', 'x * 333;');
  const again = await edit(v3.join('\n'));
  assert.equal(again.dead, first.fed, 'the whole earlier patch (header and line) is dead');
  assert.ok(context.span('src/b.ts')!.pieces!.length <= 5);

  // A line deleted.
  const v4 = v3.filter((_, i) => i !== 9);
  await edit(v4.join('\n'));
  assert.ok(context.stats().liveTokens - liveBefore < 200, 'live tokens grew by the edits and a few headers only');

  // A large edit appends the whole new version (its pieces collapse into one).
  const rewritten = v4.map((line) => line.replace('x *', 'y +')).join('\n');
  await context.update([file('src/b.ts', rewritten)]);
  assert.equal(context.span('src/b.ts')?.pieces, undefined);
  assert.equal(context.span('src/b.ts')?.end, context.sequence.length);
  await context.update([file('src/b.ts', v4.join('\n'))]); // back to v4: appended whole again
  const patched = file('src/c.ts', files[2].text.replace('x * 7;', 'x * 77;'));
  await context.update([patched]);
  assert.ok(context.span('src/c.ts')?.pieces);

  // Compaction re-feeds patched files whole, in place: a fresh build of the same layout.
  await context.compact();
  assert.equal(context.stats().deadTokens, 0);
  assert.equal(context.span('src/c.ts')?.pieces, undefined);
  const fresh = new WorkspaceContext(model, tokenizer);
  await fresh.update([files[0], patched, files[3], file('src/b.ts', v4.join('\n'))]);
  assert.deepEqual(
    context.layout().map((s) => s.path),
    fresh.layout().map((s) => s.path),
  );
  assert.deepEqual(context.sequence.tokens, fresh.sequence.tokens);
  const question = 'What does f3_4 return?';
  const [x, y] = [await collect(context.ask(question, { maxTokens: 8 })), await collect(fresh.ask(question, { maxTokens: 8 }))];
  assert.equal(x.result.text, y.result.text);
});

test("the budget counts files' own tokens, not patch headers: a full context keeps taking small edits as patches", async () => {
  const probe = new WorkspaceContext(model, tokenizer);
  const full = files.reduce((n, f) => n + probe.format.file(f.path, f.text).ids.length, 0);
  const context = new WorkspaceContext(model, tokenizer, { budget: full, compactAt: 1 });
  await context.update(files);
  assert.equal(context.stats().excluded.length, 0);
  let text = files[1].text;
  for (const [from, to] of [
    ['x * 3;', 'y * 3;'],
    ['x * 5;', 'y * 5;'],
    ['x * 9;', 'y * 9;'],
  ]) {
    // same length: the files stay exactly at the budget
    text = text.replace(from, to);
    const encoded = context.stats().encodedTokens;
    await context.update([file('src/b.ts', text)]);
    assert.ok(context.span('src/b.ts')?.pieces, 'patched');
    assert.ok(context.stats().encodedTokens - encoded < 80, 'fed a line, not the file');
  }
  // Growing past the budget, the edited file stays and the stalest file gives way (listed, not dropped).
  await context.update([file('src/b.ts', `${text}${'// more\n'.repeat(40)}`)]);
  assert.ok(context.span('src/b.ts'));
  // (all unedited and equally old: the layout order ties on the path, lib/d.ts first)
  assert.deepEqual(
    context.stats().excluded.map((e) => e.path),
    ['lib/d.ts'],
  );
  assert.ok(context.stats().liveTokens <= full);
  // A file larger than the whole budget is left out itself; nothing else goes.
  await context.update([file('src/huge.ts', source(9, 200))]);
  assert.equal(context.span('src/huge.ts'), undefined);
  assert.deepEqual(
    context
      .stats()
      .excluded.map((e) => e.path)
      .sort(),
    ['lib/d.ts', 'src/huge.ts'],
  );
});

test('the checkpoints kept for in-place edits stay within their budget over many files; the last file still edits in place', async () => {
  const probe = new WorkspaceContext(model, tokenizer);
  await probe.update([files[0]]);
  const stateBytes = probe.stats().recentCheckpointBytes; // one file: its start checkpoint only
  assert.ok(stateBytes > 0);
  const budget = 5 * stateBytes;
  const context = new WorkspaceContext(model, tokenizer, { recentCheckpointBytes: budget, compactAt: 1 });
  const many = Array.from({ length: 40 }, (_, i) => file(`src/m${i}.ts`, source(10 + i, 1))); // each under one checkpoint spacing: only start checkpoints
  await context.update(many);
  assert.ok(context.stats().recentCheckpointBytes <= budget, `${context.stats().recentCheckpointBytes} bytes held, budget ${budget}`);
  const last = many[many.length - 1];
  await context.update([file(last.path, last.text.replace(/x \* \d+/, 'x * 7'))]);
  assert.equal(context.stats().deadTokens, 0, 'the last file edited in place');
});

test('score: the log-probability of an answer after the context, as token-by-token decoding computes it; the context is unchanged', async () => {
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(files);
  const before = [...context.sequence.tokens];
  const question = 'Where is `f3_4` defined?';
  const answer = 'src/c.ts:5';
  const { logProb, tokens } = await context.score(question, answer);
  assert.deepEqual(context.sequence.tokens, before, 'rolled back');

  const target = [...context.format.text(answer), ...context.format.stopIds.slice(0, 1)];
  assert.equal(tokens, target.length);
  const sequence = context.sequence.clone();
  let logits = await model.forward(sequence, context.format.question(question));
  let expected = 0;
  for (const id of target) {
    const max = Math.max(...logits);
    expected += logits[id] - max - Math.log(logits.reduce((n, v) => n + Math.exp(v - max), 0));
    logits = await model.forward(sequence, [id]);
  }
  assert.ok(Number.isFinite(logProb) && logProb < 0);
  assert.ok(Math.abs(logProb - expected) < 1e-3, `score ${logProb} vs decoded ${expected}`);
  const other = await context.score(question, 'src/a.ts:5');
  assert.notEqual(other.logProb, logProb);
});

test('deleting a file tombstones it; it no longer appears in the layout or in sources', async () => {
  const context = new WorkspaceContext(model, tokenizer, { compactAt: 1 });
  await context.update(files);
  await context.update([], ['src/c.ts']);
  assert.equal(context.span('src/c.ts'), undefined);
  const { result } = await collect(context.ask('Where is f3_1 defined?', { maxTokens: 8 }));
  assert.ok(!result.sources.some((s) => s.path === 'src/c.ts'));
});

test('ask streams an answer, reports sources inside real files, and leaves the context unchanged', async () => {
  const many = Array.from({ length: 12 }, (_, i) => file(`pkg/m${i}.ts`, source(i, 10)));
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(many);
  const length = context.sequence.length;
  const { deltas, result } = await collect(context.ask('Which function multiplies by 7?', { maxTokens: 16 }));
  assert.equal(deltas.join(''), result.text);
  assert.equal(context.sequence.length, length);
  const { sources } = result;
  assert.ok(sources.length > 0, 'the sparse layers selected blocks beyond the forced ones');
  for (const s of sources) {
    assert.ok(
      many.some((f) => f.path === s.path),
      s.path,
    );
    assert.ok(s.startLine >= 1 && s.endLine >= s.startLine && s.endLine <= 10, `${s.path}:${s.startLine}-${s.endLine}`);
    assert.ok(s.weight > 0 && s.weight <= 1);
  }
  const again = await collect(context.ask('Which function multiplies by 7?', { maxTokens: 16 }));
  assert.equal(again.result.text, result.text, 'a question does not change the context');
});

test('concurrent requests queue; a cancelled question leaves the context intact', async () => {
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(files);
  const controller = new AbortController();
  const cancelled = collect(context.ask('first', { maxTokens: 200, signal: controller.signal }));
  const second = collect(context.ask('second question', { maxTokens: 6 }));
  setTimeout(() => controller.abort(new Error('stop')), 50);
  const [first, other] = await Promise.all([cancelled.catch((e: Error) => e), second]);
  if (!(first instanceof Error)) assert.ok(['cancelled', 'length', 'eos'].includes(first.result.finishReason));
  const reference = new WorkspaceContext(model, tokenizer);
  await reference.update(files);
  const expected = await collect(reference.ask('second question', { maxTokens: 6 }));
  assert.equal(other.result.text, expected.result.text);
});

test('completion reuses the state after the prefix when typing continues, with the same result as a cold start', async () => {
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(files);
  const prefix = 'export function g(x: number) {\n  return x';
  const first = await context.complete('src/new.ts', prefix, '\n}\n', { maxTokens: 6 });
  assert.equal(first.reusedTokens, 0);
  const typed = `${prefix} + 1`;
  const warm = await context.complete('src/new.ts', typed, '\n}\n', { maxTokens: 6 });
  assert.ok(warm.reusedTokens > 0 && warm.fedTokens < 12, `reused ${warm.reusedTokens}, fed ${warm.fedTokens}`);
  const cold = new WorkspaceContext(model, tokenizer);
  await cold.update(files);
  const reference = await cold.complete('src/new.ts', typed, '\n}\n', { maxTokens: 6 });
  assert.equal(warm.text, reference.text);
  assert.equal(context.sequence.length >= context.stats().sequenceTokens, true);
});

test('a file that does not fit the budget is listed as excluded, never silently dropped', async () => {
  const context = new WorkspaceContext(model, tokenizer, { budget: 1500 });
  await context.update(files);
  const stats = context.stats();
  assert.ok(stats.liveTokens <= 1500);
  assert.ok(stats.excluded.length > 0);
  assert.equal(stats.files + stats.excluded.length, files.length);
});

test('compaction runs in the background: a question asked meanwhile is answered before it ends, an edit made meanwhile survives the swap', async () => {
  const many = Array.from({ length: 10 }, (_, i) => file(`pkg/f${i}.ts`, source(i, 14)));
  const context = new WorkspaceContext(model, tokenizer, { compactAt: 1, checkpointEvery: 1 });
  await context.update(many);
  await context.update([file('pkg/f0.ts', source(100, 14))]); // tombstone at the very start: everything re-fed
  const events: string[] = [];
  const compaction = context.compact().then(() => events.push('compacted'));
  const asked = collect(context.ask('What does f3_1 return?', { maxTokens: 4 })).then(() => events.push('answered'));
  const edited = file('pkg/f5.ts', source(55, 14));
  const edit = context.update([edited]).then(() => events.push('edited'));
  await Promise.all([compaction, asked, edit]);
  assert.equal(events[events.length - 1], 'compacted', `order: ${events.join(', ')}`);
  // The only tombstone left is the version of f5 that the edit replaced mid-compaction.
  assert.equal(context.stats().deadTokens, context.format.file('pkg/f5.ts', source(5, 14)).ids.length);
  const fresh = new WorkspaceContext(model, tokenizer);
  await fresh.update([...many.slice(1).filter((f) => f.path !== 'pkg/f5.ts'), file('pkg/f0.ts', source(100, 14)), edited]);
  assert.deepEqual(new Set(context.layout().map((s) => s.path)), new Set(fresh.layout().map((s) => s.path)));
  const f5 = context.span('pkg/f5.ts');
  assert.ok(f5);
  assert.equal(tokenizer.decode(context.sequence.tokens.slice(f5.start + f5.headerTokens, f5.end)), edited.text);
  // Live spans and the one tombstone tile the sequence with no overlap.
  const pieces = [...context.layout().map((s) => [s.start, s.end]), ...context.sequence.deadRanges].sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < pieces.length; i++) assert.equal(pieces[i][0], pieces[i - 1][1]);
  assert.equal(pieces[pieces.length - 1][1], context.stats().sequenceTokens);
});
