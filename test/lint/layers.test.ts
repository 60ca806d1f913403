// The linter enforces the layers and forbids import cycles: ESLint's own Node API,
// with this repository's eslint.config.mjs, over files written to a temporary tree
// laid out like the repository (engine/, extension/, webview/).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { ESLint } from 'eslint';

const ROOT = path.resolve(__dirname, '../..');
const tree = mkdtempSync(path.join(os.tmpdir(), 'panorama-lint-'));
after(() => rmSync(tree, { recursive: true, force: true }));

const eslint = new ESLint({ cwd: tree, overrideConfigFile: path.join(ROOT, 'eslint.config.mjs') });

function write(file: string, text: string): string {
  const full = path.join(tree, file);
  mkdirSync(path.dirname(full), { recursive: true });
  writeFileSync(full, text);
  return full;
}

/** Lints `text` as if it were `file` of the repository; returns the messages of `ruleId`. */
async function lint(file: string, text: string, ruleId: string): Promise<string[]> {
  const [result] = await eslint.lintText(text, { filePath: write(file, text) });
  return result.messages.filter((m) => m.ruleId === ruleId).map((m) => m.message);
}

const restricted = (file: string, text: string) => lint(file, text, 'no-restricted-imports');

test('a wrong-way import between engine layers is an error that names the direction', async () => {
  const [message] = await restricted('engine/runtime/probe.ts', "import { SalaModel } from '../model/sala-model.js';\nexport const m = SalaModel;\n");
  assert.match(message ?? '', /engine\/runtime\/ runs tensors and sessions: it knows nothing of models \(imports point one way/);
  assert.equal((await restricted('engine/model/probe.ts', "import { WorkspaceContext } from '../context/workspace-context.js';\nexport const c = WorkspaceContext;\n")).length, 1);
  assert.equal((await restricted('engine/kv/probe.ts', "import type { SalaModel } from '../model/sala-model.js';\nexport type M = SalaModel;\n")).length, 1);
  assert.equal((await restricted('engine/context/probe.ts', "import { RpcServer } from '../server/rpc-server.js';\nexport const s = RpcServer;\n")).length, 1);
  assert.equal((await restricted('engine/server/probe.ts', "import { main } from '../cli/main.js';\nexport const m = main;\n")).length, 1);
  assert.equal((await restricted('engine/index/probe.ts', "import { SalaModel } from '../model/sala-model.js';\nexport const m = SalaModel;\n")).length, 1);
});

test('imports the right way round pass', async () => {
  assert.deepEqual(
    await restricted(
      'engine/context/probe.ts',
      "import { SalaModel } from '../model/sala-model.js';\nimport { planLayout } from '../index/layout.js';\nexport const x = [SalaModel, planLayout];\n",
    ),
    [],
  );
  assert.deepEqual(await restricted('engine/server/probe.ts', "import { WorkspaceIndex } from '../context/workspace-index.js';\nexport const x = WorkspaceIndex;\n"), []);
  assert.deepEqual(
    await restricted(
      'extension/chat/probe.ts',
      "import { EngineClient } from '../engine/client';\nimport type { AskParams } from '../../engine/server/protocol';\nexport type P = AskParams;\nexport const c = EngineClient;\n",
    ),
    [],
  );
});

test('the engine never imports vscode; the extension reaches engine/ only through what is declared shared', async () => {
  assert.match((await restricted('engine/context/probe.ts', "import * as vscode from 'vscode';\nexport const v = vscode;\n"))[0] ?? '', /must not import vscode/);
  assert.match(
    (await restricted('extension/probe.ts', "import { WorkspaceContext } from '../engine/context/workspace-context';\nexport const c = WorkspaceContext;\n"))[0] ?? '',
    /the extension imports only these modules of engine\//,
  );
  assert.match(
    (await restricted('extension/remote/probe.ts', "import { SalaModel } from '../../engine/model/sala-model';\nexport const m = SalaModel;\n"))[0] ?? '',
    /goes through a request/,
  );
  assert.match((await restricted('webview/probe.ts', "import { EngineClient } from '../extension/engine/client';\nexport const c = EngineClient;\n"))[0] ?? '', /by messages/);
  assert.match(
    (await restricted('webview/probe.ts', "import type { AskParams } from '../engine/server/protocol';\nexport type P = AskParams;\n"))[0] ?? '',
    /only engine\/vocabulary\.ts/,
  );
});

test('an import cycle is an error at the import that closes it, with the whole path', async () => {
  write('engine/model/cycle-b.ts', "import { a } from './cycle-a.js';\nexport const b = () => a;\n");
  const messages = await lint('engine/model/cycle-a.ts', "import { b } from './cycle-b.js';\nexport const a = () => b;\n", 'panorama/no-import-cycles');
  assert.deepEqual(messages, [
    'Import cycle: engine/model/cycle-a.ts → engine/model/cycle-b.ts → engine/model/cycle-a.ts. Move what both need into a module of its own, or invert one import.',
  ]);
  // three files round, extensionless imports and type-only imports count too
  write('extension/ring/two.ts', "import type { Three } from './three';\nexport type Two = Three;\n");
  write('extension/ring/three.ts', "import type { One } from './one';\nexport type Three = One | 3;\n");
  const ring = await lint('extension/ring/one.ts', "import type { Two } from './two';\nexport type One = Two | 1;\n", 'panorama/no-import-cycles');
  assert.equal(ring.length, 1);
  assert.match(ring[0], /extension\/ring\/one\.ts → extension\/ring\/two\.ts → extension\/ring\/three\.ts → extension\/ring\/one\.ts/);
  // no cycle: nothing reported
  write('engine/model/leaf.ts', 'export const leaf = 1;\n');
  assert.deepEqual(await lint('engine/model/root.ts', "import { leaf } from './leaf.js';\nexport const root = leaf;\n", 'panorama/no-import-cycles'), []);
});

test('the repository itself lints clean of layer and cycle errors', async () => {
  const repo = new ESLint({ cwd: ROOT });
  const results = await repo.lintFiles(['engine', 'extension', 'webview']);
  const problems = results.flatMap((r) =>
    r.messages
      .filter((m) => m.ruleId === 'no-restricted-imports' || m.ruleId === 'panorama/no-import-cycles')
      .map((m) => `${path.relative(ROOT, r.filePath)}:${m.line} ${m.message}`),
  );
  assert.deepEqual(problems, []);
});
