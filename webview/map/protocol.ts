// The workspace map view's messages, both ways, imported by the panel (extension
// host) and the view's script. Each side validates what it receives: the host the
// view's requests (paths, line numbers, the exported SVG), the view the map and
// overlay it is sent (shape and bounds), since it draws them as given.
// No DOM and no vscode import here, so node:test can exercise it directly.

import type { AnswerOverlay, ExcludeReason, FileState, MapCell, OverlayFile, Source, WorkspaceMap } from '../../engine/vocabulary.js';
import { isRelativeWorkspacePath } from '../protocol.js';

export const MAP_STATES: readonly FileState[] = ['encoded', 'patched', 'encoding', 'waiting', 'excluded'];
const REASONS: readonly ExcludeReason[] = ['ignored', 'binary', 'too-large', 'generated', 'minified', 'symlink-loop', 'outside-workspace', 'unreadable', 'over-budget'];

/** Colours the SVG export uses: one per state, the heat, the folders' and the labels'. */
export type PaletteKey = FileState | 'heat' | 'folder' | 'border' | 'background' | 'text';
export const PALETTE_KEYS: readonly PaletteKey[] = [...MAP_STATES, 'heat', 'folder', 'border', 'background', 'text'];
export type Palette = Record<PaletteKey, string>;

/** What the view shows above the map: the engine's state in a few words. */
export interface MapStatus {
  label: string;
  /** False when nothing can be mapped (remote backend, engine not running). */
  available: boolean;
}

/** Extension → map view. */
export type MapHostMessage =
  | { type: 'map'; map: WorkspaceMap; status: MapStatus }
  | { type: 'status'; status: MapStatus }
  | { type: 'overlay'; overlay: AnswerOverlay; question: string }
  | { type: 'clearOverlay' };

/** Map view → extension. */
export type MapViewMessage =
  | { type: 'ready' }
  | { type: 'open'; path: string; startLine: number; endLine: number }
  /** The map as the view drew it, as an SVG document (map-svg.ts), for the host to save. */
  | { type: 'exportSvg'; svg: string }
  | { type: 'clearOverlay' }
  /** How long drawing took in the view (performance.now() around layout and paint). */
  | { type: 'rendered'; ms: number; cells: number };

export const MAP_LIMITS = {
  cells: 20_000,
  pathChars: 1_024,
  detailChars: 1_024,
  places: 64,
  overlayFiles: 512,
  rangesPerFile: 256,
  questionChars: 8_000,
  svgChars: 16 * 1024 * 1024,
  colourChars: 64,
} as const;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

function isLine(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 10_000_000;
}

function isShare(value: unknown): value is number {
  // weights of one block count towards every piece it overlaps: a share may pass 1 a little
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 && value <= 64;
}

function isText(value: unknown, max: number): value is string {
  return typeof value === 'string' && value.length <= max;
}

function isState(value: unknown): value is FileState {
  return typeof value === 'string' && MAP_STATES.some((s) => s === value);
}

function isReason(value: unknown): value is ExcludeReason {
  return typeof value === 'string' && REASONS.some((r) => r === value);
}

function parseCell(raw: unknown, index: number): MapCell | undefined {
  if (!isObject(raw)) return undefined;
  const { parent, kind, path, size, tokens, files, state, states, reason, detail, patchedTokens, deadTokens } = raw;
  if (typeof parent !== 'number' || !Number.isInteger(parent) || parent < -1 || parent >= index || (index === 0) !== (parent === -1)) return undefined;
  if (kind !== 'folder' && kind !== 'file' && kind !== 'rest') return undefined;
  if (!isText(path, MAP_LIMITS.pathChars) || (path !== '' && !isRelativeWorkspacePath(path))) return undefined;
  if (!isCount(size) || !isCount(tokens) || !isCount(files) || !isState(state)) return undefined;
  const cell: MapCell = { parent, kind, path, size, tokens, files, state };
  if (states !== undefined) {
    if (!Array.isArray(states) || states.length !== MAP_STATES.length || !states.every(isCount)) return undefined;
    cell.states = states;
  }
  if (reason !== undefined) {
    if (!isReason(reason)) return undefined;
    cell.reason = reason;
  }
  if (detail !== undefined) {
    if (!isText(detail, MAP_LIMITS.detailChars)) return undefined;
    cell.detail = detail;
  }
  if (patchedTokens !== undefined) {
    if (!isCount(patchedTokens)) return undefined;
    cell.patchedTokens = patchedTokens;
  }
  if (deadTokens !== undefined) {
    if (!isCount(deadTokens)) return undefined;
    cell.deadTokens = deadTokens;
  }
  return cell;
}

export function parseWorkspaceMap(raw: unknown): WorkspaceMap | undefined {
  if (!isObject(raw) || !Array.isArray(raw.cells) || raw.cells.length === 0 || raw.cells.length > MAP_LIMITS.cells) return undefined;
  const cells: MapCell[] = [];
  for (let i = 0; i < raw.cells.length; i++) {
    const cell = parseCell(raw.cells[i], i);
    if (cell === undefined || (i > 0 && cells[cell.parent].kind !== 'folder')) return undefined;
    cells.push(cell);
  }
  const { totals, aggregated, phase } = raw;
  if (!isObject(totals) || !isCount(aggregated) || (phase !== 'scanning' && phase !== 'indexing' && phase !== 'ready')) return undefined;
  const { files, tokens, deadTokens, budget, filesByState } = totals;
  if (!isCount(files) || !isCount(tokens) || !isCount(deadTokens) || !isCount(budget)) return undefined;
  if (!Array.isArray(filesByState) || filesByState.length !== MAP_STATES.length || !filesByState.every(isCount)) return undefined;
  return { cells, totals: { files, tokens, deadTokens, budget, filesByState }, aggregated, phase };
}

function parsePlace(raw: unknown): Source | undefined {
  if (!isObject(raw) || !isRelativeWorkspacePath(raw.path) || !isLine(raw.startLine) || !isLine(raw.endLine) || raw.endLine < raw.startLine || !isShare(raw.weight))
    return undefined;
  return { path: raw.path, startLine: raw.startLine, endLine: raw.endLine, weight: raw.weight };
}

function parseOverlayFile(raw: unknown): OverlayFile | undefined {
  if (!isObject(raw) || !isRelativeWorkspacePath(raw.path) || !isLine(raw.lines) || !isShare(raw.weight)) return undefined;
  if (!Array.isArray(raw.ranges) || raw.ranges.length > MAP_LIMITS.rangesPerFile) return undefined;
  const ranges = raw.ranges.map((r) => parsePlace(isObject(r) ? { ...r, path: raw.path } : undefined));
  if (ranges.some((r) => r === undefined)) return undefined;
  return { path: raw.path, lines: raw.lines, weight: raw.weight, ranges: ranges.flatMap((r) => (r ? [{ startLine: r.startLine, endLine: r.endLine, weight: r.weight }] : [])) };
}

export function parseAnswerOverlay(raw: unknown): AnswerOverlay | undefined {
  if (!isObject(raw) || !isText(raw.requestId, 256) || !isCount(raw.hits) || !isShare(raw.unmapped) || !isShare(raw.otherWeight)) return undefined;
  if (!Array.isArray(raw.places) || raw.places.length > MAP_LIMITS.places || !Array.isArray(raw.files) || raw.files.length > MAP_LIMITS.overlayFiles) return undefined;
  const places = raw.places.map(parsePlace);
  const files = raw.files.map(parseOverlayFile);
  if (places.some((p) => p === undefined) || files.some((f) => f === undefined)) return undefined;
  return {
    requestId: raw.requestId,
    hits: raw.hits,
    unmapped: raw.unmapped,
    otherWeight: raw.otherWeight,
    places: places.filter((p) => p !== undefined),
    files: files.filter((f) => f !== undefined),
  };
}

function parseStatus(raw: unknown): MapStatus | undefined {
  if (!isObject(raw) || !isText(raw.label, 512) || typeof raw.available !== 'boolean') return undefined;
  return { label: raw.label, available: raw.available };
}

/** Validates a message the view receives; undefined for anything unknown or malformed. */
export function parseMapHostMessage(raw: unknown): MapHostMessage | undefined {
  if (!isObject(raw)) return undefined;
  switch (raw.type) {
    case 'map': {
      const map = parseWorkspaceMap(raw.map);
      const status = parseStatus(raw.status);
      return map && status ? { type: 'map', map, status } : undefined;
    }
    case 'status': {
      const status = parseStatus(raw.status);
      return status ? { type: 'status', status } : undefined;
    }
    case 'overlay': {
      const overlay = parseAnswerOverlay(raw.overlay);
      return overlay && isText(raw.question, MAP_LIMITS.questionChars) ? { type: 'overlay', overlay, question: raw.question } : undefined;
    }
    case 'clearOverlay':
      return { type: 'clearOverlay' };
    default:
      return undefined;
  }
}

/** Validates a message from the view; undefined for anything unknown or malformed. */
export function parseMapViewMessage(raw: unknown): MapViewMessage | undefined {
  if (!isObject(raw)) return undefined;
  switch (raw.type) {
    case 'ready':
    case 'clearOverlay':
      return { type: raw.type };
    case 'open':
      if (!isRelativeWorkspacePath(raw.path) || !isLine(raw.startLine) || !isLine(raw.endLine) || raw.endLine < raw.startLine) return undefined;
      return { type: 'open', path: raw.path, startLine: raw.startLine, endLine: raw.endLine };
    case 'exportSvg':
      return isSafeSvg(raw.svg) ? { type: 'exportSvg', svg: raw.svg } : undefined;
    case 'rendered':
      if (!isCount(raw.ms) || !isCount(raw.cells)) return undefined;
      return { type: 'rendered', ms: raw.ms, cells: raw.cells };
    default:
      return undefined;
  }
}

/**
 * An SVG document as map-svg.ts writes it: rectangles, text and titles. Whatever
 * could run or fetch when the file is opened elsewhere (script, foreign content,
 * event handlers, links, external references) is refused.
 */
export function isSafeSvg(value: unknown): value is string {
  if (!isText(value, MAP_LIMITS.svgChars)) return false;
  if (!value.startsWith('<svg xmlns="http://www.w3.org/2000/svg"') || !value.endsWith('</svg>')) return false;
  return !/<\s*(script|foreignObject|iframe|image|use|a|style|animate|set)\b|\son[a-z]+\s*=|href\s*=|url\s*\(|<!/i.test(value);
}

/** The palette of VS Code's default dark theme, for where a theme colour is missing. */
export function fallbackPalette(): Palette {
  return {
    encoded: '#3794ff',
    patched: '#b180d7',
    encoding: '#89d185',
    waiting: '#cca700',
    excluded: '#6f6f6f',
    heat: '#f14c4c',
    folder: '#252526',
    border: '#1e1e1e',
    background: '#1e1e1e',
    text: '#cccccc',
  };
}
