import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { resolveInside, toWorkspacePath } from '../../extension/workspace-paths.js';

const root = path.resolve('/ws/project');

test('resolveInside keeps paths inside the root', () => {
  assert.equal(resolveInside(root, 'src/a.ts'), path.join(root, 'src', 'a.ts'));
  assert.equal(resolveInside(root, 'src/../b.ts'), path.join(root, 'b.ts'));
  for (const escape of ['../x', 'src/../../x', '/etc/passwd', '..', '', 'a\0b']) assert.equal(resolveInside(root, escape), undefined, escape);
  // a sibling whose name starts with the root's name is still outside
  assert.equal(resolveInside(root, '../project-evil/a'), undefined);
});

test('toWorkspacePath gives / separators and refuses outside files', () => {
  assert.equal(toWorkspacePath(root, path.join(root, 'src', 'a.ts')), 'src/a.ts');
  assert.equal(toWorkspacePath(root, path.resolve('/elsewhere/a.ts')), undefined);
  assert.equal(toWorkspacePath(root, root), undefined);
});
