// Inbound messages are untrusted: every field is checked here, at the boundary,
// with hand-written guards, and the error names the field. Inside, types hold.
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { MAX_CELLS, MIN_CELLS } from '../context/workspace-map.js';
import type { AskParams, CompleteParams, DevicePreference, InitializeParams } from './protocol.js';

/** A request whose params are wrong: carries the field's name for the error message. */
export class InvalidParamsError extends Error {
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`invalid params: ${field} ${problem}`);
  }
}

/** A path that is absolute, climbs with `..`, or resolves outside the workspace. */
export class PathOutsideWorkspaceError extends InvalidParamsError {}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function requireRecord(value: unknown, field: string): Record<string, unknown> {
  // JSON-RPC allows params to be omitted; an absent object is an empty one.
  if (value === undefined || value === null) return {};
  if (!isRecord(value)) throw new InvalidParamsError(field, 'must be an object');
  return value;
}

export function requireString(value: unknown, field: string, options: { nonEmpty?: boolean; maxLength?: number } = {}): string {
  if (typeof value !== 'string') throw new InvalidParamsError(field, `must be a string, got ${describe(value)}`);
  if (options.nonEmpty && value.trim() === '') throw new InvalidParamsError(field, 'must not be empty');
  if (options.maxLength !== undefined && value.length > options.maxLength)
    throw new InvalidParamsError(field, `must be at most ${options.maxLength} characters, got ${value.length}`);
  return value;
}

export function optionalString(value: unknown, field: string, options: { nonEmpty?: boolean; maxLength?: number } = {}): string | undefined {
  return value === undefined ? undefined : requireString(value, field, options);
}

export function optionalInteger(value: unknown, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new InvalidParamsError(field, `must be an integer, got ${describe(value)}`);
  if (value < min || value > max) throw new InvalidParamsError(field, `must be in [${min}, ${max}], got ${value}`);
  return value;
}

export function optionalNumber(value: unknown, field: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new InvalidParamsError(field, `must be a finite number, got ${describe(value)}`);
  if (value < min || value > max) throw new InvalidParamsError(field, `must be in [${min}, ${max}], got ${value}`);
  return value;
}

export function optionalBoolean(value: unknown, field: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw new InvalidParamsError(field, `must be a boolean, got ${describe(value)}`);
  return value;
}

export function optionalStringArray(value: unknown, field: string, maxItems = 256, maxLength = 4096): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new InvalidParamsError(field, `must be an array of strings, got ${describe(value)}`);
  if (value.length > maxItems) throw new InvalidParamsError(field, `must have at most ${maxItems} items, got ${value.length}`);
  return value.map((item, i) => requireString(item, `${field}[${i}]`, { maxLength }));
}

/** A short, safe description of a value's type for error messages (never echoes the value). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}

/** Limits on request sizes: large enough for real use, small enough that a bad client cannot exhaust memory. */
export const LIMITS = {
  questionChars: 200_000,
  selectionChars: 1_000_000,
  prefixChars: 1_000_000,
  pathChars: 4096,
  maxTokens: 8192,
  stopStrings: 16,
} as const;

const DEVICES: readonly DevicePreference[] = ['cpu', 'webgpu', 'cuda', 'auto'];

function isDevicePreference(value: unknown): value is DevicePreference {
  return typeof value === 'string' && DEVICES.some((d) => d === value);
}

export function validateInitialize(raw: unknown): InitializeParams {
  const params = requireRecord(raw, 'params');
  const protocolVersion = optionalInteger(params.protocolVersion, 'protocolVersion', 0);
  if (protocolVersion === undefined) throw new InvalidParamsError('protocolVersion', 'is required');
  const workspaceRoot = requireString(params.workspaceRoot, 'workspaceRoot', { nonEmpty: true, maxLength: LIMITS.pathChars });
  if (!path.isAbsolute(workspaceRoot)) throw new InvalidParamsError('workspaceRoot', 'must be an absolute path');
  const storeDir = requireString(params.storeDir, 'storeDir', { nonEmpty: true, maxLength: LIMITS.pathChars });
  if (!path.isAbsolute(storeDir)) throw new InvalidParamsError('storeDir', 'must be an absolute path');
  const modelDir = optionalString(params.modelDir, 'modelDir', { nonEmpty: true, maxLength: LIMITS.pathChars });
  if (modelDir !== undefined && !path.isAbsolute(modelDir)) throw new InvalidParamsError('modelDir', 'must be an absolute path');
  if (params.device !== undefined && !isDevicePreference(params.device)) throw new InvalidParamsError('device', `must be one of ${DEVICES.join(', ')}`);
  const device = isDevicePreference(params.device) ? params.device : undefined;
  const exclude = optionalStringArray(params.exclude, 'exclude');
  const tokenBudget = optionalInteger(params.tokenBudget, 'tokenBudget', 1);
  return { protocolVersion, workspaceRoot, storeDir, modelDir, device, exclude, tokenBudget };
}

export function validateAsk(raw: unknown): AskParams {
  const params = requireRecord(raw, 'params');
  const requestId = requireString(params.requestId, 'requestId', { nonEmpty: true, maxLength: 256 });
  const question = requireString(params.question, 'question', { nonEmpty: true, maxLength: LIMITS.questionChars });
  let selection: AskParams['selection'];
  if (params.selection !== undefined) {
    if (!isRecord(params.selection)) throw new InvalidParamsError('selection', 'must be an object');
    selection = {
      path: requireString(params.selection.path, 'selection.path', { nonEmpty: true, maxLength: LIMITS.pathChars }),
      text: requireString(params.selection.text, 'selection.text', { maxLength: LIMITS.selectionChars }),
      startLine: optionalInteger(params.selection.startLine, 'selection.startLine', 0),
    };
  }
  return {
    requestId,
    question,
    selection,
    maxTokens: optionalInteger(params.maxTokens, 'maxTokens', 1, LIMITS.maxTokens),
    temperature: optionalNumber(params.temperature, 'temperature', 0, 2),
  };
}

export function validateComplete(raw: unknown): CompleteParams {
  const params = requireRecord(raw, 'params');
  return {
    path: requireString(params.path, 'path', { nonEmpty: true, maxLength: LIMITS.pathChars }),
    prefix: requireString(params.prefix, 'prefix', { maxLength: LIMITS.prefixChars }),
    suffix: requireString(params.suffix, 'suffix', { maxLength: LIMITS.prefixChars }),
    maxTokens: optionalInteger(params.maxTokens, 'maxTokens', 1, LIMITS.maxTokens),
    stop: optionalStringArray(params.stop, 'stop', LIMITS.stopStrings, 256),
  };
}

export function validateSetPaused(raw: unknown): { paused: boolean } {
  const params = requireRecord(raw, 'params');
  const paused = optionalBoolean(params.paused, 'paused');
  if (paused === undefined) throw new InvalidParamsError('paused', 'is required');
  return { paused };
}

export function validateWorkspaceMap(raw: unknown): { maxCells?: number } {
  const params = requireRecord(raw, 'params');
  return { maxCells: optionalInteger(params.maxCells, 'maxCells', MIN_CELLS, MAX_CELLS) };
}

export function validateAnswerOverlay(raw: unknown): { requestId: string } {
  const params = requireRecord(raw, 'params');
  return { requestId: requireString(params.requestId, 'requestId', { nonEmpty: true, maxLength: 256 }) };
}

/** For requests without params: anything but an object (or nothing) is a client bug worth reporting. */
export function validateEmpty(raw: unknown): Record<string, never> {
  requireRecord(raw, 'params');
  return {};
}

function isInside(root: string, candidate: string): boolean {
  const relative = path.relative(root, candidate);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/**
 * Checks a workspace-relative path (as the protocol sends it, '/'-separated) and
 * returns it normalized. Refuses absolute paths, `..` segments, and paths whose
 * nearest existing ancestor resolves (through symlinks) outside the workspace.
 * A path that does not exist yet (an unsaved new file) is fine if its folder is inside.
 */
export async function resolveWorkspacePath(root: string, relative: string, field: string): Promise<string> {
  if (relative.includes('\0')) throw new PathOutsideWorkspaceError(field, 'must not contain NUL characters');
  if (path.posix.isAbsolute(relative) || path.win32.isAbsolute(relative)) throw new PathOutsideWorkspaceError(field, 'must be relative to the workspace root, not absolute');
  const segments = relative.split(/[\\/]/);
  if (segments.includes('..')) throw new PathOutsideWorkspaceError(field, "must not contain '..' segments");
  const normalized = segments.filter((s) => s !== '' && s !== '.').join('/');
  if (normalized === '') throw new InvalidParamsError(field, 'must name a file in the workspace');
  const realRoot = await realpath(root);
  let probe = path.join(realRoot, ...normalized.split('/'));
  // Walk up to the nearest existing ancestor, then resolve symlinks from there.
  for (;;) {
    try {
      const resolved = await realpath(probe);
      if (!isInside(realRoot, resolved)) throw new PathOutsideWorkspaceError(field, 'resolves outside the workspace (through a symbolic link)');
      return normalized;
    } catch (err) {
      if (err instanceof PathOutsideWorkspaceError) throw err;
      const parent = path.dirname(probe);
      if (parent === probe || !isInside(realRoot, parent)) throw new PathOutsideWorkspaceError(field, 'is not inside the workspace');
      probe = parent;
    }
  }
}
