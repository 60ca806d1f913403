// The extension ↔ engine protocol: JSON-RPC 2.0 over the engine's stdio
// (vscode-jsonrpc framing). Every message is listed here once, as
// method → [params, result]; both sides import this file, so a change that
// breaks one side does not compile. Inbound params are validated at the
// boundary (validate.ts), typed inside. Requests honour $/cancelRequest at token
// granularity. Paths are workspace-relative with '/' separators; the engine
// refuses any that leave the workspace.

import type { AnswerLocation, AnswerOverlay, CodeSelection, FinishReason, Source, WorkspaceMap } from '../vocabulary.js';

export const PROTOCOL_VERSION = 1;

export type DevicePreference = 'cpu' | 'webgpu' | 'cuda' | 'auto';

export interface InitializeParams {
  protocolVersion: number;
  /** Absolute path of the workspace folder to hold as context. */
  workspaceRoot: string;
  /**
   * Where the persistent index lives (the extension passes its globalStorageUri path).
   * The engine keeps each workspace's index in its own subfolder (`<name>-<hash>`) of it.
   */
  storeDir: string;
  /** Model directory; absent = the shipped default model. */
  modelDir?: string;
  device?: DevicePreference;
  /** Globs in VS Code files.exclude style. */
  exclude?: string[];
  /** Live-token budget of the context (default 1,000,000). */
  tokenBudget?: number;
}

export interface InitializeResult {
  protocolVersion: number;
  engineVersion: string;
  model: { dir: string; name: string; parameters: number; vocabSize: number };
  device: { kind: 'cpu' | 'webgpu' | 'cuda'; reason: string };
}

export type {
  AnswerLocation,
  AnswerOverlay,
  CodeSelection,
  ExcludeReason,
  FileState,
  FinishReason,
  MapCell,
  OverlayFile,
  OverlayRange,
  Source,
  WorkspaceMap,
} from '../vocabulary.js';

export interface AskParams {
  /** Client-chosen id echoed in the answer/delta notifications. */
  requestId: string;
  question: string;
  selection?: CodeSelection;
  maxTokens?: number;
  temperature?: number;
}

export interface AskResult {
  text: string;
  /** The places the answer points to, best first (docs/workspace-questions.md). */
  locations: AnswerLocation[];
  sources: Source[];
  finishReason: FinishReason;
  promptTokens: number;
}

export interface CompleteParams {
  path: string;
  prefix: string;
  suffix: string;
  maxTokens?: number;
  /** Stop strings (e.g. a blank line for single-block completions). */
  stop?: string[];
}

export interface CompleteResult {
  text: string;
  /** Prefix tokens whose state was reused from the previous request. */
  reusedTokens: number;
  fedTokens: number;
  latencyMs: number;
}

export interface EngineStatus {
  state: 'starting' | 'indexing' | 'ready' | 'paused' | 'error';
  files: number;
  liveTokens: number;
  deadTokens: number;
  tokenBudget: number;
  /** Encoding progress of the current indexing run, 0..1. */
  progress?: number;
  tokensPerSecond?: number;
  device: 'cpu' | 'webgpu' | 'cuda';
  excludedFiles: number;
  lastRequest?: { kind: 'ask' | 'complete'; latencyMs: number; tokens: number };
  error?: string;
}

/**
 * Requests: method → [params, result].
 * - initialize resolves once the model is loaded; the workspace then opens in the
 *   background (panorama/status notifications: 'indexing' with progress → 'ready').
 *   ask/complete before 'ready' fail with EngineErrorCodes.notReady.
 * - reindex and setPaused answer at once with the new status; progress follows as notifications.
 * - shutdown saves the index, answers null, and the process exits 0.
 */
export interface Requests {
  initialize: [InitializeParams, InitializeResult];
  ask: [AskParams, AskResult];
  complete: [CompleteParams, CompleteResult];
  status: [Record<string, never>, EngineStatus];
  reindex: [Record<string, never>, EngineStatus];
  setPaused: [{ paused: boolean }, EngineStatus];
  shutdown: [Record<string, never>, null];
  /** The workspace as a treemap's cells (files, tokens, states), at most maxCells (default 3000); answers while indexing too. */
  'workspace/map': [{ maxCells?: number }, WorkspaceMap];
  /** What the sparse layers read for an answer (by its ask's requestId; the last 32 are kept); -32602 for one not kept. */
  'answer/overlay': [{ requestId: string }, AnswerOverlay];
}

/** Notifications engine → extension: method → params. */
export interface EngineNotifications {
  'panorama/status': EngineStatus;
  'panorama/askDelta': { requestId: string; text: string };
  'panorama/log': { level: 'trace' | 'debug' | 'info' | 'warn' | 'error'; message: string };
}

/**
 * Every JSON-RPC error code the engine answers with, defined here once: the engine
 * throws them (rpc-server.ts) and the extension's client turns them into kinds of
 * error (extension/engine/client.ts). The first four are JSON-RPC 2.0's own.
 */
export const EngineErrorCodes = {
  /** The request is not one this protocol lists. */
  methodNotFound: -32601,
  /** The request cannot be served now (a second initialize, a request while shutting down). */
  invalidRequest: -32600,
  /** A parameter is wrong: the message and `data.field` name it (a path outside the workspace too). */
  invalidParams: -32602,
  /** The engine failed; the message says how. */
  internalError: -32603,
  /** A request other than initialize or shutdown arrived before initialize succeeded. */
  notInitialized: -32002,
  /** The workspace is not open yet (indexing, paused before the first open, or failed); retry once status is 'ready'. */
  notReady: -32003,
  /** A complete() was cancelled ($/cancelRequest); ask() instead resolves with finishReason 'cancelled'. */
  requestCancelled: -32800,
} as const;

export type RequestMethod = keyof Requests;
export type RequestParams<M extends RequestMethod> = Requests[M][0];
export type RequestResult<M extends RequestMethod> = Requests[M][1];
