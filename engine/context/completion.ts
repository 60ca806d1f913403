// Inline completion at a cursor, after the whole context: the file's header, a short
// restated prefix and suffix (fill-in-the-middle when the model has the tokens). After
// code with nothing after the cursor on its line, the prefix is continued instead, its
// last token healed (token-healing.ts): the default model finishes a begun line better
// that way (inlineForm; MODEL.md, completions). The
// state after the restated prefix is kept, checkpointed along it, so the next request
// that shares the start of it (typing on, a backspace, the client's window sliding)
// feeds only what differs; while other work has the context it is parked (see
// tail-parking.ts). A completion goes ahead of queued work and waits at most one
// step of a question or a file being fed.
import type { ForwardOptions } from '../model/sala-model.js';
import { generate, type GenerationResult } from '../model/generation.js';
import { CompletionStopper, DEFAULT_MAX_LINES } from './completion-scope.js';
import { PIECE_TOKENS, type ContextCore } from './context-core.js';
import type { CompleteOptions, CompletionBreakdown, CompletionResult, InlineForm } from './context-types.js';
import { settleTail, unparkTail } from './tail-parking.js';
import { healPrompt } from '../model/token-healing.js';

/** Prefill chunk of a completion's own feeds: a superseded request lets go within one. */
const COMPLETION_CHUNK = 64;
/** An inline completion restates the prefix from a line start at most this far back (the file itself is in the context)... */
const PREFIX_CHARS = 1_000;
/** ...and keeps that start while typing goes on, up to this far back (so the cached state stays valid as the client's window slides). */
const PREFIX_MAX_CHARS = 2_000;
/** The suffix restated: the rest of the cursor's line and this many more lines, at most SUFFIX_TOKENS tokens. */
const SUFFIX_LINES = 1;
const SUFFIX_TOKENS = 24;
/** The prefix state is checkpointed this many tokens short of the prefix end: typing on re-tokenizes only the last token or two. */
const KEEP_BACK = 4;
/** A new checkpoint once the prefix has grown this many tokens past the last one (each costs one more forward call). */
const CHECKPOINT_AFTER = 16;
/** Checkpoints kept along a completion's prefix (each holds the lightning states: ~0.5 MB with the default model). */
const MAX_CHECKPOINTS = 32;

/** See WorkspaceContext.complete. */
export function complete(core: ContextCore, path: string, prefix: string, suffix: string, options: CompleteOptions = {}): Promise<CompletionResult> {
  const requested = performance.now();
  const { signal } = options;
  return core.foreground.run(() =>
    core.lock.run(
      async () => {
        const began = performance.now();
        const inline = options.inline ?? true;
        const restated = inline ? restatePrefix(core, path, prefix) : prefix;
        const start = core.format.fimStart(path);
        const { linePrefix, lineSuffix } = cursorLine(prefix, suffix);
        const continued = inline && inlineForm(linePrefix, lineSuffix, options.form) === 'continued';
        // Ids after the state's base (the header less its last token): that token, then the prefix
        // (a continued one less its last token, which the generation must start with).
        const { ids: fed, healed } = continued
          ? healPrompt([start[start.length - 1], ...core.format.text(restated)], core.tokenizer)
          : { ids: [start[start.length - 1], ...core.format.text(restated)], healed: '' };
        const suffixIds = core.format.hasFim && !continued ? (inline ? core.format.text(restateSuffix(suffix)).slice(0, SUFFIX_TOKENS) : core.format.text(suffix)) : [];
        const end = continued ? [] : core.format.fimEndIds(suffixIds);
        // The prefix state outlives this request: a superseded one goes on building it while
        // nothing else waits (the next keystroke's request shares most of it), and stops at
        // the next piece when something does.
        const prefixOptions: ForwardOptions = { logits: 'last', chunkSize: COMPLETION_CHUNK };
        const stillWanted = () => {
          if (signal?.aborted && core.lock.contended) throw signal.reason ?? new Error('aborted');
        };

        let cache: CompletionBreakdown['cache'] = 'warm';
        let state = core.completion;
        if (state && (state.path !== path || state.version !== core.version)) state = undefined;
        if (state?.parked) {
          settleTail(core);
          unparkTail(core, state.parked);
          state.parked = undefined;
          cache = 'restored';
        }
        let fedTokens = 0;
        if (!state) {
          core.completion = undefined;
          settleTail(core);
          if (start.length > 1) await core.model.forward(core.sequence, start.slice(0, -1), { ...prefixOptions, signal });
          fedTokens += start.length - 1;
          state = { path, version: core.version, restated, fed: [], checkpoints: [{ at: 0, checkpoint: core.sequence.checkpoint() }] };
          cache = 'cold';
        }
        core.completion = state;
        const live = state;
        // Continue from the last checkpoint inside the part this prefix shares (leaving at least one id to feed).
        const shared = Math.min(commonPrefixLength(live.fed, fed), end.length > 0 ? fed.length : fed.length - 1);
        while (live.checkpoints.length > 1 && live.checkpoints[live.checkpoints.length - 1].at > shared) live.checkpoints.pop();
        const from = live.checkpoints[live.checkpoints.length - 1];
        core.sequence.rollback(from.checkpoint);
        live.fed = fed.slice(0, from.at);
        live.restated = restated;
        const reusedTokens = from.at;
        let at = from.at;
        try {
          // The prefix up to a few tokens short of its end, in pieces, each checkpointed:
          // a request superseded meanwhile leaves its progress to the next one.
          const keep = fed.length - KEEP_BACK;
          if (keep - at >= CHECKPOINT_AFTER) {
            while (at < keep) {
              stillWanted();
              const stop = Math.min(keep, at + PIECE_TOKENS);
              await core.model.forward(core.sequence, fed.slice(at, stop), prefixOptions);
              fedTokens += stop - at;
              at = stop;
              live.fed = fed.slice(0, at);
              live.checkpoints.push({ at, checkpoint: core.sequence.checkpoint() });
              if (live.checkpoints.length > MAX_CHECKPOINTS) live.checkpoints.splice(1, 1);
            }
          }
          const tail = [...fed.slice(at), ...end];
          fedTokens += tail.length;
          const stopper = inline ? new CompletionStopper({ linePrefix, lineSuffix, maxLines: options.maxLines ?? DEFAULT_MAX_LINES }) : undefined;
          const stream = generate(core.model, core.tokenizer, tail, {
            sequence: core.sequence,
            maxTokens: options.maxTokens ?? 48,
            stop: options.stop ?? ['\n\n'],
            // A continued prefix ends where the model would go on to the suffix.
            stopIds: continued ? core.format.prefixStopIds : core.format.stopIds,
            // The generation starts with the healed text, which the editor already holds.
            healed,
            signal,
            chunkSize: COMPLETION_CHUNK,
          });
          const promptEnd = core.sequence.length + tail.length;
          let text = '';
          let shown = 0;
          let next = await stream.next();
          const firstToken = performance.now();
          while (!next.done) {
            text += next.value;
            const cut = stopper?.push(next.value);
            // Streamed as it settles: an inline completion's current line may still be cut.
            const settled = cut ?? (stopper ? text.lastIndexOf('\n') : text.length);
            if (settled > shown) options.onDelta?.(text.slice(shown, settled));
            shown = Math.max(shown, settled);
            if (cut !== undefined) {
              // The suggestion is complete: what the model would write next is not shown.
              text = text.slice(0, cut);
              await stopGeneration(stream);
              break;
            }
            next = await stream.next();
          }
          if (text.length > shown) options.onDelta?.(text.slice(shown));
          const finished = performance.now();
          const decodeSteps = Math.max(0, core.sequence.length - promptEnd);
          return {
            text,
            reusedTokens,
            fedTokens,
            breakdown: {
              queueMs: began - requested,
              feedMs: firstToken - began,
              decodeMs: finished - firstToken,
              generatedTokens: text === '' && decodeSteps === 0 ? 0 : decodeSteps + 1,
              prefixTokens: fed.length - reusedTokens,
              suffixTokens: suffixIds.length,
              form: continued ? 'continued' : 'fim',
              cache,
              scope: stopper?.scope ?? 'free',
            },
          };
        } finally {
          core.sequence.rollback(live.checkpoints[live.checkpoints.length - 1].checkpoint);
        }
      },
      { priority: 'interactive', signal },
    ),
  );
}

/** The cursor's line: its text before the cursor and after it. */
export function cursorLine(prefix: string, suffix: string): { linePrefix: string; lineSuffix: string } {
  const lineEnd = suffix.indexOf('\n');
  return { linePrefix: prefix.slice(prefix.lastIndexOf('\n') + 1), lineSuffix: lineEnd < 0 ? suffix : suffix.slice(0, lineEnd) };
}

/**
 * The form an inline completion takes, given the cursor's line before and after it:
 * asked ('continued', 'fim'), or the engine's choice ('auto'): fill-in-the-middle before
 * code and at column 0, continued elsewhere (after code or indentation, with nothing
 * after the cursor). The default model finishes a begun line better than it fills one
 * in, but continued from column 0 it mostly writes nothing: its fill-in documents end a
 * prefix at a line's start there (MODEL.md, which inline form).
 */
export function inlineForm(linePrefix: string, lineSuffix: string, form: InlineForm = 'auto'): 'continued' | 'fim' {
  if (form !== 'auto') return form;
  return lineSuffix.trim() === '' && linePrefix !== '' ? 'continued' : 'fim';
}

/**
 * The part of an inline completion's prefix restated after the header: from a line
 * start about PREFIX_CHARS back, or — while typing goes on in the same file — from
 * where the previous request's restatement started, so its state stays valid.
 */
function restatePrefix(core: ContextCore, path: string, prefix: string): string {
  const previous = core.completion?.path === path ? core.completion.restated : undefined;
  if (previous) {
    const at = findRestatement(prefix, previous);
    if (at >= 0 && prefix.length - at <= PREFIX_MAX_CHARS) return prefix.slice(at);
  }
  if (prefix.length <= PREFIX_CHARS) return prefix;
  const lineStart = prefix.indexOf('\n', prefix.length - PREFIX_CHARS - 1) + 1;
  return lineStart > 0 && lineStart < prefix.length ? prefix.slice(lineStart) : prefix.slice(-PREFIX_CHARS);
}

/** Ends a generation where it stands, without running its next step. */
async function stopGeneration(stream: AsyncGenerator<string, GenerationResult>): Promise<void> {
  await stream.return({ text: '', tokens: [], finishReason: 'stop', promptTokens: 0, prefillMs: 0, decodeMsPerToken: 0 });
}

/** The rest of the cursor's line and SUFFIX_LINES more. */
function restateSuffix(suffix: string): string {
  let end = -1;
  for (let line = 0; line <= SUFFIX_LINES; line++) {
    end = suffix.indexOf('\n', end + 1);
    if (end < 0) return suffix;
  }
  return suffix.slice(0, end + 1);
}

/** Where in `prefix` the previous restatement starts (the occurrence sharing most of it), or −1. */
function findRestatement(prefix: string, previous: string): number {
  const probe = previous.slice(0, 200);
  if (probe.length === 0) return -1;
  let best = -1;
  let bestShared = -1;
  for (let at = prefix.indexOf(probe), tries = 0; at >= 0 && tries < 32; at = prefix.indexOf(probe, at + 1), tries++) {
    const shared = commonPrefixLength(prefix.slice(at), previous);
    if (shared >= bestShared) {
      best = at;
      bestShared = shared;
    }
  }
  return best;
}

function commonPrefixLength<T extends string | readonly number[]>(a: T, b: T): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
