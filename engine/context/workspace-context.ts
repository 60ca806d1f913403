// The whole workspace as one long model context, kept fresh by appending.
//
// Files sit in the sequence one after another (rarely edited first). An edit
// tombstones what it replaced — those tokens stay cached but are masked out of
// attention and block selection — and appends the new text at the tail. A small
// edit is a patch: only the changed lines are tombstoned and appended (with a
// `path:first-last` header), the rest of the file stays where it is, so a one-line
// edit costs a line's tokens wherever the file sits; a larger one appends the whole
// new version. A file fed recently keeps checkpoints along it, so its next edit rolls
// back to just before the change and re-feeds from there in place where that is
// cheaper still. When dead
// tokens pass a threshold, a background compaction builds a new sequence from the
// last lightning checkpoint before the first tombstone, re-feeding the live files
// after it (from their cached token ids: no re-tokenization), and swaps it in. Questions and completions run after the
// context and are rolled back afterwards, so they never change it. Inline completions
// come first: they go ahead of queued work, long work yields to them between steps
// (its own state set aside and brought back exactly), and a compaction pauses while
// requests run.
import type { ForwardOptions, SalaModel, SelectionRecord, Sequence } from '../model/sala-model.js';
import type { SequenceCheckpoint } from '../model/sequence.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { generate, type FinishReason, type GenerationResult } from '../model/generation.js';
import { PromptFormat } from './prompt-format.js';
import { RequestLock } from './request-lock.js';
import { CompletionStopper, type CompletionScope } from './completion-scope.js';
import { compareLayoutOrder } from '../index/layout.js';

/** Long feeds (files, compaction) run in forward calls of this many tokens: a completion waits at most one (~0.1 s on 2 cores at 100K tokens). */
const PIECE_TOKENS = 64;
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
/** Recently fed files keep lightning checkpoints this many tokens apart, so their next edit re-feeds from just before the change... */
const RECENT_CHECKPOINT_TOKENS = 128;
/** ...within this many bytes of states by default, the oldest files' dropped first (a 9B model's states are ~50 MB a checkpoint: they then spread out). */
const RECENT_CHECKPOINT_BYTES = 64 * 1024 * 1024;
/** An edit is patched in when the patch feeds at most this share of the file's tokens (else the whole new version goes last). */
const PATCH_SHARE = 0.5;
/** A file in more pieces than this is appended whole at its next edit (its pieces collapse into one). */
const MAX_PIECES = 32;

export interface ContextFile {
  path: string;
  text: string;
  contentHash: string;
  mtimeMs: number;
  /** Bytes on disk (lets a watcher trust the span without re-reading the file). */
  size?: number;
  /** The file already tokenized by format.file() (saves tokenizing twice when the caller needed counts). */
  encoded?: { ids: number[]; headerTokens: number };
}

export interface UpdateOptions {
  signal?: AbortSignal;
  /** Called after each file is in the context (or left out for the budget). */
  onFile?: (path: string, tokens: number) => void;
}

export interface FileSpan {
  path: string;
  start: number;
  end: number;
  headerTokens: number;
  contentHash: string;
  mtimeMs: number;
  size?: number;
  editCount: number;
  /** Token offset (into the file's ids: header, then content) of the first token of each line of the file. */
  lineStarts: number[];
  /**
   * Set once an edit was patched in: where the file's ids are, in order of `from`
   * (`start`/`end` then bound them all). Unset: the ids are [start, end) in one piece.
   */
  pieces?: FilePiece[];
}

/** Part of a patched file: its ids [from, from + length) at sequence positions [at, at + length), after `header` tokens of a patch header (0 for the file's own first piece). */
export interface FilePiece {
  at: number;
  from: number;
  length: number;
  header: number;
}

export interface Source {
  path: string;
  startLine: number;
  endLine: number;
  /** Share of the answer's selected (non-forced) blocks that fell in this range. */
  weight: number;
}

export interface ContextOptions {
  /** Live-token budget (default 1,000,000). */
  budget?: number;
  /** Compact when dead tokens exceed this share of the sequence (default 0.25). */
  compactAt?: number;
  /** Lightning checkpoints at file boundaries at least this many tokens apart (default 16,384). */
  checkpointEvery?: number;
  /** Host memory for the recently fed files' checkpoints (in-place edits), default 64 MiB. */
  recentCheckpointBytes?: number;
  /** Patch an edit in when that feeds at most this share of the file's tokens (default 0.5; 0: always append the whole new version). */
  patchShare?: number;
  /** Called after a (background) compaction replaced the sequence, e.g. to save it. */
  onCompacted?: () => void;
  chunkSize?: number;
  log?: (message: string) => void;
}

export interface AskOptions {
  selection?: { path: string; text: string; startLine?: number };
  maxTokens?: number;
  temperature?: number;
  signal?: AbortSignal;
}

export interface CompleteOptions {
  maxTokens?: number;
  stop?: string[];
  signal?: AbortSignal;
  /** Sees the completion's text as it is generated. */
  onDelta?: (text: string) => void;
  /**
   * Inline-completion policy (default true): restate a short window around the
   * cursor (the file itself is in the context) and stop where the suggestion's
   * line or block ends (see completion-scope.ts). False: the prefix and suffix are
   * the prompt, whole, and only `stop` and maxTokens end the text (an API completion).
   */
  inline?: boolean;
  /** Most lines of a block completion (inline only; default 8). */
  maxLines?: number;
}

export interface CompletionResult {
  text: string;
  /** Prompt tokens whose state was reused from earlier requests (the prefix cache's hits). */
  reusedTokens: number;
  /** Prompt tokens fed for this request (the cache's misses, plus the restated suffix). */
  fedTokens: number;
  breakdown: CompletionBreakdown;
}

/** Where a completion's time went. */
export interface CompletionBreakdown {
  /** Waiting for the context (behind other work). */
  queueMs: number;
  /** Feeding the prompt, up to the first generated token. */
  feedMs: number;
  /** Generating the rest. */
  decodeMs: number;
  generatedTokens: number;
  /** Prefix tokens fed (the rest of the restated prefix came from the cache). */
  prefixTokens: number;
  suffixTokens: number;
  /** The prefix state: built from the file header ('cold'), continued ('warm'), or set back after other work had the context ('restored'). */
  cache: 'cold' | 'warm' | 'restored';
  scope: CompletionScope | 'free';
}

export interface AskResult {
  text: string;
  sources: Source[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Per block of the workspace part, how often a query picked it beyond the forced ones (what `sources` is made from). */
  blockHits: [number, number][];
  /** The layout those blocks were counted over (spans are replaced, never changed, so this stays as it was). */
  layout: FileSpan[];
}

export interface ContextStats {
  files: number;
  liveTokens: number;
  deadTokens: number;
  sequenceTokens: number;
  excluded: { path: string; tokens: number }[];
  checkpoints: number;
  /** Bytes of lightning states held for in-place edits of recently fed files. */
  recentCheckpointBytes: number;
  /** Workspace tokens fed through the model since this context was created or restored (appends, in-place edits, compaction). */
  encodedTokens: number;
}

export class ContextError extends Error {}

/** The context as a store sees it when saving. */
export interface ContextState {
  length: number;
  tokens: readonly number[];
  sequence: Sequence;
  spans: FileSpan[];
  excluded: ExcludedEntry[];
  dead: [number, number][];
  checkpoints: readonly SequenceCheckpoint[];
  end: SequenceCheckpoint;
  /** Positions from here on were rewritten since the last save. */
  dirtyFrom: number;
}

/** What a store hands back to rebuild a context. */
export interface RestoredState {
  /** Token ids, every sparse layer's K/V and compressed keys, at `end` (lightning states included). */
  sequence: Sequence;
  end: SequenceCheckpoint;
  dead: [number, number][];
  spans: FileSpan[];
  excluded: ExcludedEntry[];
  checkpoints: SequenceCheckpoint[];
}

/** A file left out of the context for the token budget. */
export interface ExcludedEntry {
  path: string;
  tokens: number;
  contentHash: string;
}

/** Whatever followed the context end (a request's prompt and output), set aside so the sequence can serve other work meanwhile. */
interface ParkedTail {
  version: number;
  tokens: number[];
  kv: Map<number, { keys: Float32Array; values: Float32Array }>;
  end: SequenceCheckpoint;
}

/** The last completion's state after the context: the file header, then the restated prefix, checkpointed along the way. */
interface CompletionState {
  path: string;
  /** The context version it was computed on. */
  version: number;
  /** The restated prefix text (where the next request's restatement starts, if it can). */
  restated: string;
  /** Ids after the header (its last token, then the prefix) up to the last checkpoint. */
  fed: number[];
  /** Ascending: `at` ids of `fed` are in the state of `checkpoint`; the first is the header's (at 0). */
  checkpoints: { at: number; checkpoint: SequenceCheckpoint }[];
  /** Set while other work has the context. */
  parked?: ParkedTail;
}

/** A sequence with the files laid out in it: the live one, or one a compaction is building. */
interface Track {
  sequence: Sequence;
  spans: Map<string, FileSpan>;
  /** Lightning states at file boundaries, ascending by length. */
  checkpoints: SequenceCheckpoint[];
  /**
   * The files fed last, in order, each with checkpoints along it (the first at its
   * start): an edit to one of them can roll back to the checkpoint before its first
   * changed token and re-feed from there, in place (see editInPlace).
   */
  recent: { path: string; start: number; checkpoints: SequenceCheckpoint[] }[];
}

export class WorkspaceContext {
  readonly format: PromptFormat;
  private track: Track;
  /** Files left out for the token budget: their size, and the content it was measured on. */
  private readonly excluded = new Map<string, { tokens: number; contentHash: string }>();
  private compacting?: Promise<void>;
  /** The end of the workspace part of the sequence; requests run after it and roll back to it. */
  private contextEnd: SequenceCheckpoint;
  /** Bumped whenever the workspace part changes (states computed after it are then stale). */
  private version = 0;
  private readonly lock = new RequestLock();
  private readonly budget: number;
  private readonly compactAt: number;
  private readonly checkpointEvery: number;
  private readonly recentBudget: number;
  private readonly patchShare: number;
  /** Lowest position rewritten since the last save (compaction re-feeds from a checkpoint). */
  private dirtyFrom = Number.POSITIVE_INFINITY;
  private completion?: CompletionState;
  /** Questions and completions waiting or running: a compaction pauses meanwhile. */
  private foreground = 0;
  private foregroundIdle: (() => void)[] = [];
  private encodedTokens = 0;

  constructor(
    readonly model: SalaModel,
    readonly tokenizer: Tokenizer,
    private readonly options: ContextOptions = {},
  ) {
    this.format = new PromptFormat(tokenizer);
    this.track = { sequence: model.newSequence(), spans: new Map(), checkpoints: [], recent: [] };
    this.budget = options.budget ?? 1_000_000;
    this.compactAt = options.compactAt ?? 0.25;
    this.checkpointEvery = options.checkpointEvery ?? 16_384;
    this.recentBudget = options.recentCheckpointBytes ?? RECENT_CHECKPOINT_BYTES;
    this.patchShare = options.patchShare ?? PATCH_SHARE;
    this.contextEnd = this.sequence.checkpoint();
  }

  /** The live sequence (replaced when a compaction finishes). */
  get sequence(): Sequence {
    return this.track.sequence;
  }

  private get spans(): Map<string, FileSpan> {
    return this.track.spans;
  }

  private get checkpoints(): SequenceCheckpoint[] {
    return this.track.checkpoints;
  }

  /** Everything a store needs to persist the context, taken under the lock so it is consistent. */
  withState<T>(use: (state: ContextState) => Promise<T>): Promise<T> {
    return this.lock.run(async () => {
      this.settleTail();
      const result = await use({
        length: this.contextEnd.length,
        tokens: this.sequence.tokens,
        sequence: this.sequence,
        spans: this.layout(),
        excluded: [...this.excluded].map(([path, e]) => ({ path, ...e })),
        dead: this.sequence.deadRanges.map(([a, b]) => [a, b]),
        checkpoints: this.checkpoints,
        end: this.contextEnd,
        dirtyFrom: this.dirtyFrom,
      });
      this.dirtyFrom = Number.POSITIVE_INFINITY;
      return result;
    });
  }

  /** Rebuilds a context from persisted state (see ContextStore.load). */
  static restore(model: SalaModel, tokenizer: Tokenizer, options: ContextOptions, saved: RestoredState): WorkspaceContext {
    const context = new WorkspaceContext(model, tokenizer, options);
    const sequence = saved.sequence;
    context.track.sequence = sequence;
    sequence.rollback(saved.end);
    for (const [a, b] of saved.dead) sequence.markDead(a, b);
    for (const span of saved.spans) context.spans.set(span.path, span);
    for (const { path, tokens, contentHash } of saved.excluded) context.excluded.set(path, { tokens, contentHash });
    context.track.checkpoints = [...saved.checkpoints];
    context.contextEnd = sequence.checkpoint();
    return context;
  }

  stats(): ContextStats {
    const liveTokens = [...this.spans.values()].reduce((n, s) => n + spanTokens(s), 0);
    return {
      files: this.spans.size,
      liveTokens,
      deadTokens: this.sequence.deadTokens,
      sequenceTokens: this.contextEnd.length,
      excluded: [...this.excluded].map(([path, e]) => ({ path, tokens: e.tokens })),
      checkpoints: this.checkpoints.length,
      recentCheckpointBytes: this.track.recent.reduce((n, r) => n + r.checkpoints.length, 0) * this.stateBytes(),
      encodedTokens: this.encodedTokens,
    };
  }

  span(path: string): FileSpan | undefined {
    return this.spans.get(path);
  }

  /** The file's ids as they are in the context now (header, then content): one slice, or a patched file's pieces in order. */
  fileIds(path: string): number[] | undefined {
    const span = this.spans.get(path);
    return span && idsOf(span, this.sequence.tokens);
  }

  /** The file and line (1-based) a live position of the workspace part belongs to; undefined for a tombstone or a patch header. */
  locate(position: number): { path: string; line: number } | undefined {
    for (const span of this.spans.values()) {
      if (position < span.start || position >= span.end) continue;
      for (const piece of piecesOf(span)) {
        if (position >= piece.at && position < piece.at + piece.length) return { path: span.path, line: lineOf(span, piece.from + position - piece.at) };
      }
    }
    return undefined;
  }

  /** Spans in context order. */
  layout(): FileSpan[] {
    return [...this.spans.values()].sort((a, b) => a.start - b.start);
  }

  /**
   * Adds or replaces files and removes deleted ones, as one update: replaced and
   * deleted spans are tombstoned, new versions appended in the given order
   * (callers pass rarely-changing files first). Unchanged files are skipped.
   */
  update(changed: readonly ContextFile[], deleted: readonly string[] = [], options: UpdateOptions = {}): Promise<void> {
    const { signal } = options;
    return this.lock.run(async () => {
      this.settleTail();
      for (const path of deleted) this.tombstone(path);
      for (const file of changed) {
        const old = this.spans.get(file.path);
        if (old && old.contentHash === file.contentHash) continue;
        const editCount = old ? old.editCount + 1 : 0;
        const encoded = file.encoded ?? this.format.file(file.path, file.text);
        // The file just edited goes in: where it outgrows the budget, the stalest files give way (as in the layout plan).
        if (encoded.ids.length <= this.budget) this.makeRoom(this.budgetTokens() + encoded.ids.length - (old ? fileTokens(old) : 0) - this.budget, file.path);
        const patch = old && this.planPatch(old, encoded.ids, encoded.headerTokens);
        const tokens =
          (await this.editInPlace({ ...file, encoded }, editCount, patch?.cost, signal)) ??
          (patch && (await this.applyPatch(old, patch, { ...file, editCount }, signal))) ??
          (this.tombstone(file.path), await this.append({ ...file, encoded }, editCount, signal));
        // Each file fed is in the context (completions let in meanwhile see it; an abort keeps it).
        this.contextEnd = this.sequence.checkpoint();
        this.version++;
        options.onFile?.(file.path, tokens);
      }
      if (this.sequence.deadTokens > this.compactAt * this.sequence.length) {
        // In the background: questions and edits go on meanwhile.
        this.compact().catch((err: unknown) => this.options.log?.(`context: compaction failed: ${err instanceof Error ? err.message : String(err)}`));
      }
    });
  }

  /**
   * Drops the tombstones: builds a new sequence from the last lightning checkpoint
   * before the first tombstone, re-feeding every live file after it (from its cached
   * token ids), while the current sequence keeps serving requests. Edits made
   * meanwhile are replayed onto the new sequence before it replaces the old one.
   */
  compact(signal?: AbortSignal): Promise<void> {
    this.compacting ??= this.compactInBackground(signal).finally(() => (this.compacting = undefined));
    return this.compacting;
  }

  private async compactInBackground(signal?: AbortSignal): Promise<void> {
    const plan = await this.lock.run(async () => {
      this.settleTail();
      const firstDead = this.sequence.deadRanges[0]?.[0];
      if (firstDead === undefined) return undefined;
      const restart = [...this.checkpoints].reverse().find((c) => c.length <= firstDead) ?? this.checkpoints[0];
      const layout = this.layout();
      // A patched file with pieces on both sides of the restart is re-fed whole, its earlier pieces tombstoned.
      const refeed = layout.filter((span) => span.end > restart.length).map((span) => ({ span, ids: idsOf(span, this.sequence.tokens) }));
      const track: Track = {
        sequence: this.sequence.prefix(restart),
        spans: new Map(layout.filter((span) => span.end <= restart.length).map((span) => [span.path, span])),
        checkpoints: this.checkpoints.filter((c) => c.length <= restart.length),
        recent: [],
      };
      for (const { span } of refeed) for (const [a, b] of rangesOf(span)) if (a < restart.length) track.sequence.markDead(a, Math.min(b, restart.length));
      this.options.log?.(`context: compacting from token ${restart.length} (${this.sequence.deadTokens} dead, ${refeed.length} files to re-feed)`);
      return { restart, refeed, track };
    });
    if (!plan) return;
    // Requests run on the live sequence meanwhile; the building pauses while they do (between pieces of a file).
    const pause = () => this.foregroundSettled();
    for (const { span, ids } of plan.refeed) {
      await pause();
      await this.feedFile(plan.track, span.path, ids, span.headerTokens, span, signal, pause);
    }
    await this.lock.run(async () => {
      this.settleTail();
      // Replay what changed while building: new versions appended, deletions tombstoned.
      for (const span of this.layout()) {
        const built = plan.track.spans.get(span.path);
        if (built && built.contentHash === span.contentHash) continue;
        if (built) {
          for (const [a, b] of rangesOf(built)) plan.track.sequence.markDead(a, b);
          plan.track.spans.delete(span.path);
        }
        await this.feedFile(plan.track, span.path, idsOf(span, this.sequence.tokens), span.headerTokens, span, signal);
      }
      for (const [path, built] of [...plan.track.spans]) {
        if (this.spans.has(path)) continue;
        for (const [a, b] of rangesOf(built)) plan.track.sequence.markDead(a, b);
        plan.track.spans.delete(path);
      }
      this.track = plan.track;
      this.dirtyFrom = Math.min(this.dirtyFrom, plan.restart.length);
      this.contextEnd = this.sequence.checkpoint();
      this.version++;
    });
    this.options.onCompacted?.();
  }

  /** Resolves once no question or completion waits or runs. */
  private async foregroundSettled(): Promise<void> {
    while (this.foreground > 0) await new Promise<void>((resolve) => this.foregroundIdle.push(resolve));
  }

  private async asForeground<T>(work: () => Promise<T>): Promise<T> {
    this.foreground++;
    try {
      return await work();
    } finally {
      if (--this.foreground === 0) for (const resolve of this.foregroundIdle.splice(0)) resolve();
    }
  }

  /**
   * Leaves the sequence at the context end for the lock's new holder. What follows
   * it can only be the last completion's prefix state: that is set aside (a few
   * hundred tokens' K/V rows), so the next completion continues it.
   */
  private settleTail(): void {
    if (this.sequence.length === this.contextEnd.length) return;
    const state = this.completion;
    if (state && !state.parked && state.version === this.version) state.parked = this.parkTail();
    else this.sequence.rollback(this.contextEnd);
  }

  /** Sets aside everything after the context end and rolls back to it. */
  private parkTail(): ParkedTail {
    const sequence = this.sequence;
    const from = this.contextEnd.length;
    const kv = new Map<number, { keys: Float32Array; values: Float32Array }>();
    for (const [layer, cache] of sequence.sparse) kv.set(layer, cache.rows(from, sequence.length));
    const parked = { version: this.version, tokens: sequence.tokens.slice(from), kv, end: sequence.checkpoint() };
    sequence.rollback(this.contextEnd);
    return parked;
  }

  /** Puts a parked tail back after the context end: the sequence is then exactly as it was when parked. */
  private unparkTail(parked: ParkedTail): void {
    const sequence = this.sequence;
    if (parked.version !== this.version || sequence.length !== this.contextEnd.length) throw new ContextError('internal: a parked state no longer fits the context');
    for (const [layer, rows] of parked.kv) sequence.sparse.get(layer)?.append(rows.keys, rows.values);
    for (const id of parked.tokens) sequence.tokens.push(id);
    for (const [layer, state] of parked.end.lightning) sequence.lightning.get(layer)?.set(state);
  }

  /** At a safe point of long work under the lock: lets waiting completions run, then carries on exactly where it was. */
  private async yieldToCompletions(): Promise<void> {
    if (!this.lock.interactiveWaiting) return;
    const own = this.sequence.length > this.contextEnd.length ? this.parkTail() : undefined;
    await this.lock.yield();
    this.settleTail();
    if (own) this.unparkTail(own);
  }

  private tombstone(path: string): void {
    const span = this.spans.get(path);
    this.excluded.delete(path);
    if (!span) return;
    for (const [a, b] of rangesOf(span)) this.sequence.markDead(a, b);
    this.spans.delete(path);
    this.version++;
  }

  /** Spans and tombstones tile the workspace part of the sequence, so live = length − dead (no walk over every file). */
  private liveTokens(): number {
    return this.sequence.length - this.sequence.deadTokens;
  }

  /**
   * What the budget counts: every file's own tokens (as the layout plan counts them),
   * not patch headers — else each patch would grow a full context by its header until
   * edits could only append whole files.
   */
  private budgetTokens(): number {
    let headers = 0;
    for (const span of this.spans.values()) for (const piece of span.pieces ?? []) headers += piece.header;
    return this.liveTokens() - headers;
  }

  /**
   * An edit in place, where that feeds fewer tokens than appending the whole new
   * version: roll back to the recent checkpoint at or before the file's first changed
   * token, feed the new version from there, then the files after it again (from their
   * cached ids). The file last in the context always qualifies (a one-line edit costs the
   * tokens after the change, not the file's); so does one followed by a few small files
   * (edits alternating between files). No tombstone. Returns the new token count, or
   * undefined where appending or a patch (`patchCost` tokens) is cheaper or the recent
   * checkpoints do not reach back.
   */
  private async editInPlace(file: ContextFile, editCount: number, patchCost = Number.POSITIVE_INFINITY, signal?: AbortSignal): Promise<number | undefined> {
    const track = this.track;
    const { sequence } = track;
    const span = this.spans.get(file.path);
    const entry = span && !span.pieces && track.recent.find((r) => r.path === file.path && r.start === span.start);
    if (!span || !entry) return undefined;
    // What follows the file must be live files laid end to end: they are fed again as they are.
    const lastDead = sequence.deadRanges[sequence.deadRanges.length - 1];
    if (lastDead && lastDead[1] > span.start) return undefined;
    const following = this.layout().filter((s) => s.start >= span.end);
    let end = span.end;
    for (const s of following) {
      if (s.pieces || s.start !== end) return undefined;
      end = s.end;
    }
    if (end !== sequence.length) return undefined;
    const { ids, headerTokens } = file.encoded ?? this.format.file(file.path, file.text);
    if (this.budgetTokens() - (span.end - span.start) + ids.length > this.budget) return undefined;
    let same = 0;
    const limit = Math.min(ids.length, span.end - span.start);
    while (same < limit && ids[same] === sequence.tokens[span.start + same]) same++;
    const from = [...entry.checkpoints].reverse().find((c) => c.length <= span.start + same) ?? entry.checkpoints[0];
    const cost = span.start + ids.length - from.length + (sequence.length - span.end);
    // In place when no dearer than a patch by more than a piece: it leaves the file whole.
    if (cost > ids.length || cost > patchCost + PIECE_TOKENS) return undefined;

    const refeed = following.map((s) => ({ span: s, ids: sequence.tokens.slice(s.start, s.end) }));
    const cutBack = (to: SequenceCheckpoint) => {
      sequence.rollback(to);
      track.checkpoints = track.checkpoints.filter((c) => c.length <= to.length);
      // The files after the cut get fresh entries as they are fed again.
      track.recent = track.recent.filter((r) => r.start < to.length || r === entry);
      entry.checkpoints = entry.checkpoints.filter((c) => c.length <= to.length);
      this.dirtyFrom = Math.min(this.dirtyFrom, to.length);
      // While it is fed, requests let in between pieces see the context up to here (as with an append).
      this.contextEnd = to;
    };
    const feedFollowing = async () => {
      for (const { span: s, ids: followingIds } of refeed) {
        await this.feedFile(track, s.path, followingIds, s.headerTokens, s, undefined, () => this.yieldToCompletions());
      }
    };
    cutBack(from);
    this.spans.delete(file.path);
    for (const { span: s } of refeed) this.spans.delete(s.path);
    this.version++;
    try {
      await this.feedInPieces(sequence, ids.slice(from.length - span.start), signal, () => this.yieldToCompletions(), (length) => this.keepRecentCheckpoint(track, length));
    } catch (err) {
      // Half fed: the old version is gone from here on, so the file leaves the context (the
      // next update adds it back), as with an append; the files after it are fed again.
      const start = entry.checkpoints[0];
      cutBack(start);
      track.recent = track.recent.filter((r) => r !== entry);
      await feedFollowing();
      this.contextEnd = sequence.checkpoint();
      throw err;
    }
    this.spans.set(file.path, this.fileSpan(file.path, span.start, ids, headerTokens, { ...file, editCount }));
    this.contextEnd = sequence.checkpoint();
    // The files after it again (bounded: cheaper than the file itself, by the test above).
    await feedFollowing();
    return ids.length;
  }

  /** Bytes of one checkpoint (every lightning layer's state). */
  private stateBytes(): number {
    return [...this.sequence.lightning.values()].reduce((n, s) => n + s.byteLength, 0);
  }

  /** Starts the recent entry of a file fed from `start` (its first checkpoint), within the budget. */
  private addRecent(track: Track, path: string, start: SequenceCheckpoint): Track['recent'][number] {
    const entry = { path, start: start.length, checkpoints: [start] };
    track.recent.push(entry);
    this.trimRecent(track);
    return entry;
  }

  /** Keeps a checkpoint at `length` in the last recent file if the previous is far enough back. */
  private keepRecentCheckpoint(track: Track, length: number): void {
    const entry = track.recent[track.recent.length - 1];
    if (!entry) return;
    const spacing = Math.max(RECENT_CHECKPOINT_TOKENS, Math.ceil(((length - entry.start) * this.stateBytes()) / this.recentBudget));
    const last = entry.checkpoints[entry.checkpoints.length - 1];
    if (length - last.length < spacing) return;
    entry.checkpoints.push(track.sequence.checkpoint());
    this.trimRecent(track);
  }

  /** Drops the oldest files' checkpoints past the budget, then thins the last file's. */
  private trimRecent(track: Track): void {
    const stateBytes = this.stateBytes();
    let held = track.recent.reduce((n, r) => n + r.checkpoints.length, 0) * stateBytes;
    while (held > this.recentBudget && track.recent.length > 1) held -= (track.recent.shift()?.checkpoints.length ?? 0) * stateBytes;
    const entry = track.recent[0];
    if (entry && held > this.recentBudget) entry.checkpoints = entry.checkpoints.filter((_, i) => i % 2 === 0);
  }

  /**
   * Leaves out the stalest files (layout order: fewest edits, oldest) until `needed`
   * budget tokens are free, never `keep`; each is tombstoned and listed as excluded.
   */
  private makeRoom(needed: number, keep: string): void {
    if (needed <= 0) return;
    const stalest = [...this.spans.values()].filter((s) => s.path !== keep).sort((a, b) => compareLayoutOrder({ ...a, tokens: 0 }, { ...b, tokens: 0 }));
    for (const span of stalest) {
      if (needed <= 0) break;
      const tokens = fileTokens(span);
      this.tombstone(span.path);
      this.excluded.set(span.path, { tokens, contentHash: span.contentHash });
      this.options.log?.(`context: ${span.path} (${tokens} tokens) left out to make room for ${keep} within the ${this.budget}-token budget`);
      needed -= tokens;
    }
  }

  /**
   * A patch for an edit of `span` to `ids`: the lines from the first changed token to
   * the last, as edited, with a `path:first-last` header. The file's common start and
   * end stay where they are; only the replaced lines are tombstoned. Undefined where
   * it would feed more than the patch share of the file, split the file into too many
   * pieces, or not fit the budget.
   */
  private planPatch(span: FileSpan, ids: readonly number[], headerTokens: number): PatchPlan | undefined {
    if (!(this.patchShare > 0) || headerTokens !== span.headerTokens) return undefined;
    const old = idsOf(span, this.sequence.tokens);
    const limit = Math.min(old.length, ids.length);
    let same = 0;
    while (same < limit && old[same] === ids[same]) same++;
    let sameEnd = 0;
    while (sameEnd < limit - same && old[old.length - 1 - sameEnd] === ids[ids.length - 1 - sameEnd]) sameEnd++;
    if (same < headerTokens) return undefined;
    const lineStarts = lineStartsOf(this.format, ids, headerTokens);
    // From the start of the line with the first changed token to the first line start after
    // the last one whose break token is unchanged too (so it is a line start in both versions).
    let first = 0;
    while (first + 1 < lineStarts.length && lineStarts[first + 1] <= same) first++;
    let next = first;
    while (next < lineStarts.length && lineStarts[next] <= ids.length - sameEnd) next++;
    const from = lineStarts[first];
    const to = next < lineStarts.length ? lineStarts[next] : ids.length;
    const oldTo = to - (ids.length - old.length);
    const header = this.format.patchHeader(span.path, first + 1, Math.max(first + 1, next));
    const cost = header.length + to - from;
    if (cost > this.patchShare * ids.length) return undefined;

    const pieces: FilePiece[] = [];
    const dead: [number, number][] = [];
    for (const piece of piecesOf(span)) {
      const a = piece.from;
      const b = piece.from + piece.length;
      if (a < from) pieces.push({ at: piece.at, from: a, length: Math.min(b, from) - a, header: piece.header });
      const deadFrom = Math.max(a, from);
      const deadTo = Math.min(b, oldTo);
      if (deadFrom < deadTo) dead.push([piece.at + deadFrom - a, piece.at + deadTo - a]);
      if (b > oldTo) {
        const keep = Math.max(a, oldTo);
        pieces.push({ at: piece.at + keep - a, from: keep + ids.length - old.length, length: b - keep, header: keep === a ? piece.header : 0 });
      }
      // A patch header whose first tokens were replaced heads nothing now.
      if (piece.header > 0 && a >= from && a < oldTo) dead.push([piece.at - piece.header, piece.at]);
    }
    if (pieces.length + 1 > MAX_PIECES) return undefined;
    if (this.budgetTokens() - old.length + ids.length > this.budget) return undefined;
    return { ids: [...header, ...ids.slice(from, to)], header: header.length, from, pieces, dead, lineStarts, headerTokens, cost };
  }

  /** Feeds a planned patch at the tail; returns its token count. If it fails half fed, the file leaves the context (the next update adds it back). */
  private async applyPatch(span: FileSpan, patch: PatchPlan, meta: { contentHash: string; mtimeMs: number; size?: number; editCount: number }, signal?: AbortSignal): Promise<number> {
    const track = this.track;
    for (const [a, b] of patch.dead) track.sequence.markDead(a, b);
    this.version++;
    let at: number;
    try {
      at = (await this.feedTokens(track, span.path, patch.ids, signal, () => this.yieldToCompletions())) + patch.header;
    } catch (err) {
      this.tombstone(span.path);
      throw err;
    }
    const pieces = [...patch.pieces, { at, from: patch.from, length: patch.ids.length - patch.header, header: patch.header }].sort((x, y) => x.from - y.from);
    const { contentHash, mtimeMs, size, editCount } = meta;
    track.spans.set(span.path, {
      path: span.path,
      start: Math.min(...pieces.map((p) => p.at - p.header)),
      end: Math.max(...pieces.map((p) => p.at + p.length)),
      headerTokens: patch.headerTokens,
      lineStarts: patch.lineStarts,
      pieces,
      contentHash,
      mtimeMs,
      size,
      editCount,
    });
    return patch.ids.length;
  }

  /** Appends a file at the tail; returns its token count. */
  private async append(file: ContextFile, editCount: number, signal?: AbortSignal): Promise<number> {
    const { ids, headerTokens } = file.encoded ?? this.format.file(file.path, file.text);
    if (this.budgetTokens() + ids.length > this.budget) {
      this.excluded.set(file.path, { tokens: ids.length, contentHash: file.contentHash });
      this.options.log?.(`context: ${file.path} (${ids.length} tokens) does not fit the ${this.budget}-token budget; left out`);
      return ids.length;
    }
    await this.feedFile(this.track, file.path, ids, headerTokens, { contentHash: file.contentHash, mtimeMs: file.mtimeMs, size: file.size, editCount }, signal, () => this.yieldToCompletions());
    return ids.length;
  }

  /** Files left out for the budget, with their token counts. */
  excludedFiles(): ReadonlyMap<string, { tokens: number; contentHash: string }> {
    return this.excluded;
  }

  /** Records files a layout plan left out for the budget (and forgets `forget`). */
  setExcluded(entries: readonly ExcludedEntry[], forget: readonly string[] = []): void {
    for (const path of forget) this.excluded.delete(path);
    for (const { path, tokens, contentHash } of entries) if (!this.spans.has(path)) this.excluded.set(path, { tokens, contentHash });
  }

  private async feedFile(
    track: Track,
    path: string,
    ids: number[],
    headerTokens: number,
    meta: { contentHash: string; mtimeMs: number; size?: number; editCount: number },
    signal?: AbortSignal,
    between?: () => Promise<void>,
  ): Promise<void> {
    const start = await this.feedTokens(track, path, ids, signal, between);
    track.spans.set(path, this.fileSpan(path, start, ids, headerTokens, meta));
  }

  /** Feeds a file's (or a patch's) ids at the tail, checkpointed; returns where they start. A half-fed run is rolled back. */
  private async feedTokens(track: Track, path: string, ids: readonly number[], signal?: AbortSignal, between?: () => Promise<void>): Promise<number> {
    const { sequence, checkpoints } = track;
    const start = sequence.length;
    const before = sequence.checkpoint();
    const last = checkpoints[checkpoints.length - 1];
    if (start === 0 || start - (last?.length ?? 0) >= this.checkpointEvery) checkpoints.push(before);
    const entry = this.addRecent(track, path, before);
    try {
      await this.feedInPieces(sequence, ids, signal, between, (length) => this.keepRecentCheckpoint(track, length));
    } catch (err) {
      // Half-fed ids would leave tokens no span owns: roll back to where they started.
      sequence.rollback(before);
      track.recent = track.recent.filter((r) => r !== entry);
      throw err;
    }
    return start;
  }

  private fileSpan(path: string, start: number, ids: readonly number[], headerTokens: number, meta: { contentHash: string; mtimeMs: number; size?: number; editCount: number }): FileSpan {
    const { contentHash, mtimeMs, size, editCount } = meta;
    return { path, start, end: start + ids.length, headerTokens, lineStarts: lineStartsOf(this.format, ids, headerTokens), contentHash, mtimeMs, size, editCount };
  }

  /**
   * Feeds ids in forward calls of PIECE_TOKENS, running `between` after each, where
   * that gives the same result as one call: the model decides the dense/sparse switch
   * per call and aligns an all-new prefill differently, so only a sequence already
   * past the switch (and past the full top-k), or staying below it, is split.
   */
  private async feedInPieces(sequence: Sequence, ids: readonly number[], signal?: AbortSignal, between?: () => Promise<void>, afterPiece?: (length: number) => void): Promise<void> {
    const { denseLen, blockSize } = this.model.config.sparse;
    const past = sequence.length;
    this.encodedTokens += ids.length;
    const sparseThroughout = past + Math.min(PIECE_TOKENS, ids.length) >= Math.max(denseLen, this.model.sizes.topkTotal * blockSize);
    const denseThroughout = past + ids.length < denseLen;
    if (!between || past === 0 || !(sparseThroughout || denseThroughout)) {
      await this.model.forward(sequence, ids, { logits: 'last', chunkSize: this.options.chunkSize, signal });
      return;
    }
    for (let at = 0; at < ids.length; at += PIECE_TOKENS) {
      if (at > 0) await between();
      await this.model.forward(sequence, ids.slice(at, at + PIECE_TOKENS), { logits: 'last', signal });
      if (at + PIECE_TOKENS < ids.length) afterPiece?.(sequence.length);
    }
  }

  /**
   * Streams an answer to `question` generated after the whole context; returns
   * the sources: the files and lines whose blocks the sparse layers selected
   * most while reading the question and writing the answer.
   */
  async *ask(question: string, options: AskOptions = {}): AsyncGenerator<string, AskResult> {
    const queue: string[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    let failure: unknown;
    let result: AskResult | undefined;
    const work = this.asForeground(() => this.lock.run(async () => {
      this.settleTail();
      const start = this.sequence.length;
      let text = question;
      if (options.selection) {
        const where = options.selection.startLine !== undefined ? `${options.selection.path}:${options.selection.startLine}` : options.selection.path;
        text += `\n\nSelected code (${where}):\n${options.selection.text}`;
      }
      const prompt = this.format.question(text);
      const hits = new Map<number, number>();
      const onSelection = (record: SelectionRecord) => this.countHits(record, start, hits);
      try {
        const stream = generate(this.model, this.tokenizer, prompt, {
          sequence: this.sequence,
          maxTokens: options.maxTokens ?? 256,
          temperature: options.temperature ?? 0,
          stopIds: this.format.stopIds,
          signal: options.signal,
          onSelection,
        });
        let next = await stream.next();
        while (!next.done) {
          queue.push(next.value);
          wake?.();
          // A completion waiting goes first: the answer so far is set aside and brought back exactly.
          await this.yieldToCompletions();
          next = await stream.next();
        }
        result = { text: next.value.text, finishReason: next.value.finishReason, promptTokens: prompt.length, sources: this.sources(hits), blockHits: [...hits], layout: this.layout() };
      } finally {
        this.sequence.rollback(this.contextEnd);
      }
    }));
    work.then(
      () => {
        done = true;
        wake?.();
      },
      (err: unknown) => {
        failure = err;
        done = true;
        wake?.();
      },
    );
    for (;;) {
      while (queue.length > 0) yield queue.shift() ?? '';
      if (done) break;
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
    if (failure !== undefined) throw failure;
    if (!result) throw new ContextError('internal: ask finished without a result');
    return result;
  }

  /** Counts, per block of the workspace part, how often a query picked it beyond the forced ones. */
  /**
   * How likely the model finds `answer` (then the end of the turn) as the reply to
   * `question` after the whole context: the log-probability in nats and the tokens
   * scored. A graded measure where exact answers are rare (a small model, a long
   * context); the context is unchanged afterwards.
   */
  score(question: string, answer: string, signal?: AbortSignal): Promise<{ logProb: number; tokens: number }> {
    return this.asForeground(() => this.lock.run(async () => {
      this.settleTail();
      const prompt = this.format.question(question);
      const target = [...this.format.text(answer), ...this.format.stopIds.slice(0, 1)];
      try {
        // Rows from the prompt's last position on: row i predicts target[i].
        const logits = await this.model.forward(this.sequence, [...prompt, ...target], { logits: target.length + 1, signal });
        const vocab = this.model.config.vocabSize;
        let logProb = 0;
        target.forEach((id, row) => {
          const values = logits.subarray(row * vocab, (row + 1) * vocab);
          let max = -Infinity;
          for (const v of values) max = Math.max(max, v);
          let sum = 0;
          for (const v of values) sum += Math.exp(v - max);
          logProb += values[id] - max - Math.log(sum);
        });
        return { logProb, tokens: target.length };
      } finally {
        this.sequence.rollback(this.contextEnd);
      }
    }));
  }

  private countHits(record: SelectionRecord, contextLength: number, hits: Map<number, number>): void {
    const { blockSize, initBlocks } = this.model.config.sparse;
    const { localBlocks } = this.model.sizes;
    for (let row = 0; row < record.selected.length / record.k; row++) {
      const position = record.firstPosition + (row % record.queries);
      const localFrom = Math.floor(position / blockSize) - localBlocks;
      for (let j = 0; j < record.k; j++) {
        const block = record.selected[row * record.k + j];
        // Forced blocks (the sink and the local window) and the question's own blocks say nothing about sources.
        if (block < initBlocks || block >= localFrom || (block + 1) * blockSize > contextLength) continue;
        hits.set(block, (hits.get(block) ?? 0) + 1);
      }
    }
  }

  /** Maps the most-selected blocks back to files and line ranges. */
  private sources(hits: Map<number, number>, limit = 5): Source[] {
    const { blockSize } = this.model.config.sparse;
    const total = [...hits.values()].reduce((a, b) => a + b, 0);
    if (total === 0) return [];
    const spans = this.layout();
    const byFileLine = new Map<string, { path: string; startLine: number; endLine: number; weight: number }>();
    for (const [block, count] of [...hits].sort((a, b) => b[1] - a[1])) {
      const from = block * blockSize;
      const to = from + blockSize;
      for (const span of spans) {
        if (span.end <= from || span.start >= to) continue;
        // Through the file's pieces: a patch's lines are reported where they are in the file now.
        for (const piece of piecesOf(span)) {
          const a = Math.max(from, piece.at);
          const b = Math.min(to, piece.at + piece.length);
          if (a >= b) continue;
          const startLine = lineOf(span, piece.from + a - piece.at);
          const endLine = lineOf(span, piece.from + b - 1 - piece.at);
          const key = `${span.path}:${startLine}`;
          const entry = byFileLine.get(key) ?? { path: span.path, startLine, endLine, weight: 0 };
          entry.weight += count / total;
          byFileLine.set(key, entry);
        }
      }
    }
    return mergeAdjacent([...byFileLine.values()]).sort((a, b) => b.weight - a.weight).slice(0, limit);
  }

  /**
   * Inline completion at a cursor: the live text of `path` split into prefix and
   * suffix, after the whole context (fill-in-the-middle when the model has the
   * tokens). The state after the restated prefix is kept, checkpointed along it, so
   * a request that shares the start of the previous one's prefix (typing on, a
   * backspace, the client's window sliding) feeds only what differs. It goes ahead
   * of queued work and waits at most one step of a question or a file being encoded.
   */
  complete(path: string, prefix: string, suffix: string, options: CompleteOptions = {}): Promise<CompletionResult> {
    const requested = performance.now();
    const { signal } = options;
    return this.asForeground(() =>
      this.lock.run(
        async () => {
          const began = performance.now();
          const inline = options.inline ?? true;
          const restated = inline ? this.restatePrefix(path, prefix) : prefix;
          const start = this.format.fimStart(path);
          // Ids after the state's base (the header less its last token): that token, then the prefix.
          const fed = [start[start.length - 1], ...this.format.text(restated)];
          const suffixIds = this.format.hasFim ? (inline ? this.format.text(restateSuffix(suffix)).slice(0, SUFFIX_TOKENS) : this.format.text(suffix)) : [];
          const end = this.format.fimEndIds(suffixIds);
          // The prefix state outlives this request: a superseded one goes on building it while
          // nothing else waits (the next keystroke's request shares most of it), and stops at
          // the next piece when something does.
          const prefixOptions: ForwardOptions = { logits: 'last', chunkSize: COMPLETION_CHUNK };
          const stillWanted = () => {
            if (signal?.aborted && this.lock.contended) throw signal.reason ?? new Error('aborted');
          };

          let cache: CompletionBreakdown['cache'] = 'warm';
          let state = this.completion;
          if (state && (state.path !== path || state.version !== this.version)) state = undefined;
          if (state?.parked) {
            this.settleTail();
            this.unparkTail(state.parked);
            state.parked = undefined;
            cache = 'restored';
          }
          let fedTokens = 0;
          if (!state) {
            this.completion = undefined;
            this.settleTail();
            if (start.length > 1) await this.model.forward(this.sequence, start.slice(0, -1), { ...prefixOptions, signal });
            fedTokens += start.length - 1;
            state = { path, version: this.version, restated, fed: [], checkpoints: [{ at: 0, checkpoint: this.sequence.checkpoint() }] };
            cache = 'cold';
          }
          this.completion = state;
          const live = state;
          // Continue from the last checkpoint inside the part this prefix shares (leaving at least one id to feed).
          const shared = Math.min(commonPrefixLength(live.fed, fed), end.length > 0 ? fed.length : fed.length - 1);
          while (live.checkpoints.length > 1 && live.checkpoints[live.checkpoints.length - 1].at > shared) live.checkpoints.pop();
          const from = live.checkpoints[live.checkpoints.length - 1];
          this.sequence.rollback(from.checkpoint);
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
                await this.model.forward(this.sequence, fed.slice(at, stop), prefixOptions);
                fedTokens += stop - at;
                at = stop;
                live.fed = fed.slice(0, at);
                live.checkpoints.push({ at, checkpoint: this.sequence.checkpoint() });
                if (live.checkpoints.length > MAX_CHECKPOINTS) live.checkpoints.splice(1, 1);
              }
            }
            const tail = [...fed.slice(at), ...end];
            fedTokens += tail.length;
            const lineStart = prefix.lastIndexOf('\n') + 1;
            const lineEnd = suffix.indexOf('\n');
            const stopper = inline ? new CompletionStopper({ linePrefix: prefix.slice(lineStart), lineSuffix: lineEnd < 0 ? suffix : suffix.slice(0, lineEnd), maxLines: options.maxLines ?? 8 }) : undefined;
            const stream = generate(this.model, this.tokenizer, tail, {
              sequence: this.sequence,
              maxTokens: options.maxTokens ?? 48,
              stop: options.stop ?? ['\n\n'],
              stopIds: this.format.stopIds,
              signal,
              chunkSize: COMPLETION_CHUNK,
            });
            const promptEnd = this.sequence.length + tail.length;
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
            const decodeSteps = Math.max(0, this.sequence.length - promptEnd);
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
                cache,
                scope: stopper?.scope ?? 'free',
              },
            };
          } finally {
            this.sequence.rollback(live.checkpoints[live.checkpoints.length - 1].checkpoint);
          }
        },
        { priority: 'interactive', signal },
      ),
    );
  }

  /**
   * The part of an inline completion's prefix restated after the header: from a line
   * start about PREFIX_CHARS back, or — while typing goes on in the same file — from
   * where the previous request's restatement started, so its state stays valid.
   */
  private restatePrefix(path: string, prefix: string): string {
    const previous = this.completion?.path === path ? this.completion.restated : undefined;
    if (previous) {
      const at = findRestatement(prefix, previous);
      if (at >= 0 && prefix.length - at <= PREFIX_MAX_CHARS) return prefix.slice(at);
    }
    if (prefix.length <= PREFIX_CHARS) return prefix;
    const lineStart = prefix.indexOf('\n', prefix.length - PREFIX_CHARS - 1) + 1;
    return lineStart > 0 && lineStart < prefix.length ? prefix.slice(lineStart) : prefix.slice(-PREFIX_CHARS);
  }
}

/** A planned patch (see planPatch). */
interface PatchPlan {
  /** The patch header, then the file's new ids [from, from + ids.length − header). */
  ids: number[];
  header: number;
  from: number;
  /** The file's pieces other than the patch, shifted to the new version's offsets. */
  pieces: FilePiece[];
  /** Sequence ranges the edit replaced. */
  dead: [number, number][];
  lineStarts: number[];
  headerTokens: number;
  cost: number;
}

function piecesOf(span: FileSpan): FilePiece[] {
  return span.pieces ?? [{ at: span.start, from: 0, length: span.end - span.start, header: 0 }];
}

/** The sequence ranges a file holds (patch headers included). */
export function rangesOf(span: FileSpan): [number, number][] {
  return piecesOf(span).map((p) => [p.at - p.header, p.at + p.length]);
}

/** The file's own tokens (what the budget counts): its ids, without patch headers. */
function fileTokens(span: FileSpan): number {
  return span.pieces ? span.pieces.reduce((n, p) => n + p.length, 0) : span.end - span.start;
}

/** Live tokens a file holds (patch headers included). */
function spanTokens(span: FileSpan): number {
  return piecesOf(span).reduce((n, p) => n + p.header + p.length, 0);
}

/** The file's ids, in order, from the sequence's tokens. */
function idsOf(span: FileSpan, tokens: readonly number[]): number[] {
  if (!span.pieces) return tokens.slice(span.start, span.end);
  const ids: number[] = [];
  for (const piece of span.pieces) for (let i = 0; i < piece.length; i++) ids.push(tokens[piece.at + i]);
  return ids;
}

/** The line (1-based) holding a token offset into the file's ids. */
function lineOf(span: FileSpan, offset: number): number {
  let lo = 0;
  let hi = span.lineStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (span.lineStarts[mid] <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo + 1;
}

/** Token offsets of each line's first token in a file's ids (header, then content). */
function lineStartsOf(format: PromptFormat, ids: readonly number[], headerTokens: number): number[] {
  const newlines = format.newlinesPerToken(ids.slice(headerTokens));
  const lineStarts = [headerTokens];
  newlines.forEach((n, i) => {
    for (let k = 0; k < n; k++) lineStarts.push(headerTokens + i + 1);
  });
  lineStarts.pop(); // the file's final newline starts no line
  return lineStarts;
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

/** Joins ranges of one file that touch or overlap. */
function mergeAdjacent(ranges: Source[]): Source[] {
  const byPath = new Map<string, Source[]>();
  for (const r of ranges) byPath.set(r.path, [...(byPath.get(r.path) ?? []), r]);
  const merged: Source[] = [];
  for (const list of byPath.values()) {
    list.sort((a, b) => a.startLine - b.startLine);
    for (const r of list) {
      const last = merged[merged.length - 1];
      if (last && last.path === r.path && r.startLine <= last.endLine + 1) {
        last.endLine = Math.max(last.endLine, r.endLine);
        last.weight += r.weight;
      } else merged.push({ ...r });
    }
  }
  return merged;
}
