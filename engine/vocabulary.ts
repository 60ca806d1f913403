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
