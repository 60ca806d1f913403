// The extension's command list comes from package.json, the file VS Code reads.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { contributedCommands } from '../../extension/contributed-commands.js';

const ROOT = path.resolve(__dirname, '../..');

test('the contributed commands are read from the real package.json', () => {
  const packageJson: unknown = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const ids = contributedCommands(packageJson);
  assert.ok(ids.length >= 13, `${ids.length} commands`);
  for (const id of ['panorama.ask', 'panorama.findWhere', 'panorama.showEngineLog', 'panorama.clearRemoteApiKey']) assert.ok(ids.includes(id), id);
  assert.equal(new Set(ids).size, ids.length, 'no command twice');
});

test('every contributed command is registered by the extension', () => {
  const ids = contributedCommands(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')));
  // every file of the extension: providers register their own commands (model-picker.ts, map/map-panel.ts)
  const files = readdirSync(path.join(ROOT, 'extension'), { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.ts'));
  const sources = files.map((file) => readFileSync(path.join(ROOT, 'extension', file), 'utf8')).join('\n');
  for (const id of ids) assert.ok(sources.includes(`'${id}'`), `${id} is registered`);
});

test('a package.json without a command list is refused with the reason', () => {
  assert.throws(() => contributedCommands({}), /no contributes\.commands list/);
  assert.throws(() => contributedCommands({ contributes: { commands: [{ title: 'x' }] } }), /contributes\.commands\[0\] has no command id/);
});
