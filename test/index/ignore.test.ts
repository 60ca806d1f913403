// Ignore rules as data: a workspace, the caller's exclude globs, and what a scan must include
// and which entries it must report as ignored (an ignored directory is one entry, not entered).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { IgnoreRules } from '../../engine/index/ignore.js';
import { scanWorkspace } from '../../engine/index/scan.js';
import { cleanup, makeWorkspace, type Tree } from './workspace-fixture.js';

interface IgnoreCase {
  name: string;
  tree: Tree;
  exclude?: string[];
  included: string[];
  ignored: string[];
}

const cases: IgnoreCase[] = [
  {
    name: 'nested .gitignore: negation, anchored and directory-only patterns, relative to their directory',
    tree: {
      '.gitignore': '*.log\n!important.log\nbuild/\n/root-only.txt\ndist/\n',
      'app.ts': 'a',
      'debug.log': 'x',
      'important.log': 'kept by negation',
      'root-only.txt': 'anchored: ignored at the root only',
      'lib/root-only.txt': 'kept',
      'build/out.js': 'x',
      'lib/build/out.js': 'x',
      dist: 'a file named dist: directory-only pattern does not apply',
      'lib/.gitignore': '!debug.log\n*.tmp\n/local/\n',
      'lib/debug.log': 're-included by the nested negation',
      'lib/x.tmp': 'x',
      'x.tmp': 'the nested pattern does not reach the root',
      'lib/local/a.ts': 'anchored to lib/',
      'lib/deeper/local/a.ts': 'kept',
      'local/a.ts': 'kept',
      'lib/deeper/.gitignore': '# a comment\n\nsecret.ts\n',
      'lib/deeper/secret.ts': 'x',
      'lib/secret.ts': 'the deeper rule does not reach up',
    },
    included: [
      '.gitignore',
      'app.ts',
      'dist',
      'important.log',
      'lib/.gitignore',
      'lib/debug.log',
      'lib/deeper/.gitignore',
      'lib/deeper/local/a.ts',
      'lib/root-only.txt',
      'lib/secret.ts',
      'local/a.ts',
      'x.tmp',
    ],
    ignored: ['build', 'debug.log', 'lib/build', 'lib/deeper/secret.ts', 'lib/local', 'lib/x.tmp', 'root-only.txt'],
  },
  {
    name: 'a file inside an ignored directory cannot be re-included (as in git)',
    tree: {
      '.gitignore': 'logs/\n!logs/keep.txt\n',
      'logs/keep.txt': 'x',
      'main.ts': 'x',
    },
    included: ['.gitignore', 'main.ts'],
    ignored: ['logs'],
  },
  {
    name: '.panoramaignore adds rules and can re-include what git ignores; patterns inside a re-included directory still apply',
    tree: {
      '.gitignore': 'docs-generated/\n*.tmp\n',
      'docs-generated/scratch.tmp': 'x',
      '.panoramaignore': 'fixtures/\n*.snap\n!keep.snap\n!docs-generated/\n',
      'docs-generated/api.md': 'wanted in the context',
      'fixtures/big.json': '{}',
      'a.snap': 'x',
      'keep.snap': 'x',
      'src/b.snap': 'x',
      'src/index.ts': 'x',
    },
    included: ['.gitignore', '.panoramaignore', 'docs-generated/api.md', 'keep.snap', 'src/index.ts'],
    ignored: ['a.snap', 'docs-generated/scratch.tmp', 'fixtures', 'src/b.snap'],
  },
  {
    name: 'a deeper .gitignore can re-include a directory an outer one ignores',
    tree: {
      '.gitignore': 'vendor/\n*.orig\n',
      'lib/.gitignore': '!vendor/\n',
      'lib/vendor/dep.ts': 'x',
      'lib/vendor/dep.ts.orig': 'x',
      'vendor/other.ts': 'x',
    },
    included: ['.gitignore', 'lib/.gitignore', 'lib/vendor/dep.ts'],
    ignored: ['lib/vendor/dep.ts.orig', 'vendor'],
  },
  {
    name: 'exclude globs in files.exclude style; .git is always ignored',
    tree: {
      '.git/HEAD': 'ref: refs/heads/main\n',
      '.gitignore': '!.git\n',
      'node_modules/pkg/index.js': 'x',
      'packages/a/node_modules/dep/index.js': 'x',
      'packages/a/index.ts': 'x',
      'server.log': 'x',
      'packages/a/debug.log': 'x',
      'out/bundle.js': 'x',
      'packages/a/out/keep.ts': 'the glob "out" is anchored at the root',
      '.vscode/settings.json': '{}',
    },
    exclude: ['**/node_modules', '**/*.log', 'out/', './.vscode'],
    included: ['.gitignore', 'packages/a/index.ts', 'packages/a/out/keep.ts'],
    ignored: ['.git', '.vscode', 'node_modules', 'out', 'packages/a/debug.log', 'packages/a/node_modules', 'server.log'],
  },
  {
    name: '.git/info/exclude applies below every .gitignore (which can re-include)',
    tree: {
      '.git/info/exclude': 'scratch/\n*.bak\n',
      '.gitignore': '!keep.bak\n',
      'scratch/notes.ts': 'x',
      'old.bak': 'x',
      'keep.bak': 'kept: the .gitignore negation wins over info/exclude',
      'main.ts': 'a',
    },
    included: ['.gitignore', 'keep.bak', 'main.ts'],
    ignored: ['.git', 'old.bak', 'scratch'],
  },
];

const roots: string[] = [];
after(() => roots.forEach(cleanup));

for (const ignoreCase of cases) {
  test(`scan: ${ignoreCase.name}`, async () => {
    const root = makeWorkspace(ignoreCase.tree);
    roots.push(root);
    const logged: string[] = [];
    const { files, skipped } = await scanWorkspace(root, { exclude: ignoreCase.exclude, log: (message) => logged.push(message) });
    assert.deepEqual(
      files.map((file) => file.path),
      ignoreCase.included,
    );
    assert.deepEqual(
      skipped.filter((entry) => entry.reason === 'ignored').map((entry) => entry.path),
      ignoreCase.ignored,
    );
    assert.deepEqual(
      skipped.filter((entry) => entry.reason !== 'ignored'),
      [],
    );
    for (const entry of skipped) {
      assert.ok(entry.detail.length > 0, `${entry.path} has a detail`);
      assert.ok(
        logged.some((line) => line.includes(entry.path) && line.includes(entry.reason)),
        `${entry.path} is logged`,
      );
    }
  });
}

test('rules: the reason names the pattern and the file it came from', () => {
  const root = makeWorkspace(cases[0].tree);
  roots.push(root);
  const rules = new IgnoreRules(root, ['**/node_modules']);
  assert.equal(rules.matchEntry('lib/x.tmp', false), 'matched "*.tmp" in lib/.gitignore');
  assert.equal(rules.matchEntry('build', true), 'matched "build/" in .gitignore');
  assert.equal(rules.matchEntry('build', false), undefined, 'directory-only pattern, tested as a file');
  assert.equal(rules.matchEntry('a/node_modules', true), 'matched exclude glob "**/node_modules"');
  assert.equal(rules.matchEntry('.git', true), '.git is never indexed');
  assert.equal(rules.matchEntry('lib/debug.log', false), undefined, 'the nested negation wins over the root pattern');
});

test('rules: match() also sees ignored parent directories (for events on single paths)', () => {
  const root = makeWorkspace(cases[0].tree);
  roots.push(root);
  const rules = new IgnoreRules(root, ['**/node_modules']);
  assert.equal(rules.matchEntry('build/out.js', false), undefined, 'matchEntry judges the entry alone (a walk never enters build/)');
  assert.equal(rules.match('build/out.js', false), 'inside ignored directory build/ (matched "build/" in .gitignore)');
  assert.equal(rules.match('lib/local/a.ts', false), 'inside ignored directory lib/local/ (matched "/local/" in lib/.gitignore)');
  assert.equal(rules.match('x/node_modules/y/z.js', false), 'inside ignored directory x/node_modules/ (matched exclude glob "**/node_modules")');
  assert.equal(rules.match('.git/config', false), 'inside ignored directory .git/ (.git is never indexed)');
  assert.equal(rules.match('lib/deeper/local/a.ts', false), undefined);
});
