// workspace/map and answer/overlay through `panorama rpc` as a child process:
// params validated at the boundary, an overlay found by the ask's request id.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ResponseError } from 'vscode-jsonrpc';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import type { AnswerOverlay, AskResult, EngineStatus, WorkspaceMap } from '../../engine/server/protocol.js';
import { PROTOCOL_VERSION } from '../../engine/server/protocol.js';
import { FIXTURE, makeWorkspace, removeTempDirs, spawnPanorama, tempDir, waitFor } from './helpers.js';

const { child, exited } = spawnPanorama(['rpc']);
const connection = createMessageConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
connection.onError(() => undefined);
connection.listen();

after(async () => {
  child.kill('SIGKILL');
  await exited;
  removeTempDirs();
});

async function refused(promise: Promise<unknown>): Promise<ResponseError<{ field?: string } | undefined>> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ResponseError);
    return err;
  }
  assert.fail('expected the request to be refused');
}

test('the map answers with cells, validates maxCells, and an answer’s overlay is found by its request id', async () => {
  const workspace = makeWorkspace();
  await connection.sendRequest('initialize', {
    protocolVersion: PROTOCOL_VERSION,
    workspaceRoot: workspace,
    storeDir: tempDir('panorama-map-store-'),
    modelDir: FIXTURE,
    device: 'cpu',
  });
  await waitFor('ready', async () => ((await connection.sendRequest<EngineStatus>('status', {})).state === 'ready' ? true : undefined), 30_000, 100);
  const map = await connection.sendRequest<WorkspaceMap>('workspace/map', {});
  assert.equal(map.phase, 'ready');
  assert.ok(map.cells.some((c) => c.path === 'src/lib/m1.ts' && c.state === 'encoded'));
  assert.ok(map.cells.some((c) => c.path === 'node_modules' && c.reason === 'ignored'));
  const small = await connection.sendRequest<WorkspaceMap>('workspace/map', { maxCells: 16 });
  assert.ok(small.cells.length <= 16);
  const bad = await refused(connection.sendRequest('workspace/map', { maxCells: 2 }));
  assert.equal(bad.code, -32602);
  assert.equal(bad.data?.field, 'maxCells');
  assert.match(bad.message, /maxCells must be in \[16, 20000\], got 2/);

  const answer = await connection.sendRequest<AskResult>('ask', { requestId: 'r1', question: 'Where is c1_2?', maxTokens: 4 });
  assert.equal('blockHits' in answer, false, 'the ask result carries no block counts');
  const overlay = await connection.sendRequest<AnswerOverlay>('answer/overlay', { requestId: 'r1' });
  assert.equal(overlay.requestId, 'r1');
  assert.deepEqual(
    overlay.places
      .slice(0, answer.sources.length)
      .map((p) => p.path)
      .sort(),
    answer.sources.map((s) => s.path).sort(),
  );
  const unknown = await refused(connection.sendRequest('answer/overlay', { requestId: 'never-asked' }));
  assert.equal(unknown.code, -32602);
  assert.match(unknown.message, /requestId names no answer this engine kept .*: ask again/);
  const empty = await refused(connection.sendRequest('answer/overlay', {}));
  assert.match(empty.message, /requestId must be a string/);
});
