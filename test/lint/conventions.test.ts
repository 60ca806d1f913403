// One convention everywhere: relative imports name `./module.js` (which eslint --fix
// writes), and files are named in kebab-case.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { ESLint } from 'eslint';

const ROOT = path.resolve(__dirname, '../..');
const tree = mkdtempSync(path.join(os.tmpdir(), 'panorama-lint-style-'));
after(() => rmSync(tree, { recursive: true, force: true }));

function write(file: string, text: string): string {
  const full = path.join(tree, file);
  mkdirSync(path.dirname(full), { recursive: true });
  writeFileSync(full, text);
  return full;
}

test('a relative import without .js is reported and fixed to name the .js', async () => {
  write('extension/chat/helper.ts', 'export const helper = 1;\n');
  const text = 'import { helper } from \'./helper\';\nexport { helper as again } from "./helper";\nexport const x = helper;\n';
  const file = write('extension/chat/user.ts', text);
  const [reported] = await new ESLint({ cwd: tree, overrideConfigFile: path.join(ROOT, 'eslint.config.mjs') }).lintText(text, { filePath: file });
  assert.deepEqual(
    reported.messages.filter((m) => m.ruleId === 'panorama/relative-import-extension').map((m) => m.message),
    [
      "Write the relative import as './helper.js': one import style everywhere (eslint --fix adds it).",
      "Write the relative import as './helper.js': one import style everywhere (eslint --fix adds it).",
    ],
  );
  const [fixed] = await new ESLint({ cwd: tree, overrideConfigFile: path.join(ROOT, 'eslint.config.mjs'), fix: true }).lintText(text, { filePath: file });
  assert.equal(fixed.output, 'import { helper } from \'./helper.js\';\nexport { helper as again } from "./helper.js";\nexport const x = helper;\n');
});

test('packages, .js imports and files that are not TypeScript modules are left alone', async () => {
  write('engine/model/config.ts', 'export const c = 1;\n');
  write('engine/model/data.json', '{}\n');
  const text = "import path from 'node:path';\nimport { c } from './config.js';\nimport data from './data.json';\nexport const x = [path, c, data];\n";
  const [result] = await new ESLint({ cwd: tree, overrideConfigFile: path.join(ROOT, 'eslint.config.mjs') }).lintText(text, { filePath: write('engine/model/user.ts', text) });
  assert.deepEqual(
    result.messages.filter((m) => m.ruleId === 'panorama/relative-import-extension'),
    [],
  );
});

test('a file not named in kebab-case is reported with the name to give it', async () => {
  const eslint = new ESLint({ cwd: tree, overrideConfigFile: path.join(ROOT, 'eslint.config.mjs') });
  const text = 'export const x = 1;\n';
  const [camel] = await eslint.lintText(text, { filePath: write('extension/chat/chatViewProvider.ts', text) });
  assert.deepEqual(
    camel.messages.filter((m) => m.ruleId === 'panorama/kebab-case-file-names').map((m) => m.message),
    ["Name the file 'chat-view-provider.ts': files are kebab-case everywhere (git mv it and update its imports)."],
  );
  for (const name of ['extension/chat/chat-view-provider.ts', 'test/lint/conventions.test.ts', 'engine/vocabulary.ts']) {
    const [result] = await eslint.lintText(text, { filePath: write(name, text) });
    assert.deepEqual(
      result.messages.filter((m) => m.ruleId === 'panorama/kebab-case-file-names'),
      [],
      name,
    );
  }
});
