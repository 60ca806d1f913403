// The words every part of Panorama shares, defined once: the engine's layers, the
// protocol (server/protocol.ts), the extension and the webview import them from
// here. Plain types and constants, no imports, so any layer may use this file
// (eslint.config.mjs declares it shared).

/** Why a generation ended: an end-of-turn token, a stop string, the token limit, or a cancel. */
export type FinishReason = 'eos' | 'stop' | 'length' | 'cancelled';

/** Lines of a file that an answer drew on (see engine/context/sources.ts). */
export interface Source {
  path: string;
  /** 1-based, inclusive. */
  startLine: number;
  endLine: number;
  /** Share of the answer's selected (non-forced) blocks that fell in this range. */
  weight: number;
}

/** A place an answer points to: the workspace line it copied, resolved (see engine/context/answer-locations.ts). */
export interface AnswerLocation {
  path: string;
  /** 1-based line in the file as it is now. */
  line: number;
  /** The line as it is in the file, leading whitespace dropped. */
  text: string;
}

/** Code the user selected, sent along with a question. */
export interface CodeSelection {
  /** Workspace-relative, '/' separators. */
  path: string;
  text: string;
  /** The selection's first line, 1-based. */
  startLine?: number;
}

/**
 * What starts a workspace file in a context whose tokenizer has no `<|file|>` token
 * (a general model such as MiniCPM-SALA): the header, then the path and a newline.
 * The engine's PromptFormat and the remote backend's prefix both write it.
 */
export const FILE_HEADER = '\n### file: ';

// The workspace map (engine/context/workspace-map.ts builds it, webview/map/ draws it).

export type FileState = 'encoded' | 'patched' | 'encoding' | 'waiting' | 'excluded';

/** The order of MapCell.states (a folder's or aggregate's area per state). */
export const FILE_STATES: readonly FileState[] = ['encoded', 'patched', 'encoding', 'waiting', 'excluded'];

/** Why a file is not in the context: the scan's reasons, and the token budget. */
export type ExcludeReason = 'ignored' | 'binary' | 'too-large' | 'generated' | 'minified' | 'symlink-loop' | 'outside-workspace' | 'unreadable' | 'over-budget';

/** One rectangle of the treemap, in preorder (a folder before its children). */
export interface MapCell {
  /** Index of the folder cell holding this one; -1 for the root. */
  parent: number;
  /** 'rest': a folder's small files (and folders) drawn as one cell beyond the cap. */
  kind: 'folder' | 'file' | 'rest';
  /** Workspace-relative ('' = the root); for 'rest' the folder's path. */
  path: string;
  /** Area: tokens in (or meant for) the context; a file left out by the scan has a nominal area. */
  size: number;
  /** Tokens in the context now (live, patch headers included). */
  tokens: number;
  files: number;
  /** The file's state; for folders and aggregates the state with the largest area. */
  state: FileState;
  /** Area per state in FILE_STATES order (folders and aggregates only). */
  states?: number[];
  reason?: ExcludeReason;
  /** Said on hover, e.g. "3.2 MB > limit 1 MB" or "ignored by .gitignore: node_modules/". */
  detail?: string;
  /** Tokens of a patched file that sit in patches at the tail. */
  patchedTokens?: number;
  /** Tombstoned tokens between the file's pieces (what its patches replaced). */
  deadTokens?: number;
}

export interface WorkspaceMap {
  cells: MapCell[];
  totals: {
    files: number;
    /** Live tokens of the context. */
    tokens: number;
    /** Tombstoned tokens in the sequence (dropped at the next compaction). */
    deadTokens: number;
    budget: number;
    /** Files per state, in FILE_STATES order. */
    filesByState: number[];
  };
  /** Cells in the tree (≤ the cap asked for); `aggregated` files went into 'rest' cells. */
  aggregated: number;
  /** 'scanning': the file list is not known yet. */
  phase: 'scanning' | 'indexing' | 'ready';
}

/** A line range of one file and the share of the answer's hits on it. */
export interface OverlayRange {
  startLine: number;
  endLine: number;
  weight: number;
}

export interface OverlayFile {
  path: string;
  /** Lines in the file (for drawing its strip). */
  lines: number;
  /** Sum of its ranges' weights (all of them, before the bound). */
  weight: number;
  /** Block by block (not merged, so the heat varies along the file): the heaviest MAX_RANGES_PER_FILE, in line order. */
  ranges: OverlayRange[];
}

export interface AnswerOverlay {
  requestId: string;
  /** Non-forced block selections counted while reading the question and writing the answer. */
  hits: number;
  /** Blocks selected that lay in no file's live tokens (tombstones, patch headers): their share of the hits. */
  unmapped: number;
  /** The heaviest places (merged ranges), heaviest first: `sources` is their first five. */
  places: Source[];
  /** The files hit, heaviest first (at most MAX_OVERLAY_FILES). */
  files: OverlayFile[];
  /** Weight of the files beyond that bound. */
  otherWeight: number;
}
