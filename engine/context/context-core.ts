// The state every part of a workspace context works on: the track (the live
// sequence with the files laid out in it), the context end requests roll back to,
// the version that says when states computed after it are stale, the files left
// out for the budget, and the lock and foreground count that order the work. The
// parts (feeding, edits, compaction, questions, completions) are functions over it;
// WorkspaceContext is their façade.
import type { SalaModel, Sequence } from '../model/sala-model.js';
import type { SequenceCheckpoint } from '../model/sequence.js';
import type { Tokenizer } from '../model/tokenizer.js';
import type { ContextOptions, FileSpan } from './context-types.js';
import { rangesOf } from './file-span.js';
import { Foreground } from './foreground.js';
import { PromptFormat } from './prompt-format.js';
import { RequestLock } from './request-lock.js';

/** Long feeds (files, compaction) run in forward calls of this many tokens: a completion waits at most one (~0.1 s on 2 cores at 100K tokens). */
export const PIECE_TOKENS = 64;
/** Through a resident decoder (a GPU) pieces grow to about this long, up to MAX_PIECE_TOKENS: a 64-token piece there is mostly fixed cost. */
export const PIECE_SECONDS = 0.1;
export const MAX_PIECE_TOKENS = 4096;
/** Default host memory for recently fed files' checkpoints, the oldest files' dropped first (a 9B model's states are ~50 MB a checkpoint: they then spread out). */
const RECENT_CHECKPOINT_BYTES = 64 * 1024 * 1024;
/** An edit is patched in when the patch feeds at most this share of the file's tokens (else the whole new version goes last). */
const PATCH_SHARE = 0.5;

/** A sequence with the files laid out in it: the live one, or one a compaction is building. */
export interface Track {
  sequence: Sequence;
  spans: Map<string, FileSpan>;
  /** Lightning states at file boundaries, ascending by length. */
  checkpoints: SequenceCheckpoint[];
  /**
   * The files fed last, in order, each with checkpoints along it (the first at its
   * start): an edit to one of them can roll back to the checkpoint before its first
   * changed token and re-feed from there, in place (see edit-in-place.ts).
   */
  recent: RecentFile[];
}

export interface RecentFile {
  path: string;
  start: number;
  checkpoints: SequenceCheckpoint[];
}

/** Whatever followed the context end (a request's prompt and output), set aside so the sequence can serve other work meanwhile. */
export interface ParkedTail {
  version: number;
  tokens: number[];
  kv: Map<number, { keys: Float32Array; values: Float32Array }>;
  end: SequenceCheckpoint;
}

/** The last completion's state after the context: the file header, then the restated prefix, checkpointed along the way. */
export interface CompletionState {
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

export class ContextCore {
  readonly format: PromptFormat;
  track: Track;
  /** Files left out for the token budget: their size, and the content it was measured on. */
  readonly excluded = new Map<string, { tokens: number; contentHash: string }>();
  /** The end of the workspace part of the sequence; requests run after it and roll back to it. */
  contextEnd: SequenceCheckpoint;
  /** Bumped whenever the workspace part changes (states computed after it are then stale). */
  version = 0;
  readonly lock = new RequestLock();
  /** Questions and completions waiting or running: a compaction pauses meanwhile. */
  readonly foreground = new Foreground();
  readonly budget: number;
  readonly compactAt: number;
  readonly checkpointEvery: number;
  readonly recentBudget: number;
  readonly patchShare: number;
  /** Lowest position rewritten since the last save (compaction re-feeds from a checkpoint). */
  dirtyFrom = Number.POSITIVE_INFINITY;
  completion?: CompletionState;
  /** Workspace tokens fed through the model since this context was created or restored. */
  encodedTokens = 0;

  constructor(
    readonly model: SalaModel,
    readonly tokenizer: Tokenizer,
    readonly options: ContextOptions,
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

  get spans(): Map<string, FileSpan> {
    return this.track.spans;
  }

  get checkpoints(): SequenceCheckpoint[] {
    return this.track.checkpoints;
  }

  /** Spans in context order. */
  layout(): FileSpan[] {
    return [...this.spans.values()].sort((a, b) => a.start - b.start);
  }

  /** Takes a file out of the live sequence: its ranges become dead tokens. */
  tombstone(path: string): void {
    const span = this.spans.get(path);
    this.excluded.delete(path);
    if (!span) return;
    for (const [a, b] of rangesOf(span)) this.sequence.markDead(a, b);
    this.spans.delete(path);
    this.version++;
  }

  /**
   * What the budget counts: every file's own tokens (as the layout plan counts them),
   * not patch headers — else each patch would grow a full context by its header until
   * edits could only append whole files. Spans and tombstones tile the workspace part
   * of the sequence, so live = length − dead (no walk over every file).
   */
  budgetTokens(): number {
    let headers = 0;
    for (const span of this.spans.values()) for (const piece of span.pieces ?? []) headers += piece.header;
    return this.sequence.length - this.sequence.deadTokens - headers;
  }

  /** Bytes of one checkpoint (every lightning layer's state). */
  stateBytes(): number {
    return [...this.sequence.lightning.values()].reduce((n, s) => n + s.byteLength, 0);
  }

  log(message: string): void {
    this.options.log?.(message);
  }
}
