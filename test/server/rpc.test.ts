// `panorama rpc` as a real child process, driven the way the extension drives it:
// vscode-jsonrpc over the child's stdio, on the fixture model (random weights:
// the text is noise, so these tests check protocol behaviour, not content).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CancellationTokenSource, NotificationType, ResponseError, type MessageConnection } from 'vscode-jsonrpc';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import type { AskResult, CompleteResult, EngineNotifications, EngineStatus, InitializeResult } from '../../engine/server/protocol.js';
import { EngineErrorCodes, PROTOCOL_VERSION } from '../../engine/server/protocol.js';
import { FIXTURE, makeWorkspace, prng, removeTempDirs, spawnPanorama, tempDir, waitFor, within } from './helpers.js';

interface Engine {
  connection: MessageConnection;
  statuses: EngineStatus[];
  deltas: Map<string, string[]>;
  logs: string[];
  stderr: () => string;
  exited: Promise<number | null>;
  kill: () => void;
  stdin: NodeJS.WritableStream;
}

const engines: Engine[] = [];

function startEngine(): Engine {
  const { child, stderr, exited } = spawnPanorama(['rpc']);
  const connection = createMessageConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
  const engine: Engine = { connection, statuses: [], deltas: new Map(), logs: [], stderr, exited, kill: () => child.kill('SIGKILL'), stdin: child.stdin };
  const notification = <M extends keyof EngineNotifications>(method: M) => new NotificationType<EngineNotifications[M]>(method);
  connection.onNotification(notification('panorama/status'), (status) => {
    engine.statuses.push(status);
  });
  connection.onNotification(notification('panorama/askDelta'), ({ requestId, text }) => {
    engine.deltas.set(requestId, [...(engine.deltas.get(requestId) ?? []), text]);
  });
  connection.onNotification(notification('panorama/log'), ({ message }) => {
    engine.logs.push(message);
  });
  connection.onError(() => undefined);
  // As the extension's client does: a closed connection is disposed, which fails pending requests.
  connection.onClose(() => connection.dispose());
  connection.listen();
  engines.push(engine);
  return engine;
}

/** The error a request was answered with (fails if it succeeded). */
async function rejection(promise: Promise<unknown>): Promise<ResponseError<{ field?: string } | undefined>> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ResponseError, `expected a JSON-RPC error, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the request to be refused');
}

async function initialize(engine: Engine, workspaceRoot: string, storeDir: string): Promise<InitializeResult> {
  return engine.connection.sendRequest('initialize', { protocolVersion: PROTOCOL_VERSION, workspaceRoot, storeDir, modelDir: FIXTURE, device: 'cpu' });
}

function status(engine: Engine): Promise<EngineStatus> {
  return engine.connection.sendRequest('status', {});
}

function waitReady(engine: Engine, timeoutMs = 30_000): Promise<EngineStatus> {
  return waitFor(
    'the engine to be ready',
    async () => {
      const s = await status(engine);
      assert.notEqual(s.state, 'error', s.error);
      return s.state === 'ready' ? s : undefined;
    },
    timeoutMs,
    100,
  );
}

after(async () => {
  for (const engine of engines) engine.kill();
  await Promise.all(engines.map((engine) => engine.exited));
  removeTempDirs();
});

// One engine holds the workspace for the protocol tests below (model load + index once).
let main: Engine;
let workspace: string;
let outside: string;
let storeDir: string;

before(async () => {
  workspace = makeWorkspace();
  outside = tempDir('panorama-outside-');
  writeFileSync(path.join(outside, 'secret.txt'), 'not for the model\n');
  symlinkSync(outside, path.join(workspace, 'escape'));
  storeDir = tempDir('panorama-rpc-store-');
  main = startEngine();
});

test('requests before initialize are refused with a clear error; unknown methods get MethodNotFound', async () => {
  const early = await rejection(status(main));
  assert.equal(early.code, EngineErrorCodes.notInitialized);
  assert.match(early.message, /not initialized: send initialize first/);
  const unknown = await rejection(main.connection.sendRequest('frobnicate', {}));
  assert.equal(unknown.code, -32601);
});

test('initialize validates its params and reports the model and device; a second initialize is refused', async () => {
  const noRoot = await rejection(main.connection.sendRequest('initialize', { protocolVersion: PROTOCOL_VERSION, storeDir }));
  assert.equal(noRoot.code, -32602);
  assert.match(noRoot.message, /workspaceRoot must be a string/);
  const relative = await rejection(main.connection.sendRequest('initialize', { protocolVersion: PROTOCOL_VERSION, workspaceRoot: 'ws', storeDir }));
  assert.match(relative.message, /workspaceRoot must be an absolute path/);
  const version = await rejection(main.connection.sendRequest('initialize', { protocolVersion: 99, workspaceRoot: workspace, storeDir }));
  assert.match(version.message, /protocolVersion is 99, but this engine speaks protocol 1/);
  const notDir = await rejection(
    main.connection.sendRequest('initialize', { protocolVersion: PROTOCOL_VERSION, workspaceRoot: path.join(workspace, 'nope'), storeDir, modelDir: FIXTURE }),
  );
  assert.match(notDir.message, /workspaceRoot is not a directory/);
  const noModel = await rejection(main.connection.sendRequest('initialize', { protocolVersion: PROTOCOL_VERSION, workspaceRoot: workspace, storeDir, modelDir: workspace }));
  assert.equal(noModel.data?.field, 'modelDir');
  assert.match(noModel.message, /modelDir is not a model directory: it has no config\.json/);

  const result = await initialize(main, workspace, storeDir);
  assert.equal(result.protocolVersion, PROTOCOL_VERSION);
  assert.match(result.engineVersion, /^\d+\.\d+\.\d+/);
  assert.equal(result.model.name, 'sala-tiny-a');
  assert.equal(result.model.vocabSize, 512);
  assert.ok(result.model.parameters > 1_000_000);
  assert.equal(result.device.kind, 'cpu');
  const again = await rejection(initialize(main, workspace, storeDir));
  assert.match(again.message, /already called/);
});

test('status goes from indexing to ready, with files, tokens and progress notifications', async () => {
  const ready = await waitReady(main);
  assert.equal(ready.files, 5, '4 sources + .gitignore');
  assert.ok(ready.liveTokens > 0);
  assert.equal(ready.deadTokens, 0);
  assert.equal(ready.device, 'cpu');
  assert.equal(ready.tokenBudget, 1_000_000);
  assert.ok(main.statuses.some((s) => s.state === 'indexing'));
  assert.ok(main.statuses.some((s) => s.state === 'ready'));
});

test('ask streams askDelta notifications whose concatenation is the final text, with sources', async () => {
  const result: AskResult = await main.connection.sendRequest('ask', { requestId: 'q1', question: 'Where is c1_2 defined?', maxTokens: 24 });
  assert.ok(['eos', 'stop', 'length'].includes(result.finishReason));
  assert.ok(result.promptTokens > 0);
  // Notifications are written before the response on the same stream, so all have arrived.
  assert.equal((main.deltas.get('q1') ?? []).join(''), result.text);
  for (const source of result.sources) {
    assert.match(source.path, /^(src\/|\.gitignore)/);
    assert.ok(source.startLine >= 1 && source.endLine >= source.startLine);
  }
  const s = await status(main);
  assert.equal(s.lastRequest?.kind, 'ask');
  assert.ok((s.lastRequest?.tokens ?? 0) >= result.promptTokens);
});

test('complete returns text with its latency, and reuses the prefix state when typing on', async () => {
  const first: CompleteResult = await main.connection.sendRequest('complete', { path: 'src/m0.ts', prefix: 'export const total = c0_1 + ', suffix: '\n', maxTokens: 6 });
  assert.equal(typeof first.text, 'string');
  assert.ok(first.latencyMs >= 0 && first.fedTokens > 0);
  const next: CompleteResult = await main.connection.sendRequest('complete', { path: 'src/m0.ts', prefix: 'export const total = c0_1 + c0_2 + ', suffix: '\n', maxTokens: 6 });
  assert.ok(next.reusedTokens > 0, 'the shared prefix is not fed again');
  // A completion in a file that does not exist yet (an unsaved new file) is fine.
  await main.connection.sendRequest('complete', { path: 'src/new-file.ts', prefix: 'x', suffix: '', maxTokens: 2 });
});

test('$/cancelRequest stops a streaming ask within a token: finishReason cancelled, promptly', async () => {
  // Greedy decoding on this workspace runs this question to the token limit (no early end-of-text).
  const source = new CancellationTokenSource();
  const started = Date.now();
  const pending = main.connection.sendRequest<AskResult>('ask', { requestId: 'long', question: 'Explain everything.', maxTokens: 2000 }, source.token);
  await waitFor('the first streamed delta', () => ((main.deltas.get('long') ?? []).length > 0 ? true : undefined), 20_000, 10);
  const cancelledAt = Date.now();
  source.cancel();
  const result = await within(2000, 'the cancelled ask', pending);
  assert.equal(result.finishReason, 'cancelled');
  assert.ok(Date.now() - cancelledAt < 1500, `took ${Date.now() - cancelledAt} ms after the cancel`);
  assert.ok(Date.now() - started < 15_000);
  assert.equal((main.deltas.get('long') ?? []).join(''), result.text);
});

test('paths that leave the workspace are refused: ../, absolute, symlink out, NUL', async () => {
  const cases: [string, RegExp][] = [
    ['../x', /must not contain '\.\.' segments/],
    ['src/../../x', /must not contain '\.\.' segments/],
    ['/etc/passwd', /not absolute/],
    ['C:\\Windows\\win.ini', /not absolute/],
    ['escape/secret.txt', /outside the workspace \(through a symbolic link\)/],
    ['escape/not-yet.txt', /outside the workspace/],
    ['src/a\u0000b', /NUL/],
  ];
  for (const [bad, message] of cases) {
    const viaComplete = await rejection(main.connection.sendRequest('complete', { path: bad, prefix: 'a', suffix: '', maxTokens: 1 }));
    assert.equal(viaComplete.code, -32602, bad);
    assert.match(viaComplete.message, /^invalid params: path /, bad);
    assert.match(viaComplete.message, message, bad);
    assert.equal(viaComplete.data?.field, 'path');
    const viaSelection = await rejection(main.connection.sendRequest('ask', { requestId: 'sel', question: 'what is this?', selection: { path: bad, text: 'x' }, maxTokens: 1 }));
    assert.equal(viaSelection.code, -32602, bad);
    assert.match(viaSelection.message, /selection\.path/);
  }
});

test('wrong param types are InvalidParams errors that name the field', async () => {
  const cases: [string, unknown, RegExp][] = [
    ['ask', { requestId: 'x', question: 42 }, /question must be a string, got number/],
    ['ask', { requestId: 'x', question: '' }, /question must not be empty/],
    ['ask', { question: 'q' }, /requestId must be a string/],
    ['ask', { requestId: 'x', question: 'q', maxTokens: 1e9 }, /maxTokens must be in \[1, 8192\]/],
    ['ask', { requestId: 'x', question: 'q', maxTokens: 2.5 }, /maxTokens must be an integer/],
    ['ask', { requestId: 'x', question: 'q', selection: 'src/m0.ts' }, /selection must be an object/],
    ['complete', { path: 'src/m0.ts', prefix: 'a' }, /suffix must be a string/],
    ['complete', { path: 'src/m0.ts', prefix: 'a', suffix: '', stop: [1] }, /stop\[0\] must be a string/],
    ['setPaused', {}, /paused is required/],
    ['setPaused', { paused: 'yes' }, /paused must be a boolean/],
    ['status', [1, 2], /params must be an object/],
  ];
  for (const [method, params, message] of cases) {
    const error = await rejection(main.connection.sendRequest(method, params));
    assert.equal(error.code, -32602, `${method} ${JSON.stringify(params)}`);
    assert.match(error.message, message);
  }
});

test('a bounded fuzz of request params gets only results or JSON-RPC errors, and the engine stays up', async () => {
  const random = prng(7);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const values: unknown[] = [
    null,
    true,
    0,
    -1,
    1,
    2,
    2.5,
    1e9,
    '',
    'x',
    '../x',
    '/etc/passwd',
    'src/m0.ts',
    [],
    ['a'],
    {},
    { path: 'src/m0.ts', text: 'x' },
    '\u0000',
    'a'.repeat(300),
  ];
  const methods = ['ask', 'complete', 'status', 'initialize', 'nope'];
  const fields = ['requestId', 'question', 'selection', 'maxTokens', 'temperature', 'path', 'prefix', 'suffix', 'stop', 'protocolVersion', 'workspaceRoot'];
  let answered = 0;
  for (let i = 0; i < 150; i++) {
    const params: Record<string, unknown> = {};
    for (let k = 0; k < 1 + Math.floor(random() * 5); k++) params[pick(fields)] = pick(values);
    // Keep generations short so the run stays bounded.
    if (typeof params.maxTokens === 'number' && params.maxTokens > 4 && params.maxTokens <= 8192) params.maxTokens = 2;
    try {
      await main.connection.sendRequest(pick(methods), random() < 0.1 ? pick(values) : params);
    } catch (err) {
      assert.ok(err instanceof ResponseError, String(err));
      assert.notEqual(err.code, -32603, `internal error for ${JSON.stringify(params)}: ${err.message}`);
    }
    answered++;
  }
  assert.equal(answered, 150);
  assert.equal((await status(main)).state, 'ready');
});

test('pause holds file changes and resume applies them; reindex rebuilds from the files', async () => {
  const before = await status(main);
  const paused: EngineStatus = await main.connection.sendRequest('setPaused', { paused: true });
  assert.equal(paused.state, 'paused');
  mkdirSync(path.join(workspace, 'src', 'late'), { recursive: true });
  writeFileSync(path.join(workspace, 'src', 'late', 'added.ts'), 'export const added = 1;\n');
  await new Promise((resolve) => setTimeout(resolve, 2500)); // past the watcher's max wait
  assert.equal((await status(main)).files, before.files, 'nothing applied while paused');
  // Requests still run on the context while paused.
  await main.connection.sendRequest('complete', { path: 'src/m0.ts', prefix: 'a', suffix: '', maxTokens: 1 });
  const resumed: EngineStatus = await main.connection.sendRequest('setPaused', { paused: false });
  assert.equal(resumed.state, 'ready');
  await waitFor('the held change to be applied', async () => ((await status(main)).files === before.files + 1 ? true : undefined), 10_000, 100);

  const reindexing: EngineStatus = await main.connection.sendRequest('reindex', {});
  assert.equal(reindexing.state, 'indexing');
  const ready = await waitReady(main);
  assert.equal(ready.files, before.files + 1);
  assert.ok(main.logs.some((line) => /reindexing/.test(line)));
});

test('garbage on stdin is skipped with a message on stderr; the engine answers the next request', async () => {
  const engine = startEngine();
  const { stdin } = engine;
  stdin.write('this is not JSON-RPC at all \u0000\u0001\u00ff\r\n\r\n{"also": "not a frame"}\n');
  assert.equal((await rejection(status(engine))).code, EngineErrorCodes.notInitialized);
  // A well-framed message whose body is not JSON, and one that is JSON but not JSON-RPC.
  stdin.write('Content-Length: 9\r\n\r\n{"broken"');
  stdin.write('Content-Length: 11\r\n\r\n{"foo": 12}');
  stdin.write('Content-Length: 99999999999\r\n\r\n');
  assert.equal((await rejection(status(engine))).code, EngineErrorCodes.notInitialized);
  await waitFor('the stderr message', () => (/skipped \d+ bytes of input that were not a JSON-RPC message/.test(engine.stderr()) ? true : undefined), 5000);
  assert.match(engine.stderr(), /unreadable message/);
  assert.equal(await engine.connection.sendRequest('shutdown', {}), null);
  assert.equal(await within(10_000, 'exit after shutdown', engine.exited), 0);
});

test('killed mid-request: the client gets an error; a new engine reopens the saved context without re-encoding', async () => {
  const engine = startEngine();
  const store = tempDir('panorama-rpc-kill-');
  await initialize(engine, workspace, store);
  await waitReady(engine);
  const pending = engine.connection.sendRequest('ask', { requestId: 'k', question: 'Explain everything.', maxTokens: 2000 });
  await waitFor('the first delta', () => ((engine.deltas.get('k') ?? []).length > 0 ? true : undefined), 20_000, 10);
  engine.kill();
  await assert.rejects(within(5000, 'the failed request', pending), /Pending response rejected since connection got disposed/);
  assert.equal(await engine.exited, null, 'killed by a signal');

  const again = startEngine();
  await initialize(again, workspace, store);
  await waitReady(again);
  assert.ok(
    again.logs.some((line) => /\(0 encoded now, \d+ reopened\)/.test(line)),
    again.logs.join('\n'),
  );
  await again.connection.sendRequest('shutdown', {});
  assert.equal(await within(10_000, 'exit after shutdown', again.exited), 0);
});

test('the client going away (stdin closed) stops the engine, exit code 1', async () => {
  const engine = startEngine();
  await initialize(engine, workspace, tempDir('panorama-rpc-eof-'));
  engine.stdin.end();
  assert.equal(await within(10_000, 'exit on EOF', engine.exited), 1);
  assert.match(engine.stderr(), /the client closed the connection/);
});

test('shutdown saves and exits 0', async () => {
  assert.equal(await main.connection.sendRequest('shutdown', {}), null);
  assert.equal(await within(10_000, 'exit after shutdown', main.exited), 0);
});
