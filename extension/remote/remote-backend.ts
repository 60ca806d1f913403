// Chat and completions against a remote OpenAI-compatible server. The workspace
// goes first in every request, as the same bytes while the files do not change
// (workspace-prefix.ts), so a server with a prefix cache prefills it once:
//   chat        system: PREAMBLE + workspace files   user: [selection] + question
//   completion  workspace files + "### file: <path>" header + the text before the cursor,
//               the continuation cut where the engine's completion scope ends it
// The VS Code cancellation token aborts the HTTP request; the server sees the
// connection close and stops generating. No vscode import.

import type { CancellationToken } from 'vscode-jsonrpc/node';
import type { AskParams, AskResult, CompleteParams, CompleteResult, Source } from '../../engine/server/protocol.js';
import type { AssistantBackend } from '../backend.js';
import type { ChatMessage, RemoteClient, Usage } from './remote-client.js';
import { cutCompletion, DEFAULT_MAX_LINES } from '../../engine/context/completion-scope.js';
import { FILE_HEADER } from '../../engine/vocabulary.js';
import type { PrefixPlan, WorkspacePrefix } from './workspace-prefix.js';

/** Fixed text before the files: part of the cached prefix, so it must not vary per request. */
export const PREAMBLE =
  'You are Panorama, a code assistant. The whole workspace of the user follows: every file, each after a line "### file: <path>". ' +
  'Answer questions about it from these files; when you point at code, name it as path:line.\n';

const DEFAULT_ANSWER_TOKENS = 512;

export interface RemoteRequestInfo {
  kind: 'chat' | 'completion';
  model: string;
  /** Chat only: request to first text. */
  firstTokenMs?: number;
  totalMs: number;
  usage?: Usage;
  prefix: { hash: string; chars: number; files: number; excluded: number };
}

export interface RemoteBackendOptions {
  client: RemoteClient;
  prefix: WorkspacePrefix;
  /** Called after each request that got an answer (for the status bar and the log). */
  onRequestDone?: (info: RemoteRequestInfo) => void;
}

export class RemoteBackend implements AssistantBackend {
  readonly kind = 'remote';

  constructor(private readonly options: RemoteBackendOptions) {}

  async ask(params: AskParams, onDelta: (text: string) => void, token: CancellationToken): Promise<AskResult> {
    return withAbort(token, async (signal) => {
      const plan = await this.options.prefix.current();
      signal.throwIfAborted();
      const result = await this.options.client.streamChat({
        messages: chatMessages(plan, params),
        maxTokens: params.maxTokens ?? DEFAULT_ANSWER_TOKENS,
        temperature: params.temperature,
        signal,
        onDelta,
      });
      this.options.onRequestDone?.({ kind: 'chat', model: result.model, firstTokenMs: result.firstTokenMs, totalMs: result.totalMs, usage: result.usage, prefix: describe(plan) });
      // a remote server reports no attention: the files the answer names (path:line) stand in, with weight 0
      return {
        text: result.text,
        locations: [],
        sources: mentionedSources(result.text, plan.files),
        finishReason: result.finishReason === 'length' ? 'length' : 'stop',
        promptTokens: result.usage?.promptTokens ?? 0,
      };
    });
  }

  async complete(params: CompleteParams, token: CancellationToken): Promise<CompleteResult> {
    return withAbort(token, async (signal) => {
      const plan = await this.options.prefix.current();
      signal.throwIfAborted();
      const model = await this.options.client.model(signal);
      const stop = [FILE_HEADER, ...(params.stop ?? [])].slice(0, 4);
      const result = await this.options.client.complete({ prompt: completionPrompt(plan, params.path, params.prefix), maxTokens: params.maxTokens ?? 64, stop, signal });
      this.options.onRequestDone?.({ kind: 'completion', model, totalMs: result.totalMs, usage: result.usage, prefix: describe(plan) });
      const cached = result.usage?.cachedTokens ?? 0;
      // The server generated a plain continuation: it ends where the engine would have stopped it.
      const lineStart = params.prefix.lastIndexOf('\n') + 1;
      const lineEnd = params.suffix.indexOf('\n');
      const text = cutCompletion(result.text, {
        linePrefix: params.prefix.slice(lineStart),
        lineSuffix: lineEnd < 0 ? params.suffix : params.suffix.slice(0, lineEnd),
        maxLines: DEFAULT_MAX_LINES,
      });
      return { text, reusedTokens: cached, fedTokens: Math.max(0, (result.usage?.promptTokens ?? 0) - cached), latencyMs: result.totalMs };
    });
  }
}

/** The chat request: the stable prefix as the system message, then what changes per question. */
export function chatMessages(plan: PrefixPlan, params: Pick<AskParams, 'question' | 'selection'>): ChatMessage[] {
  let question = params.question;
  if (params.selection !== undefined) {
    const { path, text, startLine } = params.selection;
    const where = startLine !== undefined ? `${path}, from line ${startLine}` : path;
    question = `Selected code (${where}):\n\`\`\`\n${text}\n\`\`\`\n\n${question}`;
  }
  // no files (contextChars 0: the server holds the workspace): no system message to cache either
  if (plan.files.length === 0) return [{ role: 'user', content: question }];
  return [
    { role: 'system', content: PREAMBLE + plan.text },
    { role: 'user', content: question },
  ];
}

/** The completion prompt: the workspace, then the current file's header and the text before the cursor. */
export function completionPrompt(plan: PrefixPlan, path: string, prefix: string): string {
  return `${plan.text}${FILE_HEADER}${path}\n${prefix}`;
}

/**
 * `path:line` (or `path:start-end`, or a bare path) mentions in an answer, for the files
 * the context holds: Find Where… offers them when the server cannot report attention.
 */
export function mentionedSources(text: string, knownPaths: readonly string[]): Source[] {
  const known = new Set(knownPaths);
  const byBaseName = new Map<string, string[]>();
  for (const path of knownPaths) {
    const base = path.slice(path.lastIndexOf('/') + 1);
    byBaseName.set(base, [...(byBaseName.get(base) ?? []), path]);
  }
  const sources: Source[] = [];
  const seen = new Set<string>();
  for (const match of text.matchAll(/(?<![\w./-])((?:[\w.-]+\/)*[\w.-]+\.\w+)(?::(\d+)(?:[-–](\d+))?)?/g)) {
    const mentioned = match[1].replace(/^\.\//, '');
    // a unique file name stands for its path ("see layout.ts:12")
    const candidates = byBaseName.get(mentioned) ?? [];
    const path = known.has(mentioned) ? mentioned : candidates.length === 1 ? candidates[0] : undefined;
    if (path === undefined) continue;
    const startLine = match[2] !== undefined ? Number(match[2]) : 1;
    const endLine = match[3] !== undefined ? Math.max(startLine, Number(match[3])) : startLine;
    const key = `${path}:${startLine}`;
    if (seen.has(key)) continue;
    seen.add(key);
    sources.push({ path, startLine, endLine, weight: 0 });
  }
  return sources;
}

function describe(plan: PrefixPlan): RemoteRequestInfo['prefix'] {
  return { hash: plan.hash, chars: plan.text.length, files: plan.files.length, excluded: plan.excluded.length };
}

/** Runs `work` with an AbortSignal that follows the token. */
async function withAbort<T>(token: CancellationToken, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const abort = (): void => controller.abort(new CancelledError());
  if (token.isCancellationRequested) abort();
  const subscription = token.onCancellationRequested(abort);
  try {
    return await work(controller.signal);
  } finally {
    subscription.dispose();
  }
}

/** What a cancelled remote request rejects with. */
export class CancelledError extends Error {
  constructor() {
    super('cancelled');
    this.name = 'CancelledError';
  }
}
