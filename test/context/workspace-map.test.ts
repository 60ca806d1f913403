// The workspace map and the answer overlay: aggregation within the cap with the
// folder tree and totals kept, file states, blocks mapped to lines through patches
// and tombstones (on a real context with the fixture model), and the overlay's bounds.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { WorkspaceContext, type ContextFile, type FileSpan } from '../../engine/context/workspace-context.js';
import { SALA_TINY_A } from '../helpers/fixtures.js';
import {
  buildAnswerOverlay,
  buildWorkspaceMap,
  FILE_STATES,
  MAX_OVERLAY_FILES,
  MAX_PLACES,
  MAX_RANGES_PER_FILE,
  type MapCell,
  type MapInput,
} from '../../engine/context/workspace-map.js';

const FIXTURE = SALA_TINY_A;
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

/** A span laid out whole at `start`: `lines` lines of `perLine` tokens after a 4-token header. */
function span(filePath: string, start: number, lines: number, perLine = 10): FileSpan {
  const header = 4;
  return {
    path: filePath,
    start,
    end: start + header + lines * perLine,
    headerTokens: header,
    contentHash: filePath,
    mtimeMs: 0,
    editCount: 0,
    lineStarts: Array.from({ length: lines }, (_, i) => header + i * perLine),
  };
}

function input(spans: FileSpan[], extra: Partial<MapInput> = {}): MapInput {
  return { spans, overBudget: new Map(), skipped: [], queued: [], deadRanges: [], deadTokens: 0, budget: 1_000_000, phase: 'ready', ...extra };
}

/** A 10,000-file, ~1M-token workspace in nested folders (sizes vary over two orders of magnitude). */
function bigWorkspace(): FileSpan[] {
  const spans: FileSpan[] = [];
  let at = 0;
  for (let i = 0; i < 10_000; i++) {
    const folder = `pkg${i % 40}/mod${i % 400}/${i % 3 === 0 ? 'deep/er/' : ''}`;
    const lines = 1 + ((i * 7919) % 19);
    const s = span(`${folder}f${i}.ts`, at, lines, 5);
    spans.push(s);
    at = s.end;
  }
  return spans;
}

function checkTree(cells: MapCell[]): void {
  assert.equal(cells[0].parent, -1);
  assert.equal(cells[0].kind, 'folder');
  const childSizes = new Map<number, number>();
  cells.forEach((cell, i) => {
    if (i === 0) return;
    assert.ok(cell.parent >= 0 && cell.parent < i, 'a cell comes after its folder');
    const parent = cells[cell.parent];
    assert.equal(parent.kind, 'folder', 'only folders hold cells');
    if (cell.kind === 'rest') assert.equal(cell.path, parent.path, 'an aggregate is named by its folder');
    else assert.ok(parent.path === '' ? !cell.path.startsWith('/') : cell.path.startsWith(`${parent.path}/`), `${cell.path} is inside ${parent.path}`);
    childSizes.set(cell.parent, (childSizes.get(cell.parent) ?? 0) + cell.size);
  });
  for (const [index, size] of childSizes) assert.equal(size, cells[index].size, `the cells of ${cells[index].path || '(root)'} add up to it`);
}

test('a 10,000-file, 1M-token workspace fits the cap; folders nest and totals, file counts and states are kept', () => {
  const spans = bigWorkspace();
  const tokens = spans.reduce((n, s) => n + s.end - s.start, 0);
  assert.ok(tokens > 500_000, `${tokens} tokens`);
  for (const cap of [3000, 500]) {
    const map = buildWorkspaceMap(input(spans), cap);
    assert.ok(map.cells.length <= cap, `${map.cells.length} cells ≤ ${cap}`);
    assert.ok(map.cells.length > cap / 2, `${map.cells.length} cells use the room`);
    checkTree(map.cells);
    assert.equal(map.cells[0].size, tokens);
    assert.equal(map.totals.tokens, tokens);
    assert.equal(map.cells[0].files, 10_000);
    const leaves = map.cells.filter((c) => c.kind !== 'folder');
    assert.equal(
      leaves.reduce((n, c) => n + c.files, 0),
      10_000,
      'every file is in one leaf',
    );
    assert.equal(
      map.aggregated,
      leaves.filter((c) => c.kind === 'rest').reduce((n, c) => n + c.files, 0),
    );
    assert.deepEqual(map.totals.filesByState, [10_000, 0, 0, 0, 0]);
    if (cap === 3000)
      assert.ok(
        map.cells.some((c) => c.kind === 'file'),
        'with room, the larger files are cells of their own',
      );
  }
  const tight = buildWorkspaceMap(input(spans), 16);
  assert.ok(tight.cells.length <= 16, `${tight.cells.length} cells`);
  checkTree(tight.cells);
  assert.throws(() => buildWorkspaceMap(input(spans), 3), /maxCells must be an integer in \[16, 20000\]/);
});

test('under the cap every file is its own cell, largest first, with its state and why it is left out', () => {
  const a = span('src/a.ts', 0, 30);
  const b = {
    ...span('src/b.ts', a.end, 10),
    pieces: [
      { at: a.end, from: 0, length: 54, header: 0 },
      { at: 500, from: 54, length: 50, header: 6 },
    ],
    end: 550,
  };
  const map = buildWorkspaceMap(
    input([a, b], {
      queued: [
        { path: 'src/a.ts', tokens: a.end - a.start, contentHash: 'src/a.ts' },
        { path: 'lib/c.ts', tokens: 90, contentHash: 'c' },
        { path: 'lib/d.ts', tokens: 80, contentHash: 'd' },
      ],
      overBudget: new Map([['big.ts', { tokens: 5000 }]]),
      skipped: [
        { path: 'logo.png', reason: 'binary', detail: 'NUL bytes in the first 8 KiB' },
        { path: 'node_modules', reason: 'ignored', detail: '.gitignore: node_modules/' },
      ],
      deadRanges: [[a.end + 54, 500 - 6]],
      deadTokens: 500 - 6 - a.end - 54,
    }),
  );
  checkTree(map.cells);
  const byPath = new Map(map.cells.filter((c) => c.kind === 'file').map((c) => [c.path, c]));
  assert.equal(byPath.get('src/a.ts')?.state, 'encoded');
  assert.equal(byPath.get('src/b.ts')?.state, 'patched');
  assert.equal(byPath.get('src/b.ts')?.patchedTokens, 56);
  assert.equal(byPath.get('src/b.ts')?.deadTokens, 500 - 6 - a.end - 54, 'the tombstone between its pieces');
  assert.equal(byPath.get('src/b.ts')?.tokens, 54 + 56, 'live tokens, the patch header included');
  assert.equal(byPath.get('lib/c.ts')?.state, 'encoding', 'the first queued file not in the context is being encoded');
  assert.equal(byPath.get('lib/d.ts')?.state, 'waiting');
  assert.equal(byPath.get('big.ts')?.reason, 'over-budget');
  assert.equal(byPath.get('big.ts')?.size, 5000);
  assert.equal(byPath.get('big.ts')?.tokens, 0);
  assert.equal(byPath.get('logo.png')?.reason, 'binary');
  assert.equal(byPath.get('node_modules')?.detail, '.gitignore: node_modules/');
  assert.ok((byPath.get('logo.png')?.size ?? 0) > 0, 'a skipped file gets a nominal area');
  assert.deepEqual(map.totals.filesByState, [1, 1, 1, 1, 3]);
  const root = map.cells[0];
  assert.deepEqual(root.states?.length, FILE_STATES.length);
  assert.equal(root.state, 'excluded', 'the big file left out is most of the area');
  // siblings come largest first
  const top = map.cells.filter((c) => c.parent === 0).map((c) => c.size);
  assert.deepEqual(
    top,
    [...top].sort((x, y) => y - x),
  );
});

test('thousands of tiny folders collapse into their parent’s aggregate', () => {
  const spans: FileSpan[] = [];
  for (let i = 0; i < 5000; i++) spans.push(span(`a/b${i}/c.ts`, i * 100, 2));
  const map = buildWorkspaceMap(input(spans), 100);
  assert.ok(map.cells.length <= 100, `${map.cells.length}`);
  checkTree(map.cells);
  assert.equal(map.cells[0].files, 5000);
  assert.ok(map.cells.some((c) => c.kind === 'rest' && c.path === 'a' && /in \d+ folders/.test(c.detail ?? '')));
});

test('the overlay maps blocks to lines through a patch, and a tombstone’s hits to no file', () => {
  const blockSize = 64;
  // a.ts: 20 lines of 10 tokens, header 4; its lines 5–7 were patched in at 1000 (header 6), the old ones tombstoned.
  const a: FileSpan = {
    ...span('a.ts', 0, 20),
    pieces: [
      { at: 0, from: 0, length: 44, header: 0 },
      { at: 1006, from: 44, length: 30, header: 6 },
      { at: 74, from: 74, length: 130, header: 0 },
    ],
    end: 1036,
  };
  const b = span('b.ts', 204, 10);
  // block 15 = [960, 1024): the patch header and its first 18 tokens → a.ts lines 5-6; block 2 = [128, 192): a.ts lines 13-19;
  // block 12 = [768, 832): nothing lives there (tombstones).
  const overlay = buildAnswerOverlay(
    'q',
    [a, b],
    [
      [15, 3],
      [2, 1],
      [12, 4],
    ],
    blockSize,
  );
  assert.equal(overlay.hits, 8);
  assert.equal(overlay.unmapped, 4 / 8);
  const places = overlay.places.map((p) => `${p.path}:${p.startLine}-${p.endLine}@${p.weight}`);
  assert.deepEqual(places, ['a.ts:5-6@0.375', 'a.ts:13-19@0.125']);
  assert.equal(overlay.files.length, 1);
  assert.equal(overlay.files[0].lines, 20);
  assert.equal(overlay.files[0].weight, 0.5);
  assert.deepEqual(
    overlay.files[0].ranges.map((r) => r.startLine),
    [5, 13],
    'ranges in line order',
  );
  assert.deepEqual(buildAnswerOverlay('none', [a, b], [], blockSize).places, []);
});

test('the overlay is bounded: places, files and ranges per file', () => {
  const spans: FileSpan[] = [];
  // 400 files of 32 blocks each, and one long file after them
  for (let i = 0; i < 400; i++) spans.push(span(`f${i}.ts`, i * 2048, 200, 10));
  const long = span('long.ts', 400 * 2048, 20_000, 10);
  spans.push(long);
  const hits: [number, number][] = [];
  // every other block: separate ranges
  for (let i = 0; i < 400; i++) for (let j = 0; j < 30; j += 2) hits.push([i * 32 + j, 1 + (i % 5)]);
  for (let j = 0; j < 3000; j += 2) hits.push([400 * 32 + j, 9]);
  const overlay = buildAnswerOverlay('big', spans, hits, 64);
  assert.equal(overlay.places.length, MAX_PLACES);
  assert.equal(overlay.files.length, MAX_OVERLAY_FILES);
  assert.equal(overlay.files[0].path, 'long.ts');
  assert.equal(overlay.files[0].ranges.length, MAX_RANGES_PER_FILE);
  assert.ok(overlay.otherWeight > 0);
  for (const f of overlay.files) assert.ok(f.ranges.length <= MAX_RANGES_PER_FILE);
  const kept = overlay.files.reduce((n, f) => n + f.weight, 0);
  assert.ok(Math.abs(kept + overlay.otherWeight + overlay.unmapped - 1) < 1e-9, 'file weights (all their ranges) and the rest add up to the hits');
  const bytes = JSON.stringify(overlay).length;
  assert.ok(bytes < 250_000, `${bytes} bytes`);
});

test('on a real context, the overlay after a patch and a delete gives the same places as sources', async () => {
  const many = Array.from({ length: 12 }, (_, i) => file(`pkg/m${i}.ts`, source(i, 10)));
  const context = new WorkspaceContext(model, tokenizer, { compactAt: 1 });
  await context.update(many);
  const edited = file('pkg/m3.ts', source(3, 10).replace('x * 7', 'x * 77'));
  await context.update([edited], ['pkg/m5.ts']);
  const patched = context.span('pkg/m3.ts');
  assert.ok(patched?.pieces, 'the one-line edit was patched in');
  assert.ok(context.stats().deadTokens > 0);

  const stream = context.ask('Which function multiplies by 77?', { maxTokens: 12 });
  let next = await stream.next();
  while (!next.done) next = await stream.next();
  const result = next.value;
  assert.ok(result.sources.length > 0, 'the sparse layers selected blocks');
  const overlay = buildAnswerOverlay('real', result.layout, result.blockHits, model.config.sparse.blockSize);
  const key = (s: { path: string; startLine: number; endLine: number; weight: number }) => `${s.path}:${s.startLine}-${s.endLine}@${s.weight.toFixed(9)}`;
  assert.deepEqual(overlay.places.slice(0, result.sources.length).map(key).sort(), result.sources.map(key).sort(), 'the top places are the sources');
  assert.ok(!overlay.files.some((f) => f.path === 'pkg/m5.ts'), 'a deleted file is read nowhere');
  for (const f of overlay.files) {
    assert.equal(f.lines, 10);
    for (const r of f.ranges) assert.ok(r.startLine >= 1 && r.endLine <= 10 && r.startLine <= r.endLine, `${f.path}:${r.startLine}-${r.endLine}`);
  }
  const map = buildWorkspaceMap(input(context.layout(), { deadRanges: context.sequence.deadRanges, deadTokens: context.sequence.deadTokens }));
  const m3 = map.cells.find((c) => c.path === 'pkg/m3.ts');
  assert.equal(m3?.state, 'patched');
  assert.ok((m3?.deadTokens ?? 0) > 0, 'the patched lines’ old tokens are tombstoned inside its span');
  assert.equal(map.cells[0].files, 11);
});
