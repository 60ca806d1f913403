// The OpenAI-compatible HTTP API over one or more workspaces (one model id each),
// on node:http: the API is five routes, so a framework would add more surface
// than it saves. Every limit is explicit: body size, header/body time, max_tokens,
// concurrency with a bounded queue. A client that goes away cancels its generation.
import http from 'node:http';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { StopMatcher } from '../model/text-stream.js';
import { EngineNotReadyError, RequestCancelledError, type EngineService } from './engine-service.js';
import { isRecord, LIMITS } from './validate.js';

export interface ServedWorkspace {
  /** The model id clients send, e.g. panorama/my-repo. */
  id: string;
  service: EngineService;
}

export interface HttpServerOptions {
  workspaces: ServedWorkspace[];
  host?: string;
  port?: number;
  /** Required bearer token; required when host is not a loopback address. */
  apiKey?: string;
  maxBodyBytes?: number;
  maxTokensCap?: number;
  /** Generations running at once per workspace (they share the context's lock, so 1 is usual). */
  concurrency?: number;
  /** Requests waiting per workspace before 429. */
  queueSize?: number;
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  log?: (line: string) => void;
}

export const HTTP_DEFAULTS = {
  host: '127.0.0.1',
  maxBodyBytes: 1024 * 1024,
  maxTokensCap: 4096,
  concurrency: 1,
  queueSize: 16,
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
} as const;

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** An error with OpenAI's error shape: { error: { message, type, param, code } }. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function invalid(param: string, problem: string): HttpError {
  return new HttpError(400, `${param} ${problem}`, 'invalid_request_error', param, 'invalid_value');
}

/** Admission for one workspace: a few running, a bounded queue waiting, the rest refused. */
class AdmissionQueue {
  running = 0;
  private readonly waiting: { grant: () => void; signal: AbortSignal; onAbort: () => void }[] = [];

  constructor(
    private readonly concurrency: number,
    private readonly queueSize: number,
  ) {}

  get queued(): number {
    return this.waiting.length;
  }

  /** A release function once admitted; undefined when the queue is full. Rejects if the signal aborts while waiting. */
  acquire(signal: AbortSignal): Promise<() => void> | undefined {
    const release = () => this.release();
    if (this.running < this.concurrency) {
      this.running++;
      return Promise.resolve(once(release));
    }
    if (this.waiting.length >= this.queueSize) return undefined;
    return new Promise((resolve, reject) => {
      const entry = {
        signal,
        grant: () => {
          signal.removeEventListener('abort', entry.onAbort);
          resolve(once(release));
        },
        onAbort: () => {
          const at = this.waiting.indexOf(entry);
          if (at >= 0) this.waiting.splice(at, 1);
          reject(signal.reason);
        },
      };
      this.waiting.push(entry);
      signal.addEventListener('abort', entry.onAbort, { once: true });
    });
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next)
      next.grant(); // the slot passes on; running stays the same
    else this.running--;
  }
}

function once(fn: () => void): () => void {
  let called = false;
  return () => {
    if (called) return;
    called = true;
    fn();
  };
}

interface Metrics {
  requests: Map<string, number>;
  bodyTimeouts: number;
}

function keyEqual(given: string, expected: string): boolean {
  // Hashing first gives equal lengths, so timingSafeEqual's time does not depend on the key.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function readBody(req: http.IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit)
    return Promise.reject(new HttpError(413, `request body of ${declared} bytes is over the ${limit}-byte limit`, 'invalid_request_error', null, 'body_too_large'));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => fail(new HttpError(408, `the request body did not arrive within ${timeoutMs} ms`, 'invalid_request_error', null, 'request_timeout')), timeoutMs);
    const fail = (err: HttpError) => {
      clearTimeout(timer);
      req.removeAllListeners('data');
      req.pause();
      reject(err);
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return fail(new HttpError(413, `request body is over the ${limit}-byte limit`, 'invalid_request_error', null, 'body_too_large'));
      chunks.push(chunk);
    });
    req.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    req.on('error', (err) => fail(new HttpError(400, `reading the request failed: ${err.message}`)));
  });
}

interface GenerationParams {
  workspace: ServedWorkspace & { admission: AdmissionQueue };
  maxTokens: number;
  temperature?: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
}

export class PanoramaHttpServer {
  readonly server: http.Server;
  private readonly workspaces = new Map<string, ServedWorkspace & { admission: AdmissionQueue }>();
  private readonly metrics: Metrics = { requests: new Map(), bodyTimeouts: 0 };
  private readonly options: Required<Omit<HttpServerOptions, 'apiKey' | 'log' | 'port'>> & Pick<HttpServerOptions, 'apiKey' | 'log' | 'port'>;

  constructor(options: HttpServerOptions) {
    // Options left undefined (an absent CLI flag) take the default.
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.options = { ...HTTP_DEFAULTS, ...given, workspaces: options.workspaces };
    const host = this.options.host;
    if (!isLoopback(host) && !options.apiKey) {
      throw new Error(
        `refusing to listen on ${host} without an API key: anyone who can reach it could read your workspace. Pass --api-key (or PANORAMA_API_KEY), or bind 127.0.0.1`,
      );
    }
    for (const w of options.workspaces) this.workspaces.set(w.id, { ...w, admission: new AdmissionQueue(this.options.concurrency, this.options.queueSize) });
    this.server = http.createServer({ connectionsCheckingInterval: Math.min(1000, this.options.headersTimeoutMs) }, (req, res) => void this.handle(req, res));
    this.server.headersTimeout = this.options.headersTimeoutMs;
    this.server.requestTimeout = this.options.headersTimeoutMs + this.options.bodyTimeoutMs;
    this.server.maxConnections = 1024;
  }

  listen(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host, () => {
        this.server.off('error', reject);
        const address = this.server.address();
        if (!isAddressInfo(address)) return reject(new Error('the server has no TCP address'));
        const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
        resolve(`http://${host}:${address.port}`);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private count(route: string, status: number): void {
    const key = `${route}\u0000${status}`;
    this.metrics.requests.set(key, (this.metrics.requests.get(key) ?? 0) + 1);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const route = `${req.method ?? 'GET'} ${url.pathname}`;
    const known = ['GET /health', 'GET /v1/models', 'GET /metrics', 'POST /v1/completions', 'POST /v1/chat/completions'];
    const label = known.includes(route) ? route : 'other';
    res.on('finish', () => this.count(label, res.statusCode));
    try {
      if (this.options.apiKey !== undefined) {
        if (route !== 'GET /health') this.authenticate(req);
      } else this.refuseBrowsers(req);
      if (req.method === 'GET' && url.pathname.startsWith('/v1/models/')) return this.model(decodeURIComponent(url.pathname.slice('/v1/models/'.length)), res);
      switch (route) {
        case 'GET /health':
          return this.health(res);
        case 'GET /v1/models':
          return sendJson(res, 200, { object: 'list', data: [...this.workspaces.keys()].map((id) => ({ id, object: 'model', created: 0, owned_by: 'panorama' })) });
        case 'GET /metrics':
          return this.sendMetrics(res);
        case 'POST /v1/completions':
        case 'POST /v1/chat/completions': {
          const body = await this.readJson(req);
          return route === 'POST /v1/completions' ? await this.completions(body, res) : await this.chat(body, res);
        }
        default:
          if (['/health', '/v1/models', '/metrics', '/v1/completions', '/v1/chat/completions'].includes(url.pathname))
            throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`, 'invalid_request_error', null, 'method_not_allowed');
          throw new HttpError(
            404,
            `no route ${url.pathname}; this server offers /v1/models, /v1/completions, /v1/chat/completions, /health and /metrics`,
            'invalid_request_error',
            null,
            'not_found',
          );
      }
    } catch (err) {
      this.fail(res, err);
    }
  }

  private fail(res: http.ServerResponse, err: unknown): void {
    // A client that went away (while queued, or mid-answer) has nobody left to tell.
    if (res.destroyed || res.req.socket.destroyed) return;
    const error =
      err instanceof HttpError
        ? err
        : err instanceof EngineNotReadyError
          ? new HttpError(503, err.message, 'server_error', null, 'not_ready', { 'Retry-After': '5' })
          : new HttpError(500, `internal error: ${err instanceof Error ? err.message : String(err)}`, 'server_error');
    if (error.status >= 500 && error.status !== 503) this.options.log?.(`panorama: http: ${error.message}\n`);
    if (error.status === 408) this.metrics.bodyTimeouts++;
    const payload = { error: { message: error.message, type: error.type, param: error.param, code: error.code } };
    if (res.headersSent) {
      // Mid-stream: the status line is gone; report the error as an event and end.
      if (!res.writableEnded) res.end(`data: ${JSON.stringify(payload)}\n\n`);
      return;
    }
    // After a refused body the connection holds unread bytes: close it rather than reuse it.
    const close = error.status === 413 || error.status === 408;
    sendJson(res, error.status, payload, { ...error.headers, ...(close ? { Connection: 'close' } : {}) });
  }

  /**
   * Without a key, only local programs may call: a web page must not reach the
   * workspace through the user's browser, neither by a cross-site request (it carries
   * a foreign Origin) nor by DNS rebinding (a foreign name in Host).
   */
  private refuseBrowsers(req: http.IncomingMessage): void {
    const hostname = (value: string) => {
      try {
        return new URL(value.includes('://') ? value : `http://${value}`).hostname;
      } catch {
        return '';
      }
    };
    const host = req.headers.host;
    if (host !== undefined && !isLoopback(hostname(host)))
      throw new HttpError(
        403,
        `requests for host ${JSON.stringify(host.slice(0, 100))} are refused: without an API key this server answers only to localhost`,
        'invalid_request_error',
        null,
        'forbidden_host',
      );
    const origin = req.headers.origin;
    if (origin !== undefined && (origin === 'null' || !isLoopback(hostname(origin)))) {
      throw new HttpError(
        403,
        'requests from web pages are refused: without an API key this server answers only to local programs',
        'invalid_request_error',
        null,
        'forbidden_origin',
      );
    }
  }

  private model(id: string, res: http.ServerResponse): void {
    if (!this.workspaces.has(id)) throw new HttpError(404, `the model ${JSON.stringify(id.slice(0, 200))} does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    sendJson(res, 200, { id, object: 'model', created: 0, owned_by: 'panorama' });
  }

  private authenticate(req: http.IncomingMessage): void {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (!match || !keyEqual(match[1].trim(), this.options.apiKey ?? '')) {
      throw new HttpError(401, 'missing or wrong API key: send Authorization: Bearer <key>', 'authentication_error', null, 'invalid_api_key', { 'WWW-Authenticate': 'Bearer' });
    }
  }

  private async readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
    // The body is parsed as JSON whatever its Content-Type says (curl -d sends form-urlencoded).
    const body = await readBody(req, this.options.maxBodyBytes, this.options.bodyTimeoutMs);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new HttpError(400, 'the request body is not valid JSON', 'invalid_request_error', null, 'invalid_json');
    }
    if (!isRecord(parsed)) throw new HttpError(400, 'the request body must be a JSON object', 'invalid_request_error', null, 'invalid_json');
    return parsed;
  }

  private health(res: http.ServerResponse): void {
    const workspaces = [...this.workspaces.values()].map((w) => {
      const status = w.service.status();
      return { model: w.id, state: status.state, progress: status.progress, files: status.files, liveTokens: status.liveTokens, error: status.error };
    });
    const ready = workspaces.every((w) => w.state === 'ready' || w.state === 'paused');
    sendJson(res, ready ? 200 : 503, { status: ready ? 'ok' : 'starting', workspaces }, ready ? {} : { 'Retry-After': '5' });
  }

  private sendMetrics(res: http.ServerResponse): void {
    const lines: string[] = [];
    const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: [string, number][]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) lines.push(`${name}${labels} ${Number.isFinite(value) ? value : 0}`);
    };
    const ws = [...this.workspaces.values()];
    const model = (w: ServedWorkspace) => `model="${escapeLabel(w.id)}"`;
    metric(
      'panorama_requests_total',
      'counter',
      'HTTP requests by route and status.',
      [...this.metrics.requests].map(([key, n]) => {
        const [route, status] = key.split('\u0000');
        return [`{route="${escapeLabel(route)}",status="${status}"}`, n];
      }),
    );
    metric(
      'panorama_queue_depth',
      'gauge',
      'Requests waiting for a generation slot.',
      ws.map((w) => [`{${model(w)}}`, w.admission.queued]),
    );
    metric(
      'panorama_requests_running',
      'gauge',
      'Requests holding a generation slot.',
      ws.map((w) => [`{${model(w)}}`, w.admission.running]),
    );
    metric(
      'panorama_active_generations',
      'gauge',
      'Generations running or waiting on the context.',
      ws.map((w) => [`{${model(w)}}`, w.service.activeRequests]),
    );
    metric(
      'panorama_tokens_per_second',
      'gauge',
      'Generation speed of the last request (indexing speed while indexing).',
      ws.map((w) => [`{${model(w)}}`, w.service.status().tokensPerSecond ?? 0]),
    );
    metric(
      'panorama_context_tokens',
      'gauge',
      'Tokens in the workspace context, live and tombstoned.',
      ws.flatMap((w) => {
        const s = w.service.status();
        return [
          [`{${model(w)},kind="live"}`, s.liveTokens],
          [`{${model(w)},kind="dead"}`, s.deadTokens],
        ] satisfies [string, number][];
      }),
    );
    metric(
      'panorama_context_files',
      'gauge',
      'Files in the workspace context.',
      ws.map((w) => [`{${model(w)}}`, w.service.status().files]),
    );
    metric(
      'panorama_ready',
      'gauge',
      '1 when the workspace is open and answering.',
      ws.map((w) => [`{${model(w)}}`, ['ready', 'paused'].includes(w.service.status().state) ? 1 : 0]),
    );
    metric(
      'panorama_generated_tokens_total',
      'counter',
      'Tokens generated.',
      ws.map((w) => [`{${model(w)}}`, w.service.counters.generatedTokens]),
    );
    metric(
      'panorama_prompt_tokens_total',
      'counter',
      'Prompt tokens fed after the context.',
      ws.map((w) => [`{${model(w)}}`, w.service.counters.promptTokens]),
    );
    metric(
      'panorama_generations_total',
      'counter',
      'Generations finished (any reason).',
      ws.map((w) => [`{${model(w)}}`, w.service.counters.generations]),
    );
    metric(
      'panorama_generations_cancelled_total',
      'counter',
      'Generations stopped early by a cancel or a client that went away.',
      ws.map((w) => [`{${model(w)}}`, w.service.counters.cancelled]),
    );
    metric(
      'panorama_prefix_cache_reused_tokens_total',
      'counter',
      'Completion prefix tokens reused from the previous request instead of fed again.',
      ws.map((w) => [`{${model(w)}}`, w.service.counters.reusedTokens]),
    );
    metric(
      'panorama_prefix_cache_hit_ratio',
      'gauge',
      'Share of completion prompt tokens served from the prefix cache (0 before any completion).',
      ws.map((w) => {
        const { reusedTokens, completionFedTokens } = w.service.counters;
        return [`{${model(w)}}`, reusedTokens + completionFedTokens > 0 ? reusedTokens / (reusedTokens + completionFedTokens) : 0];
      }),
    );
    metric('panorama_request_timeouts_total', 'counter', 'Requests whose body did not arrive in time (408).', [['', this.metrics.bodyTimeouts]]);
    res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
    res.end(`${lines.join('\n')}\n`);
  }

  private workspaceFor(body: Record<string, unknown>): ServedWorkspace & { admission: AdmissionQueue } {
    if (typeof body.model !== 'string') throw invalid('model', `must be a string naming one of: ${[...this.workspaces.keys()].join(', ')}`);
    const workspace = this.workspaces.get(body.model);
    if (!workspace)
      throw new HttpError(
        404,
        `the model ${JSON.stringify(body.model.slice(0, 200))} does not exist; GET /v1/models lists the workspaces served`,
        'invalid_request_error',
        'model',
        'model_not_found',
      );
    return workspace;
  }

  /** Parameters common to both endpoints, checked the way OpenAI checks them. */
  private generationParams(body: Record<string, unknown>, defaultMaxTokens: number): GenerationParams {
    const workspace = this.workspaceFor(body);
    const field = body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens';
    const rawMax = body[field] ?? null;
    let maxTokens = defaultMaxTokens;
    if (rawMax !== null) {
      if (typeof rawMax !== 'number' || !Number.isInteger(rawMax) || rawMax < 1) throw invalid(field, 'must be an integer ≥ 1');
      if (rawMax > this.options.maxTokensCap) throw invalid(field, `is ${rawMax}, over this server's limit of ${this.options.maxTokensCap}`);
      maxTokens = rawMax;
    }
    const temperature = body.temperature ?? undefined;
    if (temperature !== undefined && temperature !== null && (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature < 0 || temperature > 2))
      throw invalid('temperature', 'must be a number in [0, 2]');
    if (body.n !== undefined && body.n !== null && body.n !== 1) throw invalid('n', 'must be 1: this server returns one choice');
    if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw invalid('stream', 'must be a boolean');
    let includeUsage = false;
    if (body.stream_options !== undefined && body.stream_options !== null) {
      if (!isRecord(body.stream_options)) throw invalid('stream_options', 'must be an object');
      const usage = body.stream_options.include_usage;
      if (usage !== undefined && typeof usage !== 'boolean') throw invalid('stream_options.include_usage', 'must be a boolean');
      includeUsage = usage === true;
    }
    let stop: string[] = [];
    if (typeof body.stop === 'string') stop = [body.stop];
    else if (Array.isArray(body.stop)) {
      if (body.stop.length > 4 || !body.stop.every((s): s is string => typeof s === 'string')) throw invalid('stop', 'must be a string or an array of at most 4 strings');
      stop = body.stop;
    } else if (body.stop !== undefined && body.stop !== null) throw invalid('stop', 'must be a string or an array of strings');
    return { workspace, maxTokens, temperature: typeof temperature === 'number' ? temperature : undefined, stop, stream: body.stream === true, includeUsage };
  }

  /** Waits for a slot (or answers 429); the returned signal aborts when the client goes away. */
  private async admit(
    params: GenerationParams,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<{ signal: AbortSignal; controller: AbortController; release: () => void }> {
    params.workspace.service.assertReady();
    const controller = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) controller.abort(new Error('the client disconnected'));
    });
    req.socket.on('close', () => controller.abort(new Error('the client disconnected')));
    const waiting = params.workspace.admission.acquire(controller.signal);
    if (!waiting)
      throw new HttpError(
        429,
        `too many requests for ${params.workspace.id}: ${this.options.queueSize} already waiting; retry shortly`,
        'rate_limit_error',
        null,
        'rate_limit_exceeded',
        { 'Retry-After': '1' },
      );
    const release = await waiting;
    return { signal: controller.signal, controller, release };
  }

  private async chat(body: Record<string, unknown>, res: http.ServerResponse): Promise<void> {
    const question = chatQuestion(body.messages);
    const params = this.generationParams(body, 256);
    const { workspace } = params;
    const { signal, controller, release } = await this.admit(params, res.req, res);
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model: workspace.id,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    });
    const stops = new StopMatcher(params.stop);
    let stoppedByString = false;
    let text = '';
    const emit = (piece: string) => {
      if (!piece) return;
      text += piece;
      if (params.stream) writeEvent(res, chunk({ content: piece }, null));
    };
    try {
      if (params.stream) {
        startStream(res);
        writeEvent(res, chunk({ role: 'assistant', content: '' }, null));
      }
      const result = await workspace.service.ask(
        { question, maxTokens: params.maxTokens, temperature: params.temperature },
        {
          signal,
          onDelta: (delta) => {
            if (stoppedByString) return;
            const { emit: piece, stopped } = stops.push(delta);
            emit(piece);
            if (stopped) {
              stoppedByString = true;
              controller.abort(new Error('stop string'));
            }
          },
        },
      );
      if (!stoppedByString) emit(stops.flush());
      if (res.destroyed) return; // the client left: the generation was cancelled
      const finish = stoppedByString || result.finishReason !== 'length' ? 'stop' : 'length';
      const completionTokens = workspace.service.countTokens(text);
      const usage = { prompt_tokens: result.promptTokens, completion_tokens: completionTokens, total_tokens: result.promptTokens + completionTokens };
      const sources = result.sources;
      if (params.stream) {
        writeEvent(res, { ...chunk({}, finish), sources });
        if (params.includeUsage) writeEvent(res, { id, object: 'chat.completion.chunk', created, model: workspace.id, choices: [], usage });
        res.end('data: [DONE]\n\n');
      } else {
        sendJson(res, 200, {
          id,
          object: 'chat.completion',
          created,
          model: workspace.id,
          choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: finish }],
          usage,
          sources,
        });
      }
    } finally {
      release();
    }
  }

  private async completions(body: Record<string, unknown>, res: http.ServerResponse): Promise<void> {
    let prompt: string;
    if (typeof body.prompt === 'string') prompt = body.prompt;
    else if (Array.isArray(body.prompt) && body.prompt.length === 1 && typeof body.prompt[0] === 'string') prompt = body.prompt[0];
    else throw invalid('prompt', 'must be a string (or an array holding one string); token-id prompts are not supported');
    if (prompt.length > LIMITS.prefixChars) throw invalid('prompt', `must be at most ${LIMITS.prefixChars} characters`);
    const suffix = body.suffix ?? '';
    if (typeof suffix !== 'string' || suffix.length > LIMITS.prefixChars) throw invalid('suffix', `must be a string of at most ${LIMITS.prefixChars} characters`);
    if (body.echo !== undefined && body.echo !== null && typeof body.echo !== 'boolean') throw invalid('echo', 'must be a boolean');
    const params = this.generationParams(body, 16);
    const { workspace } = params;
    const { signal, release } = await this.admit(params, res.req, res);
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    try {
      // The prompt continues after the whole workspace context, like an inline completion
      // in an untitled buffer; the state after the prompt is cached for the next request.
      const choice = (t: string, f: string | null) => ({ index: 0, text: t, logprobs: null, finish_reason: f });
      // Streamed requests get each piece of text as it is generated.
      let streamed = false;
      const onDelta = params.stream
        ? (delta: string) => {
            if (!streamed) {
              startStream(res);
              streamed = true;
              if (body.echo === true && prompt) writeEvent(res, { id, object: 'text_completion', created, model: workspace.id, choices: [choice(prompt, null)] });
            }
            writeEvent(res, { id, object: 'text_completion', created, model: workspace.id, choices: [choice(delta, null)] });
          }
        : undefined;
      const result = await workspace.service.complete(
        { path: 'untitled', prefix: prompt, suffix, maxTokens: params.maxTokens, stop: params.stop, inline: false },
        { signal, onDelta },
      );
      const completionTokens = workspace.service.countTokens(result.text);
      const finish = completionTokens >= params.maxTokens ? 'length' : 'stop';
      const text = body.echo === true ? prompt + result.text : result.text;
      const promptTokens = result.reusedTokens + result.fedTokens;
      const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
      if (params.stream) {
        if (!streamed) {
          startStream(res);
          if (text) writeEvent(res, { id, object: 'text_completion', created, model: workspace.id, choices: [choice(text, null)] });
        }
        writeEvent(res, { id, object: 'text_completion', created, model: workspace.id, choices: [choice('', finish)], ...(params.includeUsage ? { usage } : {}) });
        res.end('data: [DONE]\n\n');
      } else {
        sendJson(res, 200, { id, object: 'text_completion', created, model: workspace.id, choices: [choice(text, finish)], usage });
      }
    } catch (err) {
      if (err instanceof RequestCancelledError && res.destroyed) return;
      throw err;
    } finally {
      release();
    }
  }
}

function isAddressInfo(value: string | AddressInfo | null): value is AddressInfo {
  return typeof value === 'object' && value !== null;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function startStream(res: http.ServerResponse): void {
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
}

function writeEvent(res: http.ServerResponse, event: unknown): void {
  if (!res.writableEnded && !res.destroyed) res.write(`data: ${JSON.stringify(event)}\n\n`);
}

const ROLES = ['system', 'developer', 'user', 'assistant', 'tool'] as const;
type Role = (typeof ROLES)[number];

function isRole(value: unknown): value is Role {
  return typeof value === 'string' && ROLES.some((r) => r === value);
}

/** A message's text: a string, or the text parts of a content array. */
function messageText(content: unknown, at: number): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        if (!isRecord(part) || part.type !== 'text' || typeof part.text !== 'string')
          throw invalid(`messages[${at}].content[${j}]`, "must be a text part: { type: 'text', text: string }");
        return part.text;
      })
      .join('');
  }
  throw invalid(`messages[${at}].content`, 'must be a string or an array of text parts');
}

/**
 * The question to ask over the workspace: the last user message, with the system
 * prompt and earlier turns before it (the context answers one question at a time).
 */
export function chatQuestion(messages: unknown): string {
  if (!Array.isArray(messages) || messages.length === 0) throw invalid('messages', 'must be a non-empty array');
  if (messages.length > 256) throw invalid('messages', 'must have at most 256 entries');
  const turns = messages.map((m, i) => {
    if (!isRecord(m)) throw invalid(`messages[${i}]`, 'must be an object');
    if (!isRole(m.role)) throw invalid(`messages[${i}].role`, `must be one of ${ROLES.join(', ')}`);
    return { role: m.role, text: messageText(m.content, i) };
  });
  const last = turns[turns.length - 1];
  if (last.role !== 'user') throw invalid(`messages[${turns.length - 1}].role`, "must be 'user': the last message is the question");
  if (last.text.trim() === '') throw invalid(`messages[${turns.length - 1}].content`, 'must not be empty');
  const label: Record<Role, string> = { system: 'System', developer: 'System', user: 'User', assistant: 'Assistant', tool: 'Tool' };
  const earlier = turns.slice(0, -1).map((t) => `${label[t.role]}: ${t.text}`);
  const question = earlier.length > 0 ? `${earlier.join('\n\n')}\n\nUser: ${last.text}` : last.text;
  if (question.length > LIMITS.questionChars) throw invalid('messages', `hold ${question.length} characters; the limit is ${LIMITS.questionChars}`);
  return question;
}
