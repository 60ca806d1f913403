// The shapes a workspace context takes and hands out: the files it is given, where
// each sits in the sequence, what questions and completions return, and what a
// store saves and restores. No behaviour here (see workspace-context.ts).
import type { Sequence } from '../model/sala-model.js';
import type { SequenceCheckpoint } from '../model/sequence.js';
import type { CodeSelection, FinishReason, Source } from '../vocabulary.js';
import type { CompletionScope } from './completion-scope.js';
import type { AnswerLocation } from './answer-locations.js';

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
  selection?: CodeSelection;
  maxTokens?: number;
  temperature?: number;
  signal?: AbortSignal;
  /**
   * Lookups ("Where is `X` defined / used?") answered with a workspace line that holds X,
   * chosen by the model (grounded-lookup.ts). Default true; false lets the model write
   * any text (what it does unaided).
   */
  grounded?: boolean;
  /**
   * Blocks each query of the question and its answer selects beyond the local window in the
   * sparse layers. Default QUESTION_TOPK or the model's topk, whichever is more (questions.ts); the model's
   * own topk reads as the prefill does.
   */
  topk?: number;
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
  /**
   * How an inline completion asks the model (default 'auto', the engine's choice; see
   * completion.ts): 'continued' goes on from the cursor, 'fim' fills in the middle before
   * the restated suffix. The choice is the caller's to compare forms on one model.
   */
  form?: InlineForm;
}

export type InlineForm = 'auto' | 'continued' | 'fim';

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
  /** 'continued': the prefix went on from the cursor, its last token healed (no code after the cursor on its line); 'fim': fill-in-the-middle. */
  form: 'continued' | 'fim';
  /** The prefix state: built from the file header ('cold'), continued ('warm'), or set back after other work had the context ('restored'). */
  cache: 'cold' | 'warm' | 'restored';
  scope: CompletionScope | 'free';
}

export interface AskResult {
  text: string;
  /** The places the answer points to, best first (a copied workspace line resolved to path:line; docs/workspace-questions.md). */
  locations: AnswerLocation[];
  sources: Source[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Per block of the workspace part, how often a query picked it beyond the forced ones (what `sources` is made from). */
  blockHits: [number, number][];
  /** The layout those blocks were counted over (spans are replaced, never changed, so this stays as it was). */
  layout: FileSpan[];
  /** A grounded lookup: what it asked for and how many workspace lines the answer could choose from. */
  lookup?: { name: string; kind: 'defined' | 'used'; candidateLines: number };
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
