// The chat view's message protocol: every message between the webview and the
// extension host, as discriminated unions, imported by both sides. Messages from
// the webview are untrusted input: parseWebviewMessage validates shape and
// bounds at the boundary; the host then resolves paths inside the workspace.
// No DOM and no vscode import here, so node:test can exercise it directly.

import type { AnswerLocation, FinishReason, Source } from '../engine/vocabulary.js';

export type { AnswerLocation, Source };

/** A removable piece of editor context shown above the input (selection or file). */
export interface ContextChip {
  id: string;
  kind: 'selection' | 'file';
  /** Workspace-relative, '/' separators. */
  path: string;
  /** 1-based, inclusive; absent for a whole file. */
  startLine?: number;
  endLine?: number;
  label: string;
  /** The selection was longer than the engine accepts and was cut. */
  truncated?: boolean;
}

/** How a turn ended: as the generation did, or with an error (shown in the turn). */
export type TurnEnd = FinishReason | 'error';

export interface ChatTurn {
  requestId: string;
  question: string;
  context: ContextChip[];
  answer: string;
  /** The places the answer points to (a copied line resolved to path:line), best first. */
  locations?: AnswerLocation[];
  sources: Source[];
  /** Absent while the answer is streaming. */
  finishReason?: TurnEnd;
  error?: string;
}

/** Webview → extension. */
export type WebviewMessage =
  | { type: 'ready' }
  | { type: 'ask'; question: string; context: ContextChip[] }
  | { type: 'stop'; requestId: string }
  | { type: 'openSource'; path: string; line: number }
  | { type: 'copyCode'; code: string }
  | { type: 'insertCode'; code: string }
  | { type: 'removeChip'; id: string }
  | { type: 'clearHistory' }
  /** "Show what it read": the workspace map with this answer's overlay. */
  | { type: 'showRead'; requestId: string };

/** Extension → webview. */
export type HostMessage =
  | { type: 'history'; turns: ChatTurn[] }
  | { type: 'chips'; chips: ContextChip[] }
  | { type: 'turnStarted'; turn: ChatTurn }
  | { type: 'answerDelta'; requestId: string; text: string }
  | { type: 'turnFinished'; turn: ChatTurn }
  | { type: 'engine'; ready: boolean; label: string }
  | { type: 'notice'; text: string };

export const LIMITS = {
  questionChars: 8_000,
  codeChars: 200_000,
  pathChars: 1_024,
  chips: 16,
  idChars: 128,
} as const;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isString(value: unknown, max: number): value is string {
  return typeof value === 'string' && value.length <= max;
}

function isLine(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 10_000_000;
}

/** A workspace-relative path: no absolute paths, drive letters, backslashes, NULs or '..' segments. */
export function isRelativeWorkspacePath(value: unknown): value is string {
  if (!isString(value, LIMITS.pathChars) || value.length === 0) return false;
  if (value.startsWith('/') || value.includes('\\') || value.includes('\0') || /^[a-zA-Z]:/.test(value)) return false;
  return value.split('/').every((segment) => segment !== '..' && segment !== '');
}

function parseChip(value: unknown): ContextChip | undefined {
  if (!isObject(value)) return undefined;
  const { id, kind, path, startLine, endLine, label, truncated } = value;
  if (!isString(id, LIMITS.idChars) || (kind !== 'selection' && kind !== 'file')) return undefined;
  if (!isRelativeWorkspacePath(path) || !isString(label, LIMITS.pathChars)) return undefined;
  if (kind === 'selection' && !(isLine(startLine) && isLine(endLine) && startLine <= endLine)) return undefined;
  const chip: ContextChip = { id, kind, path, label };
  if (kind === 'selection' && isLine(startLine) && isLine(endLine)) {
    chip.startLine = startLine;
    chip.endLine = endLine;
  }
  if (truncated === true) chip.truncated = true;
  return chip;
}

/** Validates an inbound webview message; undefined for anything unknown or malformed. */
export function parseWebviewMessage(raw: unknown): WebviewMessage | undefined {
  if (!isObject(raw)) return undefined;
  switch (raw.type) {
    case 'ready':
    case 'clearHistory':
      return { type: raw.type };
    case 'ask': {
      if (!isString(raw.question, LIMITS.questionChars) || raw.question.trim() === '') return undefined;
      if (!Array.isArray(raw.context) || raw.context.length > LIMITS.chips) return undefined;
      const context = raw.context.map(parseChip);
      if (context.some((chip) => chip === undefined)) return undefined;
      return { type: 'ask', question: raw.question, context: context.filter((chip) => chip !== undefined) };
    }
    case 'showRead':
      if (!isString(raw.requestId, LIMITS.idChars) || raw.requestId === '') return undefined;
      return { type: 'showRead', requestId: raw.requestId };
    case 'stop':
    case 'removeChip': {
      const id = raw.type === 'stop' ? raw.requestId : raw.id;
      if (!isString(id, LIMITS.idChars)) return undefined;
      return raw.type === 'stop' ? { type: 'stop', requestId: id } : { type: 'removeChip', id };
    }
    case 'openSource':
      if (!isRelativeWorkspacePath(raw.path) || !isLine(raw.line)) return undefined;
      return { type: 'openSource', path: raw.path, line: raw.line };
    case 'copyCode':
    case 'insertCode':
      if (!isString(raw.code, LIMITS.codeChars)) return undefined;
      return { type: raw.type, code: raw.code };
    default:
      return undefined;
  }
}
