// One HTTP request to the Hub, redirects followed by hand the way huggingface_hub does it:
// a redirect to the same host (a renamed repo) keeps the Authorization header, one to another
// host (the storage/CDN host, whose URL is signed) drops it, so the token never leaves the Hub.
import http from 'node:http';
import https from 'node:https';
import { HubError } from './hub-endpoint.js';

const MAX_REDIRECTS = 10;
/** No byte for this long: the connection is given up (a resume picks up where it stopped). */
const IDLE_TIMEOUT_MS = 60_000;

export interface HubRequest {
  method?: 'GET' | 'HEAD';
  token?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface HubResponse {
  response: http.IncomingMessage;
  /** The URL that answered, after redirects. */
  url: string;
}

function once(url: URL, method: string, headers: Record<string, string>, signal?: AbortSignal): Promise<http.IncomingMessage> {
  const transport = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = transport.request(url, { method, headers, signal }, resolve);
    request.setTimeout(IDLE_TIMEOUT_MS, () => request.destroy(new Error(`no answer from ${url.host} in ${IDLE_TIMEOUT_MS / 1000} s`)));
    request.on('error', (err) => {
      if (signal?.aborted) reject(signal.reason instanceof Error ? signal.reason : err);
      else reject(new HubError(`cannot reach ${url.host}: ${err.message}; check the network connection, or HF_ENDPOINT if it is set`));
    });
    request.end();
  });
}

/** Sends the request, following redirects; the caller reads (or drains) the final response's body. */
export async function hubRequest(target: string, options: HubRequest = {}): Promise<HubResponse> {
  const method = options.method ?? 'GET';
  let url = new URL(target);
  const origin = url.origin;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const headers: Record<string, string> = { 'user-agent': 'panorama', 'accept-encoding': 'identity', ...options.headers };
    if (options.token !== undefined && url.origin === origin) headers.authorization = `Bearer ${options.token}`;
    const response = await once(url, method, headers, options.signal);
    const location = response.headers.location;
    if (response.statusCode !== undefined && response.statusCode >= 300 && response.statusCode < 400 && location !== undefined) {
      response.resume();
      url = new URL(location, url);
      continue;
    }
    return { response, url: url.toString() };
  }
  throw new HubError(`more than ${MAX_REDIRECTS} redirects from ${target}`);
}

/** Reads a whole (small) body as text. */
export async function readBody(response: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return Buffer.concat(chunks).toString('utf8');
}

export interface ErrorContext {
  repo: string;
  endpoint: string;
  tokenSent: boolean;
  /** What was asked for: "revision main", "file model.safetensors". */
  what: string;
}

/**
 * The Hub's error for a status, by its `X-Error-Code` header where it sends one
 * (GatedRepo, RepoNotFound, RevisionNotFound, EntryNotFound), with what to do.
 */
export function hubError(response: http.IncomingMessage, context: ErrorContext): HubError {
  const status = response.statusCode ?? 0;
  const code = String(response.headers['x-error-code'] ?? '');
  const page = `${context.endpoint}/${context.repo}`;
  if (code === 'GatedRepo' || status === 401 || status === 403) {
    const remedy = context.tokenSent
      ? `the token in HF_TOKEN cannot read it: accept the model's licence at ${page} with the account the token belongs to, or use a token with read access`
      : `accept its licence at ${page}, then set HF_TOKEN to a read token of that account (${context.endpoint}/settings/tokens; in VS Code: Panorama: Set Hugging Face Token…)`;
    return new HubError(`${context.repo} is gated or private (HTTP ${status} for ${context.what}): ${remedy}`, status);
  }
  if (code === 'RevisionNotFound') return new HubError(`${context.repo} has no ${context.what} (HTTP ${status}): check the branch, tag or commit after "@"`, status);
  if (code === 'EntryNotFound') return new HubError(`${context.repo} has no ${context.what} (HTTP ${status})`, status);
  if (status === 404)
    return new HubError(`no model ${context.repo} on ${context.endpoint} (HTTP 404 for ${context.what}): check the id (ORG/NAME); a private repo needs HF_TOKEN`, status);
  if (status === 429 || status >= 500)
    return new HubError(`${context.endpoint} answered HTTP ${status} for ${context.what}: try again later (a pull resumes where it stopped)`, status);
  return new HubError(`${context.endpoint} answered HTTP ${status} for ${context.what} of ${context.repo}`, status);
}
