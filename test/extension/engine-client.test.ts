// The engine client against a fake engine process: streaming, cancellation that
// reaches the engine, start failures with the engine's own words, crash restarts
// with backoff, and a clean shutdown.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { CancellationTokenSource } from 'vscode-jsonrpc/node';
import { EngineClient, EngineRequestError, isNotReady, type ClientState } from '../../extension/engine/client.js';

const fakeEngine = path.join(__dirname, 'fixtures', 'fake-engine.cjs');
const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

function client(env: Record<string, string> = {}, backoff = { initialMs: 20, maxMs: 50, maxAttempts: 2, stableMs: 60_000 }): EngineClient {
  return new EngineClient({
    logger: quiet,
    backoff,
    discover: () => ({
      ok: true,
      notes: [],
      launch: { command: process.execPath, args: ['-e', 'require(process.argv[1]).run(process.argv.slice(2))', fakeEngine, 'rpc'], env, origin: 'setting', enginePath: fakeEngine },
    }),
    initializeParams: () => ({ protocolVersion: 1, workspaceRoot: '/ws', storeDir: '/store' }),
  });
}

function waitForState(engine: EngineClient, kind: ClientState['kind'], timeoutMs = 10_000): Promise<ClientState> {
  if (engine.state.kind === kind) return Promise.resolve(engine.state);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`state stayed ${engine.state.kind}, wanted ${kind}`)), timeoutMs);
    const subscription = engine.onState((state) => {
      if (state.kind !== kind) return;
      clearTimeout(timer);
      subscription.dispose();
      resolve(state);
    });
  });
}

test('requests reach a running engine; answers stream; Stop cancels inside the engine', async () => {
  const engine = client();
  try {
    const statuses: string[] = [];
    engine.onStatus((status) => statuses.push(status.state));
    await engine.start();
    assert.equal(engine.state.kind, 'running');
    assert.equal((await engine.request('complete', { path: 'a.ts', prefix: 'x', suffix: '' })).text, 'done()');

    let deltas = 0;
    engine.onAskDelta(({ requestId }) => requestId === 'q1' && deltas++);
    const cancel = new CancellationTokenSource();
    const asking = engine.request('ask', { requestId: 'q1', question: 'why?' }, cancel.token);
    while (deltas < 3) await new Promise((resolve) => setTimeout(resolve, 5));
    cancel.cancel();
    const result = await asking;
    assert.equal(result.finishReason, 'cancelled', 'the engine saw $/cancelRequest');
    assert.ok(deltas < 50, `stopped after ${deltas} of 200 deltas`);
    assert.deepEqual(statuses, ['ready']);
  } finally {
    await engine.stop();
  }
  assert.equal(engine.state.kind, 'stopped');
  await assert.rejects(engine.request('status', {}), /not running|stopped/);
});

test('an engine that cannot initialize leaves a failed state with its reason', async () => {
  const engine = client({ FAKE_FAIL_INIT: '1' });
  await engine.start();
  const state = engine.state;
  assert.equal(state.kind, 'failed');
  assert.match(state.kind === 'failed' ? state.message : '', /no config\.json/);
  await engine.stop();
});

test('a crashed engine restarts with backoff, and gives up after too many crashes in a row', async () => {
  const starts = path.join(mkdtempSync(path.join(tmpdir(), 'panorama-client-')), 'starts');
  const engine = client({ FAKE_CRASH_AFTER_MS: '150', FAKE_STARTS_FILE: starts });
  const seen: string[] = [];
  engine.onState((state) => seen.push(state.kind));
  await engine.start();
  const failed = await waitForState(engine, 'failed');
  assert.match(failed.kind === 'failed' ? failed.message : '', /crashed 2 times/);
  assert.equal(readFileSync(starts, 'utf8').trim().split('\n').length, 3, 'first start + 2 restarts');
  assert.deepEqual(seen.filter((kind) => kind === 'restarting').length, 2);
  // Retry resets the count and starts again
  await engine.restart();
  assert.equal(engine.state.kind, 'running');
  await engine.stop();
});

test('an ask before the workspace is open is recognisably "not ready", not a failure', async () => {
  const engine = client({ FAKE_NOT_READY: '1' });
  await engine.start();
  try {
    await assert.rejects(engine.request('ask', { requestId: 'early', question: 'q' }), (error: unknown) => isNotReady(error));
    await assert.rejects(
      engine.request('status', {}).then(() => Promise.reject(new Error('other'))),
      (error: unknown) => !isNotReady(error),
    );
    // told apart by kind, from the protocol's error codes; the user reads what to do
    await assert.rejects(
      engine.request('ask', { requestId: 'early', question: 'q' }),
      (error: unknown) =>
        error instanceof EngineRequestError && error.kind === 'notReady' && error.code === -32003 && /Ask again when the status bar says ready/.test(error.message),
    );
    await assert.rejects(engine.request('reindex', {}), (error: unknown) => error instanceof EngineRequestError && error.kind === 'methodNotFound');
  } finally {
    await engine.stop();
  }
});
