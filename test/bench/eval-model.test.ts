// eval:model's pieces on code in this repository: the question generator, the sites,
// the scorer, the held-out file selection; and one real --quick run of the harness on
// the shipped model (local folders for the held-out code: tests reach no network).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { localRepo, jsPackage, pythonPackage } from '../../bench/eval/sources.js';
import { definitionIndex, definitions, wordPattern } from '../../bench/eval/definitions.js';
import { absentQuestions, crossFileSites, cutLine, fillInSites, lookupQuestions, namePieces, type PlacedFile } from '../../bench/eval/questions.js';
import { LineIndex, attributionCorrect, completionExact, lookupCorrect, resolveLocations, saysNotFound } from '../../bench/eval/scoring.js';
import { Random } from '../../bench/eval/random.js';
import type { EvalResult } from '../../bench/eval/report.js';
import { OptionsError, parseOptions } from '../../bench/eval/options.js';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../..');

/** Files of a local repository placed one after another (positions in characters stand in for tokens). */
function placed(...dirs: string[]): PlacedFile[] {
  let at = 0;
  return dirs
    .flatMap((d) => localRepo(path.join(root, d)).files)
    .map(([p, text]) => {
      const file = { path: p, text, start: at, end: at + text.length };
      at += text.length;
      return file;
    });
}

const workspace = placed('engine', 'test/e2e/fixture-workspace');

test('lookup questions: "defined" golds are the definition lines, names defined exactly once (≥ 4 characters, no dunder), spread over the context', () => {
  const index = definitionIndex(workspace);
  const questions = lookupQuestions(workspace, 'defined', 12, new Random(1));
  assert.equal(questions.length, 12);
  assert.equal(new Set(questions.map((q) => q.name)).size, 12, 'no name asked twice');
  for (const q of questions) {
    assert.equal(index.get(q.name)?.length, 1, `${q.name} is defined once`);
    assert.ok(q.name.length >= 4 && !q.name.startsWith('__'));
    assert.equal(q.question, `Where is \`${q.name}\` defined?`);
    const line = workspace.find((f) => f.path === q.gold[0].path)!.text.split('\n')[q.gold[0].line - 1];
    assert.equal(line, q.definition.text);
    assert.ok(
      definitions(q.definition.path, line).some((d) => d.name === q.name),
      `${line} defines ${q.name}`,
    );
  }
  // One question per twelfth of the context: the depths rise from near the start to near the end.
  const depths = questions.map((q) => q.depth);
  assert.ok(depths[0] < 0.25 && depths[depths.length - 1] > 0.6, depths.join(' '));
  // The fixture's `area` (shapes.ts) is a known definition.
  const fixture = workspace.filter((f) => f.path.startsWith('fixture-workspace/'));
  const area = lookupQuestions(fixture, 'defined', 5, new Random(2)).find((q) => q.name === 'area');
  assert.deepEqual(area?.gold, [{ path: 'fixture-workspace/src/shapes.ts', line: 5 }]);
});

test('"used" golds are every other line naming the identifier, across files; a name defined twice is never asked', () => {
  const fixture = workspace.filter((f) => f.path.startsWith('fixture-workspace/'));
  const used = lookupQuestions(fixture, 'used', 5, new Random(3));
  const area = used.find((q) => q.name === 'area');
  assert.ok(area, used.map((q) => q.name).join());
  assert.deepEqual(area.gold, [
    { path: 'fixture-workspace/src/main.ts', line: 1 },
    { path: 'fixture-workspace/src/main.ts', line: 4 },
  ]);
  const twice: PlacedFile[] = [
    { path: 'a.py', text: 'def duplicated(x):\n    return x\n\ndef single(y):\n    return duplicated(y)\n', start: 0, end: 10 },
    { path: 'b.py', text: 'def duplicated(z):\n    return single(z)\n', start: 10, end: 20 },
  ];
  for (const kind of ['defined', 'used'] as const) {
    const names = lookupQuestions(twice, kind, 5, new Random(4)).map((q) => q.name);
    assert.deepEqual(names, ['single']);
  }
});

test('absent names occur nowhere in the context and are made of pieces of the other code', () => {
  const elsewhere = localRepo(path.join(root, 'training')).files.map(([, t]) => t);
  const pieces = new Set(elsewhere.flatMap((t) => (t.match(/[A-Za-z_$][\w$]*/g) ?? []).flatMap(namePieces).map((p) => p.toLowerCase())));
  const questions = absentQuestions(workspace, elsewhere, 20, new Random(5));
  assert.equal(questions.length, 20);
  const all = workspace
    .map((f) => f.text)
    .join('\n')
    .toLowerCase();
  for (const q of questions) {
    assert.ok(!all.includes(q.name.toLowerCase()), `${q.name} is absent`);
    assert.ok(
      namePieces(q.name).every((p) => pieces.has(p.toLowerCase())),
      `${q.name} is made of real pieces`,
    );
    assert.match(q.name, /^[a-z]+(?:[A-Z][a-z]+)+$/, 'camelCase in a TypeScript workspace');
  }
  assert.deepEqual(namePieces('parseHeaderMap'), ['parse', 'Header', 'Map']);
  assert.deepEqual(namePieces('max_retry_count'), ['max', 'retry', 'count']);
});

test('cross-file sites cut just before a name defined in another file, in code, and the pieces give the file back', () => {
  const sites = crossFileSites(workspace, 30, new Random(6));
  assert.ok(sites.length >= 20, `${sites.length} sites`);
  const index = definitionIndex(workspace);
  for (const site of sites) {
    const file = workspace.find((f) => f.path === site.path)!;
    assert.equal(site.prefix + site.middle + site.suffix, file.text);
    assert.ok(site.middle.startsWith(site.name!), `${site.middle} starts with ${site.name}`);
    assert.ok(!/[\w$]$/.test(site.prefix), 'the cut is at the start of the identifier');
    const defs = index.get(site.name!)!;
    assert.equal(defs.length, 1);
    assert.notEqual(defs[0].path, site.path, 'defined in another file');
    assert.equal(defs[0].path.split('/')[0], site.path.split('/')[0], 'of the same repository');
    assert.deepEqual(site.definedIn, { path: defs[0].path, line: defs[0].line });
    assert.ok(!definitions(site.path, file.text).some((d) => d.name === site.name), 'not defined in the file itself');
    const line = file.text.split('\n')[site.line - 1];
    assert.ok(!/^\s*(import|\/\/|\*|\/\*)/.test(line), `code, not an import or a comment: ${line}`);
    assert.ok(wordPattern(site.name!).test(line));
  }
  // The fixture: main.ts uses shapes.ts's `area` on line 4.
  const fixture = workspace.filter((f) => f.path.startsWith('fixture-workspace/'));
  const [site] = crossFileSites(fixture, 5, new Random(7));
  assert.deepEqual({ path: site.path, line: site.line, middle: site.middle }, { path: 'fixture-workspace/src/main.ts', line: 4, middle: 'area(unit));' });
  assert.deepEqual(cutLine('a\nbc(d)\ne', 2, 1), { prefix: 'a\nb', middle: 'c(d)', suffix: '\ne' });
});

test('fill-in sites are whole lines of 6–100 characters, the prefix at most 3,000 characters and the suffix 1,000', () => {
  const sites = fillInSites(workspace, 40, new Random(8));
  assert.equal(sites.length, 40);
  for (const s of sites) {
    const text = workspace.find((f) => f.path === s.path)!.text;
    const lines = text.split('\n');
    assert.equal(s.middle, lines[s.line - 1]);
    assert.ok(s.middle.trim().length >= 6 && s.middle.trim().length <= 100);
    assert.ok(s.prefix.length <= 3000 && s.suffix.length <= 1000);
    assert.ok(text.includes(s.prefix + s.middle + s.suffix));
    assert.ok(s.prefix === '' || s.prefix.endsWith('\n'));
  }
});

test('the scorer: the first place must be on a gold path within ±2 lines; places come from locations, path:line or verbatim lines', () => {
  const gold = [{ path: 'a.py', line: 10 }];
  assert.ok(lookupCorrect([{ path: 'a.py', line: 12 }], gold));
  assert.ok(lookupCorrect([{ path: 'a.py', line: 8 }], gold));
  assert.ok(!lookupCorrect([{ path: 'a.py', line: 13 }], gold));
  assert.ok(!lookupCorrect([{ path: 'b.py', line: 10 }], gold));
  assert.ok(
    !lookupCorrect(
      [
        { path: 'b.py', line: 1 },
        { path: 'a.py', line: 10 },
      ],
      gold,
    ),
    'only the first place counts',
  );
  assert.ok(!lookupCorrect([], gold));

  const files = [
    { path: 'a.py', text: 'import os\n\ndef run(x):\n    return x\n' },
    { path: 'b.py', text: 'def run(x):\n    return x\n' },
  ];
  const index = new LineIndex(files);
  // The engine's own locations win.
  assert.deepEqual(resolveLocations({ text: 'whatever', sources: [], locations: [{ path: 'b.py', line: 1, text: 'def run(x):' }] }, index), [
    { path: 'b.py', line: 1, text: 'def run(x):' },
  ]);
  // A spelled-out path:line of a workspace file.
  assert.deepEqual(resolveLocations({ text: 'a.py:3', sources: [] }, index), [{ path: 'a.py', line: 3 }]);
  // A verbatim line: the first occurrence in context order, or the one inside the first source.
  assert.deepEqual(resolveLocations({ text: 'def run(x):', sources: [] }, index), [{ path: 'a.py', line: 3, text: 'def run(x):' }]);
  assert.deepEqual(resolveLocations({ text: '  def run(x):  ', sources: [{ path: 'b.py', startLine: 1, endLine: 2, weight: 1 }] }, index), [
    { path: 'b.py', line: 1, text: 'def run(x):' },
  ]);
  assert.deepEqual(resolveLocations({ text: '`nothing` is not in the workspace.', sources: [] }, index), []);

  assert.ok(attributionCorrect([{ path: 'a.py', startLine: 1, endLine: 3, weight: 1 }], { path: 'a.py', line: 3 }));
  assert.ok(!attributionCorrect([{ path: 'a.py', startLine: 4, endLine: 9, weight: 1 }], { path: 'a.py', line: 3 }));
  assert.ok(
    !attributionCorrect(
      [
        { path: 'b.py', startLine: 1, endLine: 9, weight: 0.6 },
        { path: 'a.py', startLine: 1, endLine: 9, weight: 0.4 },
      ],
      { path: 'a.py', line: 3 },
    ),
  );
  assert.ok(saysNotFound('`fooBarBaz` is not in the workspace.'));
  assert.ok(!saysNotFound('a.py:3'));
  assert.ok(completionExact('area(unit));  ', 'area(unit));'));
  assert.ok(!completionExact('area(unit)', 'area(unit));'));
  assert.ok(completionExact('area(unit));\nmore()', 'area(unit));'), 'the first line is the one completed');
});

test('held-out file selection: src/ over compiled output, no declaration, minified or bundled files; Python as the training corpus reads it', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'eval-sources-'));
  const code = (n: number) => Array.from({ length: n }, (_, i) => `export const value${i} = ${i} + 1;`).join('\n') + '\n';
  const pkg = path.join(dir, 'pkg');
  for (const [rel, text] of [
    ['package.json', JSON.stringify({ name: 'pkg', version: '1.2.3' })],
    ['src/index.ts', code(10)],
    ['src/util.js', code(5)],
    ['src/types.d.ts', code(5)],
    ['dist/index.js', code(10)],
    ['src/big.min.js', code(5)],
    ['src/tiny.ts', 'x'],
  ]) {
    mkdirSync(path.dirname(path.join(pkg, rel)), { recursive: true });
    writeFileSync(path.join(pkg, rel), text);
  }
  const js = jsPackage(pkg);
  assert.equal(js.version, '1.2.3');
  assert.deepEqual(
    js.files.map(([p]) => p),
    ['pkg/src/index.ts', 'pkg/src/util.js'],
  );
  const top = path.join(dir, 'site', 'mod');
  mkdirSync(path.join(top, 'sub'), { recursive: true });
  writeFileSync(path.join(top, '__init__.py'), 'def main(argv=None):\n    return run_everything(argv or [])\n\n\ndef other():\n    pass\n');
  writeFileSync(path.join(top, 'sub', 'gen.py'), '# Auto-generated: do not edit\n' + 'x = 1\n'.repeat(20));
  assert.deepEqual(
    pythonPackage(top).files.map(([p]) => p),
    ['mod/__init__.py'],
  );
});

test('the command line: sizes, counts and --quick; a bad value is refused with what to write', () => {
  const full = parseOptions(['--sizes', '8k,32k,128k,1m', '--questions', '5', '--seed', '7']);
  assert.deepEqual(full.sizes, [8192, 32768, 131072, 1048576]);
  assert.equal(full.questions, 5);
  assert.equal(full.completions, 20);
  assert.equal(full.seed, 7);
  assert.equal(full.bpbRowTokens, 4096);
  const quick = parseOptions(['--quick', '--sizes', '128k']);
  assert.deepEqual([quick.sizes, quick.questions, quick.completions, quick.bpbRows], [[8192], 3, 3, 1]);
  assert.throws(
    () => parseOptions(['--sizes', '8kb']),
    (err: Error) => err instanceof OptionsError && /--sizes: "8kb" is not a size like 8k, 32k, 128k or 1m/.test(err.message),
  );
  assert.throws(() => parseOptions(['--questions', '0']), /--questions: "0" is not a whole number ≥ 1/);
  assert.throws(() => parseOptions(['--seed', 'x']), /--seed: "x" is not a whole number ≥ 0/);
  assert.throws(
    () => parseOptions(['--frobnicate']),
    (err: Error) => err instanceof OptionsError && /--frobnicate/.test(err.message) && /--sizes 8k,32k,128k/.test(err.message),
  );
});

test('npm run eval:model -- --quick on the shipped model writes the report, its table and the question set', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'eval-model-'));
  const out = path.join(dir, 'model-eval.json');
  const dump = path.join(dir, 'questions.json');
  const started = performance.now();
  await run(process.execPath, ['--import', 'tsx', 'bench/eval-model.ts', '--quick', '--repos', 'engine,training', '--out', out, '--dump-questions', dump], { cwd: root });
  const seconds = (performance.now() - started) / 1000;
  const result = JSON.parse(readFileSync(out, 'utf8')) as EvalResult;
  assert.equal(result.model.name, 'panorama-code-13m');
  assert.equal(result.machine.cpus, os.cpus().length);
  assert.ok(result.quick);
  assert.deepEqual(
    result.heldout.map((r) => r.name),
    ['engine', 'training'],
  );
  assert.equal(result.sizes.length, 1);
  const [size] = result.sizes;
  assert.equal(size.size, 8192);
  assert.ok(size.tokens > 6000 && size.tokens <= 8192, `${size.tokens} tokens`);
  for (const rate of [size.lookupDefined, size.lookupUsed, size.attribution, size.honesty, size.crossFileWorkspace, size.crossFileAlone]) {
    assert.equal(rate.n, 3);
    assert.ok(rate.rate >= 0 && rate.rate <= 1 && rate.correct <= rate.n);
  }
  // Each question is asked twice: as the engine ships (held to workspace lines) and unaided.
  assert.equal(size.items.asks.length, 18);
  const grounded = size.items.asks.filter((a) => a.grounded);
  assert.equal(grounded.length, 9);
  for (const a of grounded.filter((x) => x.kind !== 'absent')) assert.ok(a.candidates !== undefined && a.candidates >= 1, `${a.name}: ${a.candidates} candidate lines`);
  // A grounded "defined" answer is one of the lines holding the name, so it resolves to a place.
  for (const a of grounded.filter((x) => x.kind === 'defined')) assert.ok(a.locations.length >= 1 && a.answer.includes(a.name), a.answer);
  for (const rate of Object.values(size.unaided)) assert.equal(rate.n, 3);
  assert.ok(size.askMs.grounded > 0 && size.askMs.unaided > 0);
  assert.equal(size.items.crossFile.length, 3);
  // Every site in both inline forms; the shipped rows count the form the engine picks at each.
  for (const c of size.items.crossFile) {
    assert.ok(c.shipped === 'continued' || c.shipped === 'fim', c.shipped);
    for (const form of ['continued', 'fim'] as const) {
      assert.equal(c.workspace[form].form, form);
      assert.equal(c.alone[form].form, form);
      assert.equal(c.workspace[form].expected, c.alone[form].expected);
    }
  }
  assert.equal(size.crossFileByForm.fim.workspace.n, 3);
  assert.equal(size.items.crossFile.filter((c) => c.workspace[c.shipped].correct).length, size.crossFileWorkspace.correct);
  for (const part of Object.values(size.seconds)) assert.ok(part > 0);
  assert.equal(result.fillIn.n, 3);
  assert.equal(result.fillInInline.n, 3);
  assert.equal(result.fillInInline.byForm.fim.n, 3);
  for (const form of ['continued', 'fim'] as const)
    assert.deepEqual(
      result.fillInInline.items.filter((i) => i.form === form).map((i) => i.expected),
      result.fillIn.items.map((i) => i.expected),
      `the same lines, inline (${form})`,
    );
  assert.equal(result.bitsPerByte.rows, 1);
  assert.ok(result.bitsPerByte.bitsPerByte > 0 && result.bitsPerByte.bitsPerByte < 8, `${result.bitsPerByte.bitsPerByte} bits per byte`);
  assert.ok(result.seconds.total > 0 && result.seconds.total < seconds);
  const table = readFileSync(out.replace(/\.json$/, '.md'), 'utf8');
  assert.match(table, /\| lookup "Where is `X` defined\?" \(±2 lines\) \| \d+\.\d% \(\d\/3\) \|/);
  assert.match(table, /bits per byte \(1 row of 1024 tokens/);
  const questions = JSON.parse(readFileSync(dump, 'utf8')) as {
    sizes: { files: string[]; lookup: unknown[]; absent: unknown[]; crossFile: unknown[] }[];
    fillIn: unknown[];
    bitsPerByte: { ids: number[] }[];
    texts: Record<string, string>;
  };
  assert.equal(questions.sizes[0].lookup.length, 6);
  assert.equal(questions.sizes[0].absent.length, 3);
  assert.equal(questions.sizes[0].crossFile.length, 3);
  assert.ok(questions.sizes[0].files.every((f) => typeof questions.texts[f] === 'string'));
  assert.equal(questions.bitsPerByte[0].ids.length, 1025);
  assert.ok(existsSync(dump));
  assert.ok(seconds < 60, `--quick took ${seconds.toFixed(0)} s`);
});

test('--dump-only writes the question set for the PyTorch side without running the model, the same items as a full run would ask', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'eval-dump-'));
  const dump = (name: string) => path.join(dir, name);
  const args = [
    '--import',
    'tsx',
    'bench/eval-model.ts',
    '--repos',
    'engine,training',
    '--sizes',
    '8k,16k',
    '--questions',
    '4',
    '--completions',
    '4',
    '--dump-only',
    '--seed',
    '3',
  ];
  await run(process.execPath, [...args, '--dump-questions', dump('a.json')], { cwd: root });
  await run(process.execPath, [...args, '--dump-questions', dump('b.json')], { cwd: root });
  const a = readFileSync(dump('a.json'), 'utf8');
  assert.equal(a, readFileSync(dump('b.json'), 'utf8'), 'the same seed gives the same items');
  const questions = JSON.parse(a) as {
    sizes: { size: number; files: string[]; lookup: { gold: { path: string; line: number }[] }[]; absent: unknown[] }[];
    texts: Record<string, string>;
  };
  assert.deepEqual(
    questions.sizes.map((s) => s.size),
    [8192, 16384],
  );
  for (const size of questions.sizes) {
    assert.equal(size.lookup.length, 8);
    assert.equal(size.absent.length, 4);
    for (const q of size.lookup) for (const g of q.gold) assert.ok(size.files.includes(g.path) && questions.texts[g.path].split('\n').length >= g.line);
  }
  await assert.rejects(
    run(process.execPath, ['--import', 'tsx', 'bench/eval-model.ts', '--dump-only'], { cwd: root }),
    /--dump-only writes the question set: name its file with --dump-questions FILE/,
  );
  await assert.rejects(
    run(process.execPath, ['--import', 'tsx', 'bench/eval-model.ts', '--repos', 'no/such/folder'], { cwd: root }),
    (err: Error & { code?: number; stderr?: string }) => err.code === 2 && /--repos: no\/such\/folder is not a folder/.test(err.stderr ?? ''),
  );
});
