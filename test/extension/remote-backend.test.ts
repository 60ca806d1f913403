// The remote backend (extension/remote/) against a real `panorama serve` child
// process with a bearer key — the same OpenAI-compatible API vLLM and SGLang
// speak: a streamed chat answer, Stop that closes the request and cancels the
// generation in the server, an inline completion, clear messages for a wrong or
// missing key, a busy server (429), an unknown model and a server that is not
// there, and a workspace prefix that stays the same bytes until a file changes.
// What panorama serve never does — a broken event stream — comes from a few lines
// of node:http that misbehave on purpose.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { CancellationTokenSource } from 'vscode-jsonrpc/node';
import type { AskResult } from '../../engine/server/protocol.js';
import { CancelledError, RemoteBackend, type RemoteRequestInfo } from '../../extension/remote/remote-backend.js';
import { RemoteClient, RemoteError, type ChatMessage } from '../../extension/remote/remote-client.js';
import { WorkspacePrefix } from '../../extension/remote/workspace-prefix.js';
import { FIXTURE, makeWorkspace, removeTempDirs, spawnPanorama, tempDir, waitFor, within } from '../server/helpers.js';

const KEY = 'test-key-7f3a-4c9e-remote';
/** Greedy decoding with the fixture model runs this to the token limit (test/server/http.test.ts). */
const LONG_QUESTION = 'Explain every file, line by line, at length.';

let baseUrl: string;
let model: string;
let workspace: string;
let stopServer: () => Promise<void>;

before(async () => {
  workspace = makeWorkspace();
  // one generation at a time and no queue: a second concurrent request is refused with 429
  const { child, stderr, exited } = spawnPanorama([
    'serve',
    workspace,
    '--model',
    FIXTURE,
    '--port',
    '0',
    '--store',
    tempDir('panorama-remote-store-'),
    '--api-key',
    KEY,
    '--concurrency',
    '1',
    '--queue',
    '0',
    '--max-tokens-cap',
    '512',
  ]);
  stopServer = async () => {
    child.kill('SIGTERM');
    await within(10_000, 'server exit', exited).catch(() => child.kill('SIGKILL'));
  };
  const origin = await waitFor('the server to listen', () => /serving (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr())?.[1], 30_000);
  await waitFor('the workspace to be ready', async () => ((await fetch(`${origin}/health`)).status === 200 ? true : undefined), 60_000, 100);
  baseUrl = `${origin}/v1`;
  model = `panorama/${path.basename(workspace)}`;
});

after(async () => {
  await stopServer?.();
  removeTempDirs();
});

interface Harness {
  backend: RemoteBackend;
  prefix: WorkspacePrefix;
  requests: { path: string; body: Record<string, unknown> }[];
  done: RemoteRequestInfo[];
}

function harness(options: { apiKey?: string; model?: string; baseUrl?: string } = {}): Harness {
  const requests: Harness['requests'] = [];
  const done: RemoteRequestInfo[] = [];
  const client = new RemoteClient({
    baseUrl: options.baseUrl ?? baseUrl,
    apiKey: 'apiKey' in options ? options.apiKey : KEY,
    model: options.model,
    onRequest: (requestPath, body) => requests.push({ path: requestPath, body }),
  });
  const prefix = new WorkspacePrefix(workspace, { budgetChars: 20_000 });
  return { backend: new RemoteBackend({ client, prefix, onRequestDone: (info) => done.push(info) }), prefix, requests, done };
}

async function ask(backend: RemoteBackend, question: string, maxTokens = 24): Promise<{ result: AskResult; deltas: string[] }> {
  const deltas: string[] = [];
  const result = await backend.ask({ requestId: `q-${question.length}`, question, maxTokens }, (text) => deltas.push(text), new CancellationTokenSource().token);
  return { result, deltas };
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${baseUrl.replace(/\/v1$/, '')}/metrics`, { headers: { Authorization: `Bearer ${KEY}` } })).text();
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((sum, m) => sum + Number(m[1]), 0);
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('the request succeeded');
}

test('a chat answer streams in from the server, with the model the server lists when none is set', async () => {
  const { backend, done } = harness();
  const started = performance.now();
  const { result, deltas } = await ask(backend, 'What does m0.ts export?');
  assert.ok(deltas.length > 1, `the answer came in ${deltas.length} deltas`);
  assert.equal(result.text, deltas.join(''));
  assert.ok(result.promptTokens > 0, 'usage came with the stream');
  assert.equal(done.length, 1);
  assert.equal(done[0].model, model, 'the first (only) model of /v1/models');
  const firstToken = done[0].firstTokenMs ?? NaN;
  assert.ok(firstToken > 0 && firstToken < performance.now() - started);
  console.log(
    `# remote chat: first token ${firstToken.toFixed(0)} ms, ${done[0].totalMs.toFixed(0)} ms total, ${deltas.length} deltas, ${result.promptTokens} prompt tokens, prefix ${done[0].prefix.chars} chars`,
  );
});

test('Stop aborts the request and the server cancels the generation', async () => {
  const { backend } = harness({ model });
  const cancelledBefore = await metric('panorama_generations_cancelled_total');
  const source = new CancellationTokenSource();
  const deltas: string[] = [];
  let stoppedAt = 0;
  const asking = backend.ask(
    { requestId: 'long', question: LONG_QUESTION, maxTokens: 512 },
    (text) => {
      deltas.push(text);
      if (deltas.length === 3) {
        stoppedAt = performance.now();
        source.cancel();
      }
    },
    source.token,
  );
  const error = await within(10_000, 'the cancelled request to end', rejection(asking));
  const endedIn = performance.now() - stoppedAt;
  assert.ok(error instanceof CancelledError || (error instanceof Error && error.name === 'AbortError'), `rejected as cancelled: ${String(error)}`);
  assert.ok(deltas.length < 100, `the stream stopped (${deltas.length} deltas)`);
  await waitFor(
    'the server to count the cancelled generation',
    async () => ((await metric('panorama_generations_cancelled_total')) > cancelledBefore ? true : undefined),
    10_000,
    100,
  );
  console.log(`# remote Stop: the request ended ${endedIn.toFixed(0)} ms after cancel`);
  // the slot is free again: the next question is answered, not refused
  assert.ok((await ask(backend, 'Still there?')).deltas.length > 0);
});

test('an inline completion comes back from /v1/completions; a cancelled one is aborted', async () => {
  const { backend, requests } = harness({ model });
  const result = await backend.complete({ path: 'src/m0.ts', prefix: 'export const next = ', suffix: '', maxTokens: 8 }, new CancellationTokenSource().token);
  assert.equal(typeof result.text, 'string');
  // after a line with code that opens no block, the suggestion is at most the rest of that line or the next one
  assert.ok(result.text.split('\n').filter((line) => line.trim() !== '').length <= 1, JSON.stringify(result.text));
  assert.ok(result.fedTokens + result.reusedTokens > 0, 'usage came back');
  assert.ok(result.latencyMs > 0);
  const body = requests.find((request) => request.path === '/completions')?.body;
  assert.ok(typeof body?.prompt === 'string' && body.prompt.endsWith('\n### file: src/m0.ts\nexport const next = '));
  assert.deepEqual(body?.stop, ['\n### file: ']);

  const source = new CancellationTokenSource();
  source.cancel();
  assert.ok((await rejection(backend.complete({ path: 'src/m0.ts', prefix: 'x', suffix: '' }, source.token))) instanceof CancelledError);
});

test('a wrong or missing API key is a 401 that says which command sets it', async () => {
  for (const [apiKey, wording] of [
    ['not-the-key', /refused the API key \(401/],
    [undefined, /needs an API key \(401/],
  ] as const) {
    const error = await rejection(ask(harness({ apiKey, model }).backend, 'Hello?'));
    assert.ok(error instanceof RemoteError && error.kind === 'auth' && error.status === 401, String(error));
    assert.match(error.message, wording);
    assert.match(error.message, /Panorama: Set Remote API Key…/);
  }
});

test('a busy server (429), an unknown model and a server that is not there are clear errors', async () => {
  const { backend } = harness({ model });
  const source = new CancellationTokenSource();
  let started!: () => void;
  const running = new Promise<void>((resolve) => (started = resolve));
  const first = backend.ask({ requestId: 'busy', question: LONG_QUESTION, maxTokens: 512 }, () => started(), source.token).catch((error: unknown) => error);
  await running;
  const busy = await rejection(ask(harness({ model }).backend, 'And me?'));
  source.cancel();
  await first;
  assert.ok(busy instanceof RemoteError && busy.kind === 'rate-limited', String(busy));
  assert.match(busy.message, /busy \(429 Too Many Requests.*retry in 1 s/);

  const unknown = await rejection(ask(harness({ model: 'panorama/nope' }).backend, 'Hello?'));
  assert.ok(unknown instanceof RemoteError && unknown.kind === 'not-found', String(unknown));
  assert.match(unknown.message, /no model "panorama\/nope" \(404.*panorama\.remote\.model/);

  const closedPort = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 9));
    });
  });
  const down = await rejection(ask(harness({ baseUrl: `http://127.0.0.1:${closedPort}/v1`, model }).backend, 'Hello?'));
  assert.ok(down instanceof RemoteError && down.kind === 'unreachable', String(down));
  assert.match(down.message, new RegExp(`Cannot reach the remote server at http://127\\.0\\.0\\.1:${closedPort}/v1 \\(ECONNREFUSED\\)`));
});

test('the workspace prefix is the same bytes across requests until a file changes, then only that file moves', async () => {
  const { backend, prefix, requests } = harness({ model });
  const systemOf = (index: number): string => {
    const messages = requests.filter((request) => request.path === '/chat/completions')[index]?.body.messages as ChatMessage[];
    assert.equal(messages[0].role, 'system');
    return messages[0].content;
  };
  await ask(backend, 'First question?', 4);
  prefix.markDirty(); // as the file watcher would on any event: a rescan that finds nothing changed
  await ask(backend, 'A different second question?', 4);
  assert.equal(systemOf(1), systemOf(0), 'unchanged files: byte-identical system message');
  assert.match(systemOf(0), /### file: src\/m0\.ts\n/);

  const edited = path.join(workspace, 'src', 'm0.ts');
  writeFileSync(edited, 'export const edited = true;\n');
  prefix.markDirty();
  await ask(backend, 'Third question?', 4);
  assert.notEqual(systemOf(2), systemOf(0));
  assert.ok(systemOf(2).endsWith('\n### file: src/m0.ts\nexport const edited = true;\n'), 'the edited file is at the tail');
  assert.ok(!systemOf(2).includes('c0_1'), 'its old text is gone');
});

test('a broken event stream, a non-stream answer and a stream cut short are protocol errors, not crashes', async () => {
  const replies: Record<string, (res: http.ServerResponse) => void> = {
    malformed: (res) => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      res.write('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n');
      res.end('data: {"choices":[{"delta":{"content":"lo"\n\n');
    },
    html: (res) => {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end('<html>a proxy login page</html>');
    },
    cut: (res) => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      res.write('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n');
      res.socket?.destroy();
    },
    error: (res) => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      res.end('data: {"error":{"message":"CUDA out of memory"}}\n\n');
    },
  };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => replies[(req.headers.authorization ?? '').replace('Bearer ', '')]?.(res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  try {
    const expected: Record<string, RegExp> = {
      malformed: /malformed stream event: "\{\\"choices/,
      html: /answered a streamed chat request with text\/html instead of an event stream/,
      cut: /closed the stream before the answer was complete|Cannot reach/,
      error: /stopped with an error mid-answer: CUDA out of memory/,
    };
    for (const [reply, wording] of Object.entries(expected)) {
      const deltas: string[] = [];
      const client = new RemoteClient({ baseUrl: `http://127.0.0.1:${port}/v1`, apiKey: reply, model: 'm' });
      const error = await rejection(client.streamChat({ messages: [{ role: 'user', content: 'hi' }], maxTokens: 4, onDelta: (text) => deltas.push(text) }));
      assert.ok(error instanceof RemoteError, `${reply}: ${String(error)}`);
      assert.match(error.message, wording, reply);
    }
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});
