// `panorama serve` as a real child process on an ephemeral 127.0.0.1 port, driven
// by the official openai client and by raw sockets for what clients do wrong:
// malformed and oversized bodies, floods, slow drips, disconnects, a seeded fuzz.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import OpenAI from 'openai';
import { FIXTURE, makeWorkspace, prng, removeTempDirs, spawnPanorama, tempDir, waitFor, within } from './helpers.js';

interface Server {
  url: string;
  stderr: () => string;
  exited: Promise<number | null>;
  stop: () => void;
}

const servers: Server[] = [];

async function startServer(workspaces: string[], extra: string[] = []): Promise<Server> {
  const { child, stderr, exited } = spawnPanorama(['serve', ...workspaces, '--model', FIXTURE, '--port', '0', '--store', tempDir('panorama-http-store-'), ...extra]);
  const server: Server = { url: '', stderr, exited, stop: () => child.kill('SIGTERM') };
  servers.push(server);
  server.url = await waitFor('the server to listen', () => /serving (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr())?.[1], 30_000);
  await waitFor('the workspaces to be ready', async () => ((await fetch(`${server.url}/health`)).status === 200 ? true : undefined), 30_000, 100);
  return server;
}

after(async () => {
  for (const server of servers) server.stop();
  await Promise.all(servers.map((s) => within(10_000, 'server exit', s.exited).catch(() => undefined)));
  removeTempDirs();
});

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request on its own connection; a server that closes while we still write (413) is fine once it has answered. */
function raw(url: string, options: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}${options.path}`,
      { method: options.method ?? 'POST', headers: { 'Content-Type': 'application/json', ...options.headers }, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (text: string) => (body += text));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

function errorOf(response: RawResponse): { message: string; type: string; param: string | null; code: string | null } {
  const parsed = JSON.parse(response.body);
  assert.ok(parsed.error && typeof parsed.error.message === 'string', `not an OpenAI error body: ${response.body}`);
  return parsed.error;
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((sum, m) => sum + Number(m[1]), 0);
}

/** Greedy decoding on makeWorkspace()'s files runs this question to the token limit (no early end-of-text). */
const LONG_QUESTION = 'Explain every file, line by line, at length.';

let server: Server;
let model: string;
let otherModel: string;
let client: OpenAI;

before(async () => {
  const a = makeWorkspace();
  const b = makeWorkspace(2);
  server = await startServer(
    [a, b],
    ['--concurrency', '1', '--queue', '4', '--max-tokens-cap', '512', '--max-body-bytes', '65536', '--header-timeout-ms', '1000', '--body-timeout-ms', '1000'],
  );
  model = `panorama/${path.basename(a)}`;
  otherModel = `panorama/${path.basename(b)}`;
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused-on-loopback', maxRetries: 0, timeout: 30_000 });
});

test('GET /health and /v1/models: one model id per served workspace', async () => {
  const health = await (await fetch(`${server.url}/health`)).json();
  assert.equal(health.status, 'ok');
  assert.equal(health.workspaces.length, 2);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id).sort(), [model, otherModel].sort());
});

test('chat completions with the openai client: streamed chunks join to the non-streamed answer', async () => {
  const messages = [
    { role: 'system' as const, content: 'You answer about the workspace.' },
    { role: 'user' as const, content: 'What does m0.ts export?' },
  ];
  const whole = await client.chat.completions.create({ model, messages, max_tokens: 12 });
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.model, model);
  assert.equal(whole.choices.length, 1);
  assert.equal(whole.choices[0].message.role, 'assistant');
  assert.ok(['stop', 'length'].includes(whole.choices[0].finish_reason));
  assert.ok((whole.usage?.prompt_tokens ?? 0) > 0);

  const stream = await client.chat.completions.create({ model, messages, max_tokens: 12, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish: string | null = null;
  let usage = false;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    text += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    usage ||= chunk.usage !== undefined && chunk.usage !== null;
  }
  assert.equal(text, whole.choices[0].message.content, 'greedy decoding: the same answer streamed and not');
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.ok(usage, 'include_usage adds a usage chunk');

  const other = await client.chat.completions.create({ model: otherModel, messages, max_tokens: 4 });
  assert.equal(other.model, otherModel);
});

test('two workspaces answer at the same time on one shared model, each exactly as when alone', async () => {
  const ask = (m: string) => client.chat.completions.create({ model: m, messages: [{ role: 'user', content: 'Which constants are exported?' }], max_tokens: 16 });
  const alone = [(await ask(model)).choices[0].message.content, (await ask(otherModel)).choices[0].message.content];
  const together = await Promise.all([ask(model), ask(otherModel)]);
  assert.deepEqual(
    together.map((r) => r.choices[0].message.content),
    alone,
    'greedy answers do not depend on what runs beside them',
  );
});

test('completions with the openai client, streaming and not; stop strings end the text', async () => {
  const whole = await client.completions.create({ model, prompt: 'export const c9_0 = ', max_tokens: 8 });
  assert.equal(whole.object, 'text_completion');
  assert.equal(typeof whole.choices[0].text, 'string');
  const stream = await client.completions.create({ model, prompt: 'export const c9_0 = ', max_tokens: 8, stream: true });
  let text = '';
  let textChunks = 0;
  for await (const chunk of stream) {
    const piece = chunk.choices[0]?.text ?? '';
    if (piece) textChunks++;
    text += piece;
  }
  assert.equal(text, whole.choices[0].text);
  assert.ok(textChunks >= 1);
  // Text arrives token by token, not in one piece at the end (the random fixture model
  // ends some prompts after a token or two, so look for one that runs longer).
  let mostPieces: string[] = [];
  for (const start of ['export const c9_0 = ', 'function ', 'x', '// ']) {
    const long = await client.completions.create({ model, prompt: start, max_tokens: 8, stop: [], stream: true });
    const pieces: string[] = [];
    for await (const chunk of long) if (chunk.choices[0]?.text) pieces.push(chunk.choices[0].text);
    if (pieces.length > mostPieces.length) mostPieces = pieces;
  }
  assert.ok(mostPieces.length > 1, `text chunks ${JSON.stringify(mostPieces)}`);
  const echoed = await client.completions.create({ model, prompt: 'abc', max_tokens: 2, echo: true });
  assert.ok(echoed.choices[0].text.startsWith('abc'));
  if (whole.choices[0].text.length > 2) {
    const stop = whole.choices[0].text.slice(1, 2);
    const stopped = await client.completions.create({ model, prompt: 'export const c9_0 = ', max_tokens: 8, stop });
    assert.ok(!stopped.choices[0].text.includes(stop), 'the stop string and what follows are cut');
  }
});

test('bad requests get OpenAI-shaped 4xx errors: malformed JSON, wrong types, unknown model, max_tokens over the cap, wrong route', async () => {
  const post = (body: string, route = '/v1/chat/completions') => raw(server.url, { path: route, body });
  const malformed = await post('{"model": "x", "messages": [');
  assert.equal(malformed.status, 400);
  assert.equal(errorOf(malformed).code, 'invalid_json');
  const notObject = await post('[1, 2]');
  assert.equal(notObject.status, 400);
  const wrongType = await post(JSON.stringify({ model, messages: 'hello' }));
  assert.equal(wrongType.status, 400);
  assert.equal(errorOf(wrongType).param, 'messages');
  const wrongRole = await post(JSON.stringify({ model, messages: [{ role: 'wizard', content: 'hi' }] }));
  assert.equal(errorOf(wrongRole).param, 'messages[0].role');
  const lastNotUser = await post(
    JSON.stringify({
      model,
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'yo' },
      ],
    }),
  );
  assert.match(errorOf(lastNotUser).message, /last message is the question/);
  const badTemperature = await post(JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], temperature: 'hot' }));
  assert.equal(errorOf(badTemperature).param, 'temperature');
  const tokenPrompt = await post(JSON.stringify({ model, prompt: [1, 2, 3] }), '/v1/completions');
  assert.equal(errorOf(tokenPrompt).param, 'prompt');
  const unknown = await post(JSON.stringify({ model: 'gpt-4', messages: [{ role: 'user', content: 'hi' }] }));
  assert.equal(unknown.status, 404);
  assert.equal(errorOf(unknown).code, 'model_not_found');

  await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 100_000 }), (err: unknown) => {
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.match(err.message, /max_tokens is 100000, over this server's limit of 512/);
    return true;
  });
  const wrongMethod = await raw(server.url, { method: 'GET', path: '/v1/chat/completions' });
  assert.equal(wrongMethod.status, 405);
  const noRoute = await raw(server.url, { method: 'GET', path: '/v2/anything' });
  assert.equal(noRoute.status, 404);
});

test('without an API key, browsers are refused: a foreign Host (DNS rebinding) or Origin (cross-site) gets 403', async () => {
  const rebinding = await raw(server.url, { method: 'GET', path: '/v1/models', headers: { Host: 'attacker.example:8080' } });
  assert.equal(rebinding.status, 403);
  assert.equal(errorOf(rebinding).code, 'forbidden_host');
  const crossSite = await raw(server.url, {
    path: '/v1/chat/completions',
    headers: { Origin: 'https://attacker.example', 'Content-Type': 'text/plain' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }),
  });
  assert.equal(crossSite.status, 403);
  assert.equal(errorOf(crossSite).code, 'forbidden_origin');
  assert.equal((await raw(server.url, { method: 'GET', path: '/v1/models', headers: { Origin: 'null' } })).status, 403);
  assert.equal((await raw(server.url, { method: 'GET', path: '/v1/models', headers: { Host: 'localhost', Origin: 'http://localhost:3000' } })).status, 200);
  assert.equal((await client.models.retrieve(model)).id, model);
});

test('an oversized body gets 413, declared or streamed without a length', async () => {
  const big = JSON.stringify({ model, messages: [{ role: 'user', content: 'x'.repeat(200_000) }] });
  const declared = await raw(server.url, { path: '/v1/chat/completions', body: big });
  assert.equal(declared.status, 413);
  assert.equal(errorOf(declared).code, 'body_too_large');
  const chunked = await raw(server.url, { path: '/v1/chat/completions', headers: { 'Transfer-Encoding': 'chunked' }, body: Buffer.from(big) });
  assert.equal(chunked.status, 413);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('100 concurrent requests with a queue of 4: the rest get 429 with Retry-After, none is lost, the server stays healthy', async () => {
  const body = JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
  const responses = await within(60_000, '100 concurrent requests', Promise.all(Array.from({ length: 100 }, () => raw(server.url, { path: '/v1/chat/completions', body }))));
  const ok = responses.filter((r) => r.status === 200);
  const limited = responses.filter((r) => r.status === 429);
  assert.equal(ok.length + limited.length, 100, `statuses: ${responses.map((r) => r.status).join(',')}`);
  assert.ok(ok.length >= 5, `1 running + 4 queued answer, got ${ok.length}`);
  assert.ok(limited.length >= 1);
  for (const r of ok) assert.equal(JSON.parse(r.body).object, 'chat.completion');
  assert.equal(limited[0].headers['retry-after'], '1');
  assert.equal(errorOf(limited[0]).code, 'rate_limit_exceeded');
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
  assert.equal(await metric(server.url, 'panorama_queue_depth'), 0);
  assert.equal(await metric(server.url, 'panorama_requests_running'), 0);
});

test('slow-drip clients are cut off: headers by the header timeout, bodies by the body timeout (408)', async () => {
  const drip = (head: string, piece: string) =>
    new Promise<{ data: string; ms: number }>((resolve) => {
      const started = Date.now();
      const socket = net.connect(Number(new URL(server.url).port), '127.0.0.1');
      let data = '';
      let sent = 0;
      const timer = setInterval(() => {
        // Bounded: the server must have closed long before 80 drips.
        if (sent++ > 80 || socket.destroyed) return socket.destroy();
        socket.write(piece);
      }, 100);
      socket.setEncoding('utf8');
      socket.on('data', (text: string) => (data += text));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearInterval(timer);
        resolve({ data, ms: Date.now() - started });
      });
      socket.write(head);
    });
  const [headers, body] = await Promise.all([
    drip('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n', 'X-Slow: 1\r\n'),
    drip(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"model": "${model}", `, ' '),
  ]);
  assert.match(headers.data, /^HTTP\/1\.1 408/);
  assert.ok(headers.ms < 5000, `header drip lasted ${headers.ms} ms`);
  assert.match(body.data, /^HTTP\/1\.1 408/);
  assert.match(body.data, /request_timeout/);
  assert.ok(body.ms < 5000, `body drip lasted ${body.ms} ms`);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('a client that disconnects mid-stream cancels its generation', async () => {
  const before = await metric(server.url, 'panorama_generations_cancelled_total');
  const body = JSON.stringify({ model, messages: [{ role: 'user', content: LONG_QUESTION }], max_tokens: 500, stream: true });
  await new Promise<void>((resolve, reject) => {
    const req = http.request(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, agent: false }, (res) => {
      let seen = '';
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        seen += text;
        // Leave after the first content chunk (the role chunk comes first).
        if ((seen.match(/^data: /gm) ?? []).length >= 2) {
          req.destroy();
          resolve();
        }
      });
      res.on('end', () => reject(new Error('the stream ended before the client left')));
    });
    req.on('error', () => undefined);
    req.end(body);
  });
  await waitFor('the generation to be cancelled', async () => ((await metric(server.url, 'panorama_generations_cancelled_total')) > before ? true : undefined), 10_000, 100);
  assert.equal(await metric(server.url, 'panorama_active_generations'), 0);
  const after = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'still there?' }], max_tokens: 2 });
  assert.equal(after.choices.length, 1);
});

test('a client that leaves while queued frees its place in the queue, and is not counted as a server error', async () => {
  const open = (maxTokens: number) => {
    const req = http.request(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, agent: false });
    req.on('error', () => undefined);
    req.end(JSON.stringify({ model, messages: [{ role: 'user', content: LONG_QUESTION }], max_tokens: maxTokens, stream: true }));
    return req;
  };
  const running = open(500);
  await waitFor('the first request to run', async () => ((await metric(server.url, 'panorama_requests_running')) === 1 ? true : undefined), 10_000, 20);
  const queued = open(4);
  await waitFor('the second request to queue', async () => ((await metric(server.url, 'panorama_queue_depth')) === 1 ? true : undefined), 10_000, 20);
  queued.destroy();
  await waitFor('the queue to empty', async () => ((await metric(server.url, 'panorama_queue_depth')) === 0 ? true : undefined), 10_000, 20);
  running.destroy();
  await waitFor('the slot to free', async () => ((await metric(server.url, 'panorama_requests_running')) === 0 ? true : undefined), 10_000, 20);
  const text = await (await fetch(`${server.url}/metrics`)).text();
  assert.doesNotMatch(text, /route="POST [^"]+",status="5\d\d"/);
});

test('a seeded fuzz of 300 mutated request bodies: only 2xx/4xx (or 503/429), never a crash', async () => {
  const random = prng(1234);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const values: unknown[] = [
    null,
    true,
    false,
    0,
    -1,
    1,
    2,
    1.5,
    1e308,
    '',
    'x',
    '\u0000',
    'ü😀',
    [],
    [1],
    ['a', 'b'],
    {},
    { role: 'user' },
    { role: 'user', content: 'hi' },
    model,
    'a'.repeat(1000),
  ];
  const keys = [
    'model',
    'messages',
    'prompt',
    'max_tokens',
    'max_completion_tokens',
    'temperature',
    'stream',
    'stream_options',
    'stop',
    'n',
    'suffix',
    'echo',
    '__proto__',
    'constructor',
  ];
  const statuses = new Map<number, number>();
  for (let i = 0; i < 300; i++) {
    const chat = random() < 0.5;
    const base: Record<string, unknown> = chat ? { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 } : { model, prompt: 'x', max_tokens: 2 };
    if (random() < 0.3) base.stream = true;
    let body: string;
    const op = random();
    if (op < 0.4) {
      for (let k = 0; k < 1 + Math.floor(random() * 3); k++) base[pick(keys)] = pick(values);
      if (typeof base.max_tokens === 'number' && base.max_tokens > 4) base.max_tokens = 2; // keep generations short
      body = JSON.stringify(base);
    } else if (op < 0.55) {
      delete base[pick(Object.keys(base).filter((k) => k !== 'max_tokens'))];
      body = JSON.stringify(base);
    } else if (op < 0.75) {
      const text = JSON.stringify(base);
      body = text.slice(0, Math.floor(random() * text.length));
    } else if (op < 0.9) {
      const text = JSON.stringify(base);
      const bytes = Buffer.from(text);
      // Never hit max_tokens itself: a corrupted key would mean a default-length generation.
      const guarded = text.indexOf('"max_tokens"');
      for (let k = 0; k < 3; k++) {
        const at = Math.floor(random() * bytes.length);
        if (at < guarded || at > guarded + 14) bytes[at] = Math.floor(random() * 256);
      }
      body = bytes.toString('latin1');
    } else if (op < 0.95) {
      body = '['.repeat(20_000 + Math.floor(random() * 20_000));
    } else {
      body = JSON.stringify(pick(values));
    }
    const response = await raw(server.url, { path: chat ? '/v1/chat/completions' : '/v1/completions', body });
    statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
    assert.ok([200, 400, 404, 413, 429, 503].includes(response.status), `status ${response.status} for ${body.slice(0, 200)}: ${response.body.slice(0, 300)}`);
    if (response.status !== 200) errorOf(response);
  }
  assert.ok((statuses.get(400) ?? 0) > 50, JSON.stringify([...statuses]));
  assert.ok((statuses.get(200) ?? 0) > 10, JSON.stringify([...statuses]));
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
  assert.equal(await metric(server.url, 'panorama_requests_total{route="POST /v1/chat/completions",status="500"}'), 0);
});

test('GET /metrics is Prometheus text with queue depth, tokens/s, context tokens and requests by status', async () => {
  const response = await fetch(`${server.url}/metrics`);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  for (const name of [
    'panorama_queue_depth',
    'panorama_tokens_per_second',
    'panorama_context_tokens',
    'panorama_requests_total',
    'panorama_generated_tokens_total',
    'panorama_prefix_cache_hit_ratio',
  ]) {
    assert.match(text, new RegExp(`^# TYPE ${name} (counter|gauge)$`, 'm'), name);
  }
  assert.match(text, /^panorama_requests_total\{route="POST \/v1\/chat\/completions",status="429"\} [1-9]\d*$/m);
  assert.match(text, /^panorama_context_tokens\{model="[^"]+",kind="live"\} [1-9]\d*$/m);
  assert.ok((await metric(server.url, 'panorama_tokens_per_second')) > 0);
  // The completions test sent the same prompt three times: the later ones reuse its prefix state.
  const ratio = await metric(server.url, 'panorama_prefix_cache_hit_ratio');
  assert.ok(ratio > 0 && ratio < 1, `prefix cache hit ratio ${ratio}`);
});

test('an API key is enforced with a bearer token; a non-loopback host without one is refused', async () => {
  const workspace = makeWorkspace(1);
  const key = 'k'.repeat(24);
  const locked = await startServer([workspace], ['--api-key', key]);
  assert.equal((await fetch(`${locked.url}/v1/models`)).status, 401);
  assert.equal((await fetch(`${locked.url}/v1/models`, { headers: { Authorization: `Bearer ${'k'.repeat(23)}x` } })).status, 401);
  const keyed = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: key, maxRetries: 0 });
  assert.equal((await keyed.models.list()).data.length, 1);
  await assert.rejects(new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: 'wrong-key', maxRetries: 0 }).models.list(), (err: unknown) => err instanceof OpenAI.AuthenticationError);
  assert.equal((await fetch(`${locked.url}/health`)).status, 200, 'health needs no key');
  locked.stop();
  assert.equal(await within(10_000, 'exit on SIGTERM', locked.exited), 0);

  const open = spawnPanorama(['serve', workspace, '--model', FIXTURE, '--host', '0.0.0.0', '--port', '0']);
  assert.equal(await within(10_000, 'refusal', open.exited), 2);
  assert.match(open.stderr(), /refusing to listen on 0\.0\.0\.0 without an API key/);
});
