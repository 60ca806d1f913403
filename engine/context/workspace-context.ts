// The whole workspace as one long model context, kept fresh by appending.
//
// Files sit in the sequence one after another (rarely edited first). An edit
// tombstones the file's old span — its tokens stay cached but are masked out of
// attention and block selection — and appends the new version at the tail, so a
// one-line edit costs the new version's tokens, not the workspace's. When dead
// tokens pass a threshold, a background compaction builds a new sequence from the
// last lightning checkpoint before the first tombstone, re-feeding the live files
// after it (from their cached token ids: no re-tokenization), and swaps it in. Questions and completions run after the
// context and are rolled back afterwards, so they never change it.
import type { SalaModel, SelectionRecord, Sequence } from '../model/sala-model.js';
import type { SequenceCheckpoint } from '../model/sequence.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { generate, type FinishReason } from '../model/generation.js';
import { PromptFormat } from './prompt-format.js';

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
  /** Token offset (from start) of the first token of each line of the file. */
  lineStarts: number[];
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
}

export interface AskResult {
  text: string;
  sources: Source[];
  finishReason: FinishReason;
  promptTokens: number;
}

export interface ContextStats {
  files: number;
  liveTokens: number;
  deadTokens: number;
  sequenceTokens: number;
  excluded: { path: string; tokens: number }[];
  checkpoints: number;
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
  tokens: number[];
  /** Per sparse layer, K and V rows ([n, Hk, hs]) in order, as stored (not joined: 1M tokens is GBs). */
  kv: Map<number, { keys: Float32Array[]; values: Float32Array[] }>;
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

/** Serializes access to the shared sequence: requests queue, none interleave. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async run<T>(work: () => Promise<T>): Promise<T> {
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise((resolve) => (release = resolve));
    await previous;
    try {
      return await work();
    } finally {
      release();
    }
  }
}

/** A sequence with the files laid out in it: the live one, or one a compaction is building. */
interface Track {
  sequence: Sequence;
  spans: Map<string, FileSpan>;
  /** Lightning states at file boundaries, ascending by length. */
  checkpoints: SequenceCheckpoint[];
}

export class WorkspaceContext {
  readonly format: PromptFormat;
  private track: Track;
  /** Files left out for the token budget: their size, and the content it was measured on. */
  private readonly excluded = new Map<string, { tokens: number; contentHash: string }>();
  private compacting?: Promise<void>;
  /** The end of the workspace part of the sequence; requests run after it and roll back to it. */
  private contextEnd: SequenceCheckpoint;
  private readonly lock = new Mutex();
  private readonly budget: number;
  private readonly compactAt: number;
  private readonly checkpointEvery: number;
  /** State of the last completion: after its FIM start (base) and a few tokens short of its prefix end (kept). */
  /** Lowest position rewritten since the last save (compaction re-feeds from a checkpoint). */
  private dirtyFrom = Number.POSITIVE_INFINITY;
  private completionCache?: { path: string; base: SequenceCheckpoint; fed: number[]; kept: SequenceCheckpoint };

  constructor(
    readonly model: SalaModel,
    readonly tokenizer: Tokenizer,
    private readonly options: ContextOptions = {},
  ) {
    this.format = new PromptFormat(tokenizer);
    this.track = { sequence: model.newSequence(), spans: new Map(), checkpoints: [] };
    this.budget = options.budget ?? 1_000_000;
    this.compactAt = options.compactAt ?? 0.25;
    this.checkpointEvery = options.checkpointEvery ?? 16_384;
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
      this.restoreContextEnd();
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
    const sequence = context.sequence;
    for (const id of saved.tokens) sequence.tokens.push(id);
    for (const [layer, kv] of saved.kv) {
      const cache = sequence.sparse.get(layer);
      if (!cache) throw new ContextError(`stored KV for layer ${layer}, which is not a sparse layer of this model`);
      cache.reserve(saved.tokens.length);
      kv.keys.forEach((keys, i) => cache.append(keys, kv.values[i]));
    }
    sequence.rollback(saved.end);
    for (const [a, b] of saved.dead) sequence.markDead(a, b);
    for (const span of saved.spans) context.spans.set(span.path, span);
    for (const { path, tokens, contentHash } of saved.excluded) context.excluded.set(path, { tokens, contentHash });
    context.track.checkpoints = [...saved.checkpoints];
    context.contextEnd = sequence.checkpoint();
    return context;
  }

  stats(): ContextStats {
    const liveTokens = [...this.spans.values()].reduce((n, s) => n + s.end - s.start, 0);
    return {
      files: this.spans.size,
      liveTokens,
      deadTokens: this.sequence.deadTokens,
      sequenceTokens: this.contextEnd.length,
      excluded: [...this.excluded].map(([path, e]) => ({ path, tokens: e.tokens })),
      checkpoints: this.checkpoints.length,
    };
  }

  span(path: string): FileSpan | undefined {
    return this.spans.get(path);
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
      this.restoreContextEnd();
      for (const path of deleted) this.tombstone(path);
      try {
        for (const file of changed) {
          const old = this.spans.get(file.path);
          if (old && old.contentHash === file.contentHash) continue;
          const editCount = old ? old.editCount + 1 : 0;
          this.tombstone(file.path);
          const tokens = await this.append(file, editCount, signal);
          options.onFile?.(file.path, tokens);
        }
      } finally {
        // Files fed before an abort stay in (the context is consistent at file boundaries).
        this.contextEnd = this.sequence.checkpoint();
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
      this.restoreContextEnd();
      const firstDead = this.sequence.deadRanges[0]?.[0];
      if (firstDead === undefined) return undefined;
      const restart = [...this.checkpoints].reverse().find((c) => c.length <= firstDead) ?? this.checkpoints[0];
      const layout = this.layout();
      const refeed = layout.filter((span) => span.start >= restart.length).map((span) => ({ span, ids: this.sequence.tokens.slice(span.start, span.end) }));
      const track: Track = {
        sequence: this.sequence.prefix(restart),
        spans: new Map(layout.filter((span) => span.end <= restart.length).map((span) => [span.path, span])),
        checkpoints: this.checkpoints.filter((c) => c.length <= restart.length),
      };
      this.options.log?.(`context: compacting from token ${restart.length} (${this.sequence.deadTokens} dead, ${refeed.length} files to re-feed)`);
      return { restart, refeed, track };
    });
    if (!plan) return;
    for (const { span, ids } of plan.refeed) {
      await this.feedFile(plan.track, span.path, ids, span.headerTokens, span, signal);
      // Let queued requests run on the live sequence between files.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await this.lock.run(async () => {
      this.restoreContextEnd();
      // Replay what changed while building: new versions appended, deletions tombstoned.
      for (const span of this.layout()) {
        const built = plan.track.spans.get(span.path);
        if (built && built.contentHash === span.contentHash) continue;
        if (built) {
          plan.track.sequence.markDead(built.start, built.end);
          plan.track.spans.delete(span.path);
        }
        await this.feedFile(plan.track, span.path, this.sequence.tokens.slice(span.start, span.end), span.headerTokens, span, signal);
      }
      for (const [path, built] of [...plan.track.spans]) {
        if (this.spans.has(path)) continue;
        plan.track.sequence.markDead(built.start, built.end);
        plan.track.spans.delete(path);
      }
      this.track = plan.track;
      this.dirtyFrom = Math.min(this.dirtyFrom, plan.restart.length);
      this.completionCache = undefined;
      this.contextEnd = this.sequence.checkpoint();
    });
    this.options.onCompacted?.();
  }

  private restoreContextEnd(): void {
    if (this.sequence.length > this.contextEnd.length) this.sequence.rollback(this.contextEnd);
    this.completionCache = undefined;
  }

  private tombstone(path: string): void {
    const span = this.spans.get(path);
    this.excluded.delete(path);
    if (!span) return;
    this.sequence.markDead(span.start, span.end);
    this.spans.delete(path);
    this.completionCache = undefined;
  }

  /** Spans and tombstones tile the workspace part of the sequence, so live = length − dead (no walk over every file). */
  private liveTokens(): number {
    return this.sequence.length - this.sequence.deadTokens;
  }

  /** Appends a file at the tail; returns its token count. */
  private async append(file: ContextFile, editCount: number, signal?: AbortSignal): Promise<number> {
    const { ids, headerTokens } = file.encoded ?? this.format.file(file.path, file.text);
    if (this.liveTokens() + ids.length > this.budget) {
      this.excluded.set(file.path, { tokens: ids.length, contentHash: file.contentHash });
      this.options.log?.(`context: ${file.path} (${ids.length} tokens) does not fit the ${this.budget}-token budget; left out`);
      return ids.length;
    }
    await this.feedFile(this.track, file.path, ids, headerTokens, { contentHash: file.contentHash, mtimeMs: file.mtimeMs, size: file.size, editCount }, signal);
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

  private async feedFile(track: Track, path: string, ids: number[], headerTokens: number, meta: { contentHash: string; mtimeMs: number; size?: number; editCount: number }, signal?: AbortSignal): Promise<void> {
    const { sequence, checkpoints } = track;
    const start = sequence.length;
    const before = sequence.checkpoint();
    const last = checkpoints[checkpoints.length - 1];
    if (start === 0 || start - (last?.length ?? 0) >= this.checkpointEvery) checkpoints.push(before);
    try {
      await this.model.forward(sequence, ids, { logits: 'last', chunkSize: this.options.chunkSize, signal });
    } catch (err) {
      // A half-fed file would leave tokens no span owns: roll back to where it started.
      sequence.rollback(before);
      throw err;
    }
    const newlines = this.format.newlinesPerToken(ids.slice(headerTokens));
    const lineStarts = [headerTokens];
    newlines.forEach((n, i) => {
      for (let k = 0; k < n; k++) lineStarts.push(headerTokens + i + 1);
    });
    lineStarts.pop(); // the file's final newline starts no line
    const { contentHash, mtimeMs, size, editCount } = meta;
    track.spans.set(path, { path, start, end: start + ids.length, headerTokens, lineStarts, contentHash, mtimeMs, size, editCount });
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
    const work = this.lock.run(async () => {
      this.restoreContextEnd();
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
          next = await stream.next();
        }
        result = { text: next.value.text, finishReason: next.value.finishReason, promptTokens: prompt.length, sources: this.sources(hits) };
      } finally {
        this.sequence.rollback(this.contextEnd);
      }
    });
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
        const lineOf = (position: number) => {
          const offset = position - span.start;
          let lo = 0;
          let hi = span.lineStarts.length - 1;
          while (lo < hi) {
            const mid = (lo + hi + 1) >> 1;
            if (span.lineStarts[mid] <= offset) lo = mid;
            else hi = mid - 1;
          }
          return lo + 1;
        };
        const startLine = lineOf(Math.max(from, span.start));
        const endLine = lineOf(Math.min(to, span.end) - 1);
        const key = `${span.path}:${startLine}`;
        const entry = byFileLine.get(key) ?? { path: span.path, startLine, endLine, weight: 0 };
        entry.weight += count / total;
        byFileLine.set(key, entry);
      }
    }
    return mergeAdjacent([...byFileLine.values()]).sort((a, b) => b.weight - a.weight).slice(0, limit);
  }

  /**
   * Inline completion at a cursor: the live text of `path` split into prefix and
   * suffix, after the whole context (fill-in-the-middle when the model has the
   * tokens). The state after the prefix is kept, so a request whose prefix extends
   * the previous one feeds only the new tokens.
   */
  complete(path: string, prefix: string, suffix: string, options: CompleteOptions = {}): Promise<{ text: string; reusedTokens: number; fedTokens: number }> {
    return this.lock.run(async () => {
      const start = this.format.fimStart(path);
      // Tokens fed after the cached base point: the last token of the FIM start, then the prefix.
      const fed = [start[start.length - 1], ...this.format.text(prefix)];
      const cache = this.completionCache?.path === path ? this.completionCache : undefined;
      let base: SequenceCheckpoint;
      let reused = 0;
      if (cache && cache.fed.length < fed.length && startsWith(fed, cache.fed)) {
        this.sequence.rollback(cache.kept);
        base = cache.base;
        reused = cache.fed.length;
      } else if (cache) {
        this.sequence.rollback(cache.base);
        base = cache.base;
      } else {
        this.restoreContextEnd();
        if (start.length > 1) await this.model.forward(this.sequence, start.slice(0, -1), { logits: 'last', signal: options.signal, chunkSize: this.options.chunkSize });
        base = this.sequence.checkpoint();
      }
      // Keep the state a few tokens before the prefix end: typing usually re-tokenizes only the last token or two.
      const keep = Math.min(fed.length - 1, Math.max(reused, fed.length - 4));
      if (keep > reused) await this.model.forward(this.sequence, fed.slice(reused, keep), { logits: 'last', signal: options.signal, chunkSize: this.options.chunkSize });
      this.completionCache = { path, base, fed: fed.slice(0, keep), kept: this.sequence.checkpoint() };
      const tail = [...fed.slice(keep), ...this.format.fimEnd(suffix)];
      try {
        const stream = generate(this.model, this.tokenizer, tail, {
          sequence: this.sequence,
          maxTokens: options.maxTokens ?? 48,
          stop: options.stop ?? ['\n\n'],
          stopIds: this.format.stopIds,
          signal: options.signal,
        });
        let text = '';
        let next = await stream.next();
        while (!next.done) {
          text += next.value;
          options.onDelta?.(next.value);
          next = await stream.next();
        }
        return { text, reusedTokens: reused, fedTokens: keep - reused + tail.length };
      } finally {
        this.sequence.rollback(this.completionCache.kept);
      }
    });
  }
}

function startsWith(ids: readonly number[], prefix: readonly number[]): boolean {
  if (prefix.length > ids.length) return false;
  for (let i = 0; i < prefix.length; i++) if (ids[i] !== prefix[i]) return false;
  return true;
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
