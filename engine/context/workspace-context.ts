// The whole workspace as one long model context, kept fresh by appending.
//
// Files sit in the sequence one after another (rarely edited first). An edit
// tombstones what it replaced — those tokens stay cached but are masked out of
// attention and block selection — and goes in the cheapest exact way: in place from
// a recent checkpoint (edit-in-place.ts), as a patch of the changed lines
// (patch.ts), or as the whole new version at the tail (file-updates.ts). When dead
// tokens pass a threshold, a background compaction rebuilds the sequence without
// them (compaction.ts). Questions (questions.ts) and completions (completion.ts) run
// after the context and are rolled back afterwards, so they never change it. Inline
// completions come first: they go ahead of queued work, long work yields to them
// between steps (tail-parking.ts), and a compaction pauses while requests run.
//
// This class is the façade the rest of the engine uses; the state it works on is a
// ContextCore (context-core.ts), and each part is a module of functions over it.
import type { SalaModel, Sequence } from '../model/sala-model.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { compactTrack, wantsCompaction } from './compaction.js';
import { complete } from './completion.js';
import { ContextCore } from './context-core.js';
import type {
  AskOptions,
  AskResult,
  CompleteOptions,
  CompletionResult,
  ContextFile,
  ContextOptions,
  ContextState,
  ContextStats,
  ExcludedEntry,
  FileSpan,
  RestoredState,
  UpdateOptions,
} from './context-types.js';
import { idsOf, locateIn, spanTokens } from './file-span.js';
import { applyUpdate } from './file-updates.js';
import type { PromptFormat } from './prompt-format.js';
import { askStream, scoreAnswer } from './questions.js';
import { recentBytes } from './recent-checkpoints.js';
import { settleTail } from './tail-parking.js';

export * from './context-types.js';
export { rangesOf } from './file-span.js';

export class WorkspaceContext {
  private readonly core: ContextCore;
  private compacting?: Promise<void>;

  constructor(
    readonly model: SalaModel,
    readonly tokenizer: Tokenizer,
    options: ContextOptions = {},
  ) {
    this.core = new ContextCore(model, tokenizer, options);
  }

  get format(): PromptFormat {
    return this.core.format;
  }

  /** The live sequence (replaced when a compaction finishes). */
  get sequence(): Sequence {
    return this.core.sequence;
  }

  /** Everything a store needs to persist the context, taken under the lock so it is consistent. */
  withState<T>(use: (state: ContextState) => Promise<T>): Promise<T> {
    const core = this.core;
    return core.lock.run(async () => {
      settleTail(core);
      const result = await use({
        length: core.contextEnd.length,
        tokens: core.sequence.tokens,
        sequence: core.sequence,
        spans: core.layout(),
        excluded: [...core.excluded].map(([path, e]) => ({ path, ...e })),
        dead: core.sequence.deadRanges.map(([a, b]) => [a, b]),
        checkpoints: core.checkpoints,
        end: core.contextEnd,
        dirtyFrom: core.dirtyFrom,
      });
      core.dirtyFrom = Number.POSITIVE_INFINITY;
      return result;
    });
  }

  /** Rebuilds a context from persisted state (see ContextStore.load). */
  static restore(model: SalaModel, tokenizer: Tokenizer, options: ContextOptions, saved: RestoredState): WorkspaceContext {
    const context = new WorkspaceContext(model, tokenizer, options);
    const core = context.core;
    const sequence = saved.sequence;
    core.track.sequence = sequence;
    sequence.rollback(saved.end);
    for (const [a, b] of saved.dead) sequence.markDead(a, b);
    for (const span of saved.spans) core.spans.set(span.path, span);
    for (const { path, tokens, contentHash } of saved.excluded) core.excluded.set(path, { tokens, contentHash });
    core.track.checkpoints = [...saved.checkpoints];
    core.contextEnd = sequence.checkpoint();
    return context;
  }

  stats(): ContextStats {
    const core = this.core;
    const liveTokens = [...core.spans.values()].reduce((n, s) => n + spanTokens(s), 0);
    return {
      files: core.spans.size,
      liveTokens,
      deadTokens: core.sequence.deadTokens,
      sequenceTokens: core.contextEnd.length,
      excluded: [...core.excluded].map(([path, e]) => ({ path, tokens: e.tokens })),
      checkpoints: core.checkpoints.length,
      recentCheckpointBytes: recentBytes(core),
      encodedTokens: core.encodedTokens,
    };
  }

  span(path: string): FileSpan | undefined {
    return this.core.spans.get(path);
  }

  /** The file's ids as they are in the context now (header, then content): one slice, or a patched file's pieces in order. */
  fileIds(path: string): number[] | undefined {
    const span = this.core.spans.get(path);
    return span && idsOf(span, this.core.sequence.tokens);
  }

  /** The file and line (1-based) a live position of the workspace part belongs to; undefined for a tombstone or a patch header. */
  locate(position: number): { path: string; line: number } | undefined {
    return locateIn(this.core.spans.values(), position);
  }

  /** Spans in context order. */
  layout(): FileSpan[] {
    return this.core.layout();
  }

  /**
   * Adds or replaces files and removes deleted ones, as one update: replaced and
   * deleted spans are tombstoned, new versions appended in the given order
   * (callers pass rarely-changing files first). Unchanged files are skipped.
   */
  update(changed: readonly ContextFile[], deleted: readonly string[] = [], options: UpdateOptions = {}): Promise<void> {
    const core = this.core;
    return core.lock.run(async () => {
      await applyUpdate(core, changed, deleted, options);
      if (wantsCompaction(core)) {
        // In the background: questions and edits go on meanwhile.
        this.compact().catch((err: unknown) => core.log(`context: compaction failed: ${err instanceof Error ? err.message : String(err)}`));
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
    this.compacting ??= compactTrack(this.core, signal).finally(() => (this.compacting = undefined));
    return this.compacting;
  }

  /** Files left out for the budget, with their token counts. */
  excludedFiles(): ReadonlyMap<string, { tokens: number; contentHash: string }> {
    return this.core.excluded;
  }

  /** Records files a layout plan left out for the budget (and forgets `forget`). */
  setExcluded(entries: readonly ExcludedEntry[], forget: readonly string[] = []): void {
    const core = this.core;
    for (const path of forget) core.excluded.delete(path);
    for (const { path, tokens, contentHash } of entries) if (!core.spans.has(path)) core.excluded.set(path, { tokens, contentHash });
  }

  /**
   * Streams an answer to `question` generated after the whole context; returns
   * the sources: the files and lines whose blocks the sparse layers selected
   * most while reading the question and writing the answer.
   */
  ask(question: string, options: AskOptions = {}): AsyncGenerator<string, AskResult> {
    return askStream(this.core, question, options);
  }

  /**
   * How likely the model finds `answer` (then the end of the turn) as the reply to
   * `question` after the whole context: the log-probability in nats and the tokens
   * scored. A graded measure where exact answers are rare (a small model, a long
   * context); the context is unchanged afterwards.
   */
  score(question: string, answer: string, signal?: AbortSignal): Promise<{ logProb: number; tokens: number }> {
    return scoreAnswer(this.core, question, answer, signal);
  }

  /**
   * Inline completion at a cursor: the live text of `path` split into prefix and
   * suffix, after the whole context (fill-in-the-middle when the model has the
   * tokens). The state after the restated prefix is kept, so a request that shares
   * the start of the previous one's prefix feeds only what differs. It goes ahead
   * of queued work and waits at most one step of a question or a file being encoded.
   */
  complete(path: string, prefix: string, suffix: string, options: CompleteOptions = {}): Promise<CompletionResult> {
    return complete(this.core, path, prefix, suffix, options);
  }
}
