// WorkspaceWatcher on real files with real chokidar events. Absence ("nothing was reported")
// is checked with a sentinel: a later write whose batch proves earlier events were processed.
// Waits poll with generous deadlines: CI machines are slow and shared.
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { scanWorkspace } from '../../engine/index/scan.js';
import { WorkspaceWatcher, type ChangeBatch, type WatcherOptions } from '../../engine/index/watcher.js';
import { cleanup, makeWorkspace, waitFor, type Tree } from './workspace-fixture.js';

const roots: string[] = [];
const watchers: WorkspaceWatcher[] = [];
after(async () => {
  await Promise.all(watchers.map((watcher) => watcher.close()));
  roots.forEach(cleanup);
});

interface Watched {
  root: string;
  watcher: WorkspaceWatcher;
  batches: ChangeBatch[];
  logged: string[];
  write: (relativePath: string, content: string | Buffer) => void;
  /** Writes a fresh file and waits for its batch: every earlier event has then been processed. */
  sentinel: () => Promise<void>;
  changed: (relativePath: string) => ChangeBatch[];
  deleted: (relativePath: string) => ChangeBatch[];
}

let sentinelCount = 0;

async function watch(t: TestContext, tree: Tree, options: WatcherOptions = {}, root = makeWorkspace(tree)): Promise<Watched> {
  roots.push(root);
  const logged: string[] = [];
  const watcher = new WorkspaceWatcher(root, { log: (message) => logged.push(message), ...options });
  watchers.push(watcher);
  t.after(() => watcher.close());
  const batches: ChangeBatch[] = [];
  watcher.onChanges((batch) => batches.push(batch));
  await watcher.start();
  const changed = (relativePath: string) => batches.filter((batch) => batch.changed.some((file) => file.path === relativePath));
  const deleted = (relativePath: string) => batches.filter((batch) => batch.deleted.includes(relativePath));
  const write = (relativePath: string, content: string | Buffer) => writeFileSync(path.join(root, relativePath), content);
  return {
    root,
    watcher,
    batches,
    logged,
    write,
    changed,
    deleted,
    sentinel: async () => {
      const name = `sentinel-${++sentinelCount}.txt`;
      write(name, name);
      await waitFor(`the batch with ${name}`, () => changed(name).length > 0);
    },
  };
}

test('an edit is reported once, in one batch, with the new text', async (t) => {
  const w = await watch(t, { 'a.ts': 'one', 'b.ts': 'b' });
  w.write('a.ts', 'two');
  await waitFor('a.ts in a batch', () => w.changed('a.ts').length > 0);
  await w.sentinel();
  assert.equal(w.changed('a.ts').length, 1);
  const [batch] = w.changed('a.ts');
  assert.deepEqual(
    batch.changed.map((file) => file.path),
    ['a.ts'],
  );
  assert.equal(batch.changed[0].text, 'two');
  assert.ok(
    w.batches.every((b) => b.changed.every((file) => file.path !== 'b.ts')),
    'untouched files are not reported',
  );
});

test('a file changed twice in a burst is reported once, with its last content', async (t) => {
  const w = await watch(t, { 'a.ts': 'one' });
  w.write('a.ts', 'two');
  w.write('a.ts', 'three');
  await waitFor('a.ts with its last content', () => w.changed('a.ts').some((batch) => batch.changed.some((file) => file.text === 'three')));
  await w.sentinel();
  assert.equal(w.changed('a.ts').length, 1, JSON.stringify(w.batches.map((batch) => batch.changed.map((file) => file.text))));
});

test('a burst of 500 files (a branch switch) is coalesced into at most 3 batches that hold all 500', async (t) => {
  const w = await watch(t, { 'burst/.keep': '' });
  const names = Array.from({ length: 500 }, (_, i) => `burst/file${i}.ts`);
  await Promise.all(names.map((name, i) => writeFile(path.join(w.root, name), `export const n = ${i};\n`)));
  const reported = () => new Set(w.batches.flatMap((batch) => batch.changed.map((file) => file.path)));
  await waitFor('all 500 files reported', () => names.every((name) => reported().has(name)), 60_000);
  const burstBatches = w.batches.filter((batch) => batch.changed.some((file) => file.path.startsWith('burst/file')));
  t.diagnostic(`500 files arrived in ${burstBatches.length} batch(es): ${burstBatches.map((batch) => batch.changed.length).join(' + ')}`);
  assert.ok(burstBatches.length <= 3, `${burstBatches.length} batches`);
  assert.equal(
    burstBatches.reduce((sum, batch) => sum + batch.changed.length, 0),
    500,
    'each file once',
  );
});

test('a deleted file is reported as deleted', async (t) => {
  const w = await watch(t, { 'a.ts': 'a', 'b.ts': 'b' });
  unlinkSync(path.join(w.root, 'b.ts'));
  await waitFor('b.ts deleted', () => w.deleted('b.ts').length > 0);
  await w.sentinel();
  assert.equal(w.deleted('b.ts').length, 1);
  assert.deepEqual(
    w.batches.flatMap((batch) => batch.deleted),
    ['b.ts'],
  );
});

test('a rename is reported as a deletion of the old path and a change of the new one', async (t) => {
  const w = await watch(t, { 'src/old-name.ts': 'export const x = 1;\n' });
  renameSync(path.join(w.root, 'src/old-name.ts'), path.join(w.root, 'src/new-name.ts'));
  await waitFor('both sides of the rename', () => w.deleted('src/old-name.ts').length > 0 && w.changed('src/new-name.ts').length > 0);
  const renamed = w.changed('src/new-name.ts')[0].changed.find((file) => file.path === 'src/new-name.ts');
  assert.equal(renamed?.text, 'export const x = 1;\n');
});

test('a renamed directory: its files are deleted under the old path and changed under the new one', async (t) => {
  const w = await watch(t, { 'old/a.ts': 'a', 'old/sub/b.ts': 'b', 'keep.ts': 'k' });
  renameSync(path.join(w.root, 'old'), path.join(w.root, 'new'));
  const reported = () => ({
    deleted: new Set(w.batches.flatMap((batch) => batch.deleted)),
    changed: new Set(w.batches.flatMap((batch) => batch.changed.map((file) => file.path))),
  });
  await waitFor('all four sides of the move', () => {
    const { deleted, changed } = reported();
    return deleted.has('old/a.ts') && deleted.has('old/sub/b.ts') && changed.has('new/a.ts') && changed.has('new/sub/b.ts');
  });
  await w.sentinel();
  assert.ok(!reported().deleted.has('keep.ts') && !reported().changed.has('keep.ts'));
});

test('re-saving a file with unchanged content reports nothing', async (t) => {
  const w = await watch(t, { 'a.ts': 'same' });
  w.write('a.ts', 'same');
  await w.sentinel();
  assert.deepEqual(w.changed('a.ts'), []);
  assert.equal(w.batches.length, 1, 'only the sentinel');
});

test('a file created and deleted within one burst is not reported at all', async (t) => {
  const w = await watch(t, { 'a.ts': 'a' });
  w.write('scratch.tmp', 'short-lived');
  unlinkSync(path.join(w.root, 'scratch.tmp'));
  await w.sentinel();
  assert.deepEqual(w.changed('scratch.tmp'), []);
  assert.deepEqual(w.deleted('scratch.tmp'), []);
});

test('a file that existed before, edited and then deleted within a burst, is reported only as deleted', async (t) => {
  const w = await watch(t, { 'a.ts': 'a', 'b.ts': 'b' });
  w.write('a.ts', 'edited');
  unlinkSync(path.join(w.root, 'a.ts'));
  await waitFor('a.ts deleted', () => w.deleted('a.ts').length > 0);
  await w.sentinel();
  assert.deepEqual(w.changed('a.ts'), []);
});

test('.gitignore edited to ignore a file: it leaves the context and is no longer reported', async (t) => {
  const w = await watch(t, { '.gitignore': '*.log\n', 'notes.txt': 'v1', 'main.ts': 'm' });
  w.write('.gitignore', '*.log\nnotes.txt\n');
  await waitFor('notes.txt deleted', () => w.deleted('notes.txt').length > 0);
  const batch = w.deleted('notes.txt')[0];
  assert.ok(
    batch.changed.some((file) => file.path === '.gitignore'),
    'the rules file itself changed',
  );
  assert.deepEqual(batch.skipped.find((entry) => entry.path === 'notes.txt')?.detail, 'matched "notes.txt" in .gitignore');
  const batchesBefore = w.batches.length;
  w.write('notes.txt', 'v2');
  await w.sentinel();
  assert.deepEqual(
    w.batches.slice(batchesBefore).flatMap((b) => [...b.changed.map((file) => file.path), ...b.deleted, ...b.skipped.map((s) => s.path)]),
    ['sentinel-' + sentinelCount + '.txt'],
  );
});

test('.gitignore edited to stop ignoring a directory: its files join the context and are watched from then on', async (t) => {
  const w = await watch(t, { '.gitignore': 'gen/\n', 'gen/api.ts': 'v1', 'main.ts': 'm' });
  w.write('gen/api.ts', 'ignored edit');
  w.write('.gitignore', '');
  await waitFor('gen/api.ts reported', () => w.changed('gen/api.ts').length > 0);
  assert.equal(w.changed('gen/api.ts')[0].changed.find((file) => file.path === 'gen/api.ts')?.text, 'ignored edit');
  w.write('gen/api.ts', 'v3');
  await waitFor('the next edit of gen/api.ts', () => w.changed('gen/api.ts').some((batch) => batch.changed.some((file) => file.text === 'v3')), 30_000);
});

test('exclude globs keep files out of events too', async (t) => {
  const w = await watch(t, { 'node_modules/dep/index.js': 'x', 'a.ts': 'a' }, { exclude: ['**/node_modules'] });
  w.write('node_modules/dep/index.js', 'changed');
  mkdirSync(path.join(w.root, 'pkg/node_modules'), { recursive: true });
  w.write('pkg/node_modules/new.js', 'new');
  await w.sentinel();
  assert.deepEqual(
    w.batches.flatMap((batch) => batch.changed.map((file) => file.path)),
    [`sentinel-${sentinelCount}.txt`],
  );
});

test('a file that changes into one the context cannot take is reported as deleted and skipped, once', async (t) => {
  const w = await watch(t, { 'data.txt': 'text' });
  w.write('data.txt', Buffer.from([1, 2, 0, 3]));
  await waitFor('data.txt deleted', () => w.deleted('data.txt').length > 0);
  const batch = w.deleted('data.txt')[0];
  assert.equal(batch.skipped.find((entry) => entry.path === 'data.txt')?.reason, 'binary');
  w.write('data.txt', Buffer.from([1, 2, 0, 4]));
  await w.sentinel();
  assert.equal(w.batches.filter((b) => b.skipped.some((entry) => entry.path === 'data.txt')).length, 1, 'still binary: not reported again');
  assert.ok(w.logged.some((line) => line.startsWith('skipped data.txt: binary')));
});

test('with a baseline from an earlier scan, changes made before start are reported in the first batch', async (t) => {
  const root = makeWorkspace({ 'kept.ts': 'k', 'edited.ts': 'v1', 'removed.ts': 'r' });
  const { files } = await scanWorkspace(root);
  writeFileSync(path.join(root, 'edited.ts'), 'v2 is longer');
  unlinkSync(path.join(root, 'removed.ts'));
  writeFileSync(path.join(root, 'added.ts'), 'new');
  const w = await watch(t, {}, { baseline: files }, root);
  await waitFor('the first batch', () => w.batches.length > 0);
  assert.deepEqual(
    w.batches[0].changed.map((file) => file.path),
    ['added.ts', 'edited.ts'],
  );
  assert.deepEqual(w.batches[0].deleted, ['removed.ts']);
});
