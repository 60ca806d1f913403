// A small client for an OpenAI-compatible server (vLLM, SGLang, `panorama serve`):
// /v1/models, /v1/chat/completions streamed over SSE, /v1/completions. Every failure
// becomes a RemoteError whose message says what happened and what to do.
//
// Plain fetch rather than the `openai` package: that package is only a dev dependency
// here (the HTTP tests use it), bundling it would add several hundred KB to the
// extension for two endpoints, and its retries and error texts are not what an
// editor should show (a 429 must surface at once, worded for the user, not be
// retried behind a spinning Stop button). The SSE parsing it would save is 40 lines.
// No vscode import: test/extension/remote-backend.test.ts drives it against a real
// `panorama serve`.

export type RemoteErrorKind = 'config' | 'unreachable' | 'auth' | 'not-found' | 'rate-limited' | 'too-large' | 'rejected' | 'server' | 'protocol';

export class RemoteError extends Error {
  constructor(
    readonly kind: RemoteErrorKind,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'RemoteError';
  }
}

export interface RemoteClientOptions {
  /** e.g. http://gpu-box:8000/v1; a bare origin gets /v1. */
  baseUrl: string;
  apiKey?: string;
  /** Empty: the first model the server lists. */
  model?: string;
  /** Sees each request body before it is sent (the tests compare prefixes with it). */
  onRequest?: (path: string, body: Record<string, unknown>) => void;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatResult {
  text: string;
  finishReason: 'stop' | 'length' | 'other';
  model: string;
  /** From the request to the first text delta. */
  firstTokenMs?: number;
  totalMs: number;
  usage?: Usage;
}

export interface CompletionResult {
  text: string;
  finishReason: 'stop' | 'length' | 'other';
  totalMs: number;
  usage?: Usage;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens the server served from its prefix cache, when it says (vLLM, SGLang do with the right flags). */
  cachedTokens?: number;
}

const ERROR_BODY_CHARS = 4_096;

/** The API root with no trailing slash; '/v1' is added to a bare origin. Throws a config RemoteError when unusable. */
export function normalizeBaseUrl(raw: string): string {
  const trimmed = raw.trim();
  if (trimmed === '') throw new RemoteError('config', 'No remote server is set: put its address in the panorama.remote.baseUrl setting (e.g. http://gpu-box:8000/v1).');
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw new RemoteError('config', `panorama.remote.baseUrl is not a URL: "${trimmed}". Write it as http://host:port/v1.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RemoteError('config', `panorama.remote.baseUrl must start with http:// or https://, not ${url.protocol}//.`);
  if (url.username !== '' || url.password !== '')
    throw new RemoteError('config', 'panorama.remote.baseUrl must not carry credentials: use "Panorama: Set Remote API Key…" for the key.');
  const path = url.pathname.replace(/\/+$/, '');
  url.pathname = path === '' ? '/v1' : path;
  url.search = '';
  url.hash = '';
  return url.toString().replace(/\/+$/, '');
}

export class RemoteClient {
  readonly baseUrl: string;
  private resolvedModel: string | undefined;

  constructor(private readonly options: RemoteClientOptions) {
    this.baseUrl = normalizeBaseUrl(options.baseUrl);
    const model = options.model?.trim();
    if (model) this.resolvedModel = model;
  }

  /** The ids GET /models lists. */
  async models(signal?: AbortSignal): Promise<string[]> {
    const response = await this.send('GET', '/models', undefined, signal);
    const body = await readJson(response, this.baseUrl, signal);
    const data = isRecord(body) && Array.isArray(body.data) ? body.data : undefined;
    if (data === undefined)
      throw new RemoteError('protocol', `${this.baseUrl}/models did not answer with a model list. Is panorama.remote.baseUrl an OpenAI-compatible API (it usually ends in /v1)?`);
    return data.flatMap((entry) => (isRecord(entry) && typeof entry.id === 'string' ? [entry.id] : []));
  }

  /** The configured model, or the first one the server serves (asked once). */
  async model(signal?: AbortSignal): Promise<string> {
    if (this.resolvedModel !== undefined) return this.resolvedModel;
    const models = await this.models(signal);
    if (models.length === 0)
      throw new RemoteError('not-found', `The remote server at ${this.baseUrl} serves no model. Check that it finished loading, or set panorama.remote.model.`);
    this.resolvedModel = models[0];
    return models[0];
  }

  /** Streams a chat answer; `onDelta` gets each piece of text. Aborting `signal` closes the connection. */
  async streamChat(request: { messages: ChatMessage[]; maxTokens: number; temperature?: number; signal?: AbortSignal; onDelta: (text: string) => void }): Promise<ChatResult> {
    const started = performance.now();
    const model = await this.model(request.signal);
    const body: Record<string, unknown> = {
      model,
      messages: request.messages,
      max_tokens: request.maxTokens,
      stream: true,
      stream_options: { include_usage: true },
      ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
    };
    const response = await this.send('POST', '/chat/completions', body, request.signal);
    const contentType = response.headers.get('content-type') ?? '';
    if (!contentType.includes('text/event-stream')) {
      await response.body?.cancel().catch(() => undefined);
      throw new RemoteError(
        'protocol',
        `The remote server answered a streamed chat request with ${contentType || 'no content type'} instead of an event stream. Is ${this.baseUrl} an OpenAI-compatible API?`,
      );
    }
    if (response.body === null) throw new RemoteError('protocol', 'The remote server sent an empty response to a chat request.');

    let text = '';
    let finishReason: ChatResult['finishReason'] | undefined;
    let firstTokenMs: number | undefined;
    let usage: Usage | undefined;
    let done = false;
    try {
      for await (const data of sseData(readChunks(response.body))) {
        if (data === '[DONE]') {
          done = true;
          break;
        }
        const event = parseEvent(data);
        if (isRecord(event.error)) throw new RemoteError('server', `The remote server stopped with an error mid-answer: ${errorText(event) ?? 'no details'}.`);
        usage = readUsage(event.usage) ?? usage;
        const choices = Array.isArray(event.choices) ? event.choices : [];
        for (const choice of choices) {
          if (!isRecord(choice)) continue;
          const delta = isRecord(choice.delta) ? choice.delta : undefined;
          if (typeof delta?.content === 'string' && delta.content !== '') {
            firstTokenMs ??= performance.now() - started;
            text += delta.content;
            request.onDelta(delta.content);
          }
          if (typeof choice.finish_reason === 'string') finishReason = finishReasonOf(choice.finish_reason);
        }
      }
    } catch (error) {
      if (error instanceof RemoteError) throw error;
      if (request.signal?.aborted) throw request.signal.reason ?? error;
      throw new RemoteError('unreachable', `The connection to the remote server broke mid-answer (${networkCause(error)}). Try again.`);
    }
    if (!done && finishReason === undefined)
      throw new RemoteError('protocol', 'The remote server closed the stream before the answer was complete. Try again; if it keeps happening, read the server log.');
    return { text, finishReason: finishReason ?? 'stop', model, firstTokenMs, totalMs: performance.now() - started, ...(usage !== undefined ? { usage } : {}) };
  }

  /** One plain (non-streamed) completion of `prompt`. */
  async complete(request: { prompt: string; maxTokens: number; stop?: string[]; temperature?: number; signal?: AbortSignal }): Promise<CompletionResult> {
    const started = performance.now();
    const model = await this.model(request.signal);
    const body: Record<string, unknown> = {
      model,
      prompt: request.prompt,
      max_tokens: request.maxTokens,
      temperature: request.temperature ?? 0,
      ...(request.stop !== undefined && request.stop.length > 0 ? { stop: request.stop } : {}),
    };
    const response = await this.send('POST', '/completions', body, request.signal);
    const answer = await readJson(response, this.baseUrl, request.signal);
    const choice = isRecord(answer) && Array.isArray(answer.choices) && isRecord(answer.choices[0]) ? answer.choices[0] : undefined;
    if (choice === undefined || typeof choice.text !== 'string') throw new RemoteError('protocol', 'The remote server answered a completion request without choices[0].text.');
    const usage = isRecord(answer) ? readUsage(answer.usage) : undefined;
    return { text: choice.text, finishReason: finishReasonOf(choice.finish_reason), totalMs: performance.now() - started, ...(usage !== undefined ? { usage } : {}) };
  }

  /** One request; a non-2xx answer becomes a RemoteError worded for the user. */
  private async send(method: 'GET' | 'POST', path: string, body: Record<string, unknown> | undefined, signal: AbortSignal | undefined): Promise<Response> {
    if (body !== undefined) this.options.onRequest?.(path, body);
    const headers: Record<string, string> = { Accept: body?.stream === true ? 'text/event-stream' : 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.options.apiKey) headers.Authorization = `Bearer ${this.options.apiKey}`;
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
    } catch (error) {
      if (signal?.aborted) throw signal.reason ?? error;
      throw new RemoteError(
        'unreachable',
        `Cannot reach the remote server at ${this.baseUrl} (${networkCause(error)}). Check that it is running and that panorama.remote.baseUrl is right.`,
      );
    }
    if (response.ok) return response;
    const detail = await errorDetail(response);
    throw statusError(response, detail, { baseUrl: this.baseUrl, path, model: typeof body?.model === 'string' ? body.model : undefined, hasKey: Boolean(this.options.apiKey) });
  }
}

function statusError(response: Response, detail: string | undefined, context: { baseUrl: string; path: string; model?: string; hasKey: boolean }): RemoteError {
  const { status } = response;
  const said = detail ? `: ${detail}` : '';
  switch (true) {
    case status === 401 || status === 403:
      return new RemoteError(
        'auth',
        context.hasKey
          ? `The remote server refused the API key (${status}${said}). Set the right one with "Panorama: Set Remote API Key…".`
          : `The remote server needs an API key (${status}${said}). Set it with "Panorama: Set Remote API Key…".`,
        status,
      );
    case status === 404:
      return new RemoteError(
        'not-found',
        context.model !== undefined && /model/i.test(detail ?? '')
          ? `The remote server has no model "${context.model}" (404${said}). Set panorama.remote.model to one it serves, or leave it empty to use the first.`
          : `${context.baseUrl}${context.path} does not exist (404${said}). Check panorama.remote.baseUrl: it usually ends in /v1.`,
        status,
      );
    case status === 429: {
      const retryAfter = Number(response.headers.get('retry-after'));
      const when = Number.isFinite(retryAfter) && retryAfter > 0 ? ` It asks to retry in ${retryAfter} s.` : ' Try again shortly.';
      return new RemoteError('rate-limited', `The remote server is busy (429 Too Many Requests${said}).${when}`, status);
    }
    case status === 413:
      return new RemoteError('too-large', `The request is too large for the remote server (413${said}). Lower panorama.remote.contextChars.`, status);
    case status >= 400 && status < 500: {
      const hint = /context|length|too long|token/i.test(detail ?? '') ? ' If the workspace context is too long for the server, lower panorama.remote.contextChars.' : '';
      return new RemoteError('rejected', `The remote server rejected the request (${status}${said}).${hint}`, status);
    }
    default:
      return new RemoteError('server', `The remote server failed (${status}${said}). Read its log, or try again.`, status);
  }
}

/** The error text of an OpenAI-style ({error: {message}}), vLLM-style ({message}) or FastAPI-style ({detail}) body. */
async function errorDetail(response: Response): Promise<string | undefined> {
  const raw = (await response.text().catch(() => '')).slice(0, ERROR_BODY_CHARS).trim();
  if (raw === '') return undefined;
  try {
    const parsed: unknown = JSON.parse(raw);
    return (isRecord(parsed) ? errorText(parsed) : undefined) ?? raw.slice(0, 300);
  } catch {
    return raw.slice(0, 300);
  }
}

function errorText(body: Record<string, unknown>): string | undefined {
  if (isRecord(body.error) && typeof body.error.message === 'string') return body.error.message;
  if (typeof body.error === 'string') return body.error;
  if (typeof body.message === 'string') return body.message;
  if (typeof body.detail === 'string') return body.detail;
  return undefined;
}

async function readJson(response: Response, baseUrl: string, signal?: AbortSignal): Promise<unknown> {
  let text: string;
  try {
    text = await response.text();
  } catch (error) {
    if (signal?.aborted) throw signal.reason ?? error;
    throw new RemoteError('unreachable', `The connection to the remote server at ${baseUrl} broke while it answered (${networkCause(error)}). Try again.`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new RemoteError('protocol', `The remote server at ${baseUrl} answered with something that is not JSON: ${JSON.stringify(text.slice(0, 120))}.`);
  }
}

function networkCause(error: unknown): string {
  // undici: TypeError('fetch failed') with the system error as its cause
  const cause = error instanceof Error && error.cause !== undefined ? error.cause : error;
  if (isRecord(cause) && typeof cause.code === 'string') return cause.code;
  return cause instanceof Error ? cause.message : String(cause);
}

function parseEvent(data: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new RemoteError('protocol', `The remote server sent a malformed stream event: ${JSON.stringify(data.slice(0, 120))}.`);
  }
  if (!isRecord(parsed)) throw new RemoteError('protocol', `The remote server sent a stream event that is not a JSON object: ${JSON.stringify(data.slice(0, 120))}.`);
  return parsed;
}

function readUsage(raw: unknown): Usage | undefined {
  if (!isRecord(raw) || typeof raw.prompt_tokens !== 'number') return undefined;
  const details = isRecord(raw.prompt_tokens_details) ? raw.prompt_tokens_details : undefined;
  return {
    promptTokens: raw.prompt_tokens,
    completionTokens: typeof raw.completion_tokens === 'number' ? raw.completion_tokens : 0,
    ...(typeof details?.cached_tokens === 'number' ? { cachedTokens: details.cached_tokens } : {}),
  };
}

function finishReasonOf(raw: unknown): 'stop' | 'length' | 'other' {
  return raw === 'stop' || raw === 'length' ? raw : 'other';
}

/** A fetch body as an async iterable; leaving the loop early cancels the rest (and closes the connection). */
async function* readChunks(body: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/**
 * The `data:` payloads of a server-sent event stream, one per event (multi-line data
 * joined with '\n', comments and other fields skipped), per the WHATWG EventSource rules.
 */
export async function* sseData(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  const takeLine = (line: string): string | undefined => {
    if (line === '') {
      const event = data.length > 0 ? data.join('\n') : undefined;
      data = [];
      return event;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
    return undefined;
  };
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      // a CR that ends the chunk may be the first half of a CRLF: wait for the next chunk
      if (newline === buffer.length - 1 && buffer.endsWith('\r')) break;
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
      const event = takeLine(line);
      if (event !== undefined) yield event;
    }
  }
  buffer += decoder.decode();
  if (buffer !== '') takeLine(buffer);
  // a stream that ends without the blank line still delivers its last event
  if (data.length > 0) yield data.join('\n');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
