// The workspace as a map: every file with its tokens and its state in the context
// (encoded, patched, being encoded, waiting, left out and why), aggregated into a
// bounded folder tree a webview can draw as a treemap; and, per answer, the blocks
// the sparse layers selected, mapped to files and line ranges the way `sources`
// maps them (blocks → file pieces → lines, each hit weighted count / total hits).
import { FILE_STATES, type AnswerOverlay, type ExcludeReason, type FileState, type MapCell, type OverlayFile, type Source, type WorkspaceMap } from '../vocabulary.js';
import type { FilePiece, FileSpan } from './context-types.js';
import { lineOf, piecesOf } from './file-span.js';
import { mergeAdjacent } from './sources.js';

export { FILE_STATES };
export type { AnswerOverlay, ExcludeReason, FileState, MapCell, OverlayFile, OverlayRange, WorkspaceMap } from '../vocabulary.js';

/** What the engine knows about the files: the context's layout and the current indexing run. */
export interface MapInput {
  /** context.layout() */
  spans: readonly FileSpan[];
  /** context.excludedFiles(): left out for the token budget. */
  overBudget: ReadonlyMap<string, { tokens: number }>;
  /** The scan's skipped files (and the watcher's since). */
  skipped: readonly { path: string; reason: ExcludeReason; detail: string }[];
  /** Files the indexing run (or a watcher batch) is to encode, in order: the first not yet in the context is being encoded. */
  queued: readonly { path: string; tokens: number; contentHash: string }[];
  /** The sequence's tombstones, ascending. */
  deadRanges: readonly (readonly [number, number])[];
  deadTokens: number;
  budget: number;
  phase: WorkspaceMap['phase'];
}

/** Default cap on cells: a treemap of a few thousand rectangles draws in a frame or two. */
export const DEFAULT_MAX_CELLS = 3000;
export const MIN_CELLS = 16;
export const MAX_CELLS = 20_000;

interface Entry {
  path: string;
  size: number;
  tokens: number;
  state: FileState;
  reason?: ExcludeReason;
  detail?: string;
  patchedTokens?: number;
  deadTokens?: number;
}

interface Folder {
  path: string;
  name: string;
  size: number;
  files: number;
  tokens: number;
  states: number[];
  folders: Map<string, Folder>;
  entries: Entry[];
}

/** Every file the engine knows of, with its state (one entry per path). */
export function mapEntries(input: MapInput): Entry[] {
  const entries = new Map<string, Entry>();
  const spans = new Map(input.spans.map((s) => [s.path, s]));
  let encodingTaken = false;
  for (const file of input.queued) {
    const span = spans.get(file.path);
    if (span && span.contentHash === file.contentHash) continue;
    // The first queued file not in the context yet is the one being fed now.
    const state: FileState = encodingTaken ? 'waiting' : 'encoding';
    encodingTaken = true;
    entries.set(file.path, { path: file.path, size: file.tokens, tokens: span ? liveTokens(span) : 0, state });
  }
  for (const span of input.spans) {
    if (entries.has(span.path)) continue;
    const tokens = liveTokens(span);
    const entry: Entry = { path: span.path, size: tokens, tokens, state: span.pieces ? 'patched' : 'encoded' };
    if (span.pieces) {
      entry.patchedTokens = span.pieces.filter((p) => p.header > 0).reduce((n, p) => n + p.header + p.length, 0);
      entry.deadTokens = deadWithin(input.deadRanges, span.start, span.end);
    }
    entries.set(span.path, entry);
  }
  for (const [path, { tokens }] of input.overBudget) {
    if (!entries.has(path))
      entries.set(path, { path, size: tokens, tokens: 0, state: 'excluded', reason: 'over-budget', detail: `${tokens.toLocaleString('en')} tokens do not fit the token budget` });
  }
  const nominal = nominalSize([...entries.values()]);
  for (const s of input.skipped) {
    if (!entries.has(s.path)) entries.set(s.path, { path: s.path, size: nominal, tokens: 0, state: 'excluded', reason: s.reason, detail: s.detail });
  }
  return [...entries.values()];
}

/** The map of a workspace: its files in their folders, at most `maxCells` cells. */
export function buildWorkspaceMap(input: MapInput, maxCells = DEFAULT_MAX_CELLS): WorkspaceMap {
  if (!Number.isInteger(maxCells) || maxCells < MIN_CELLS || maxCells > MAX_CELLS)
    throw new RangeError(`maxCells must be an integer in [${MIN_CELLS}, ${MAX_CELLS}], got ${maxCells}`);
  const entries = mapEntries(input);
  const root = folderTree(entries);
  const { fileMin, folderMin } = thresholds(root, maxCells);
  const cells: MapCell[] = [];
  emit(root, -1, fileMin, folderMin, cells);
  const filesByState = FILE_STATES.map(() => 0);
  for (const e of entries) filesByState[FILE_STATES.indexOf(e.state)]++;
  const aggregated = cells.filter((c) => c.kind === 'rest').reduce((n, c) => n + c.files, 0);
  const tokens = input.spans.reduce((n, s) => n + liveTokens(s), 0);
  return { cells, totals: { files: entries.length, tokens, deadTokens: input.deadTokens, budget: input.budget, filesByState }, aggregated, phase: input.phase };
}

/** A skipped file has no tokens: it gets a quarter of the median file's area (8–512), so it shows without crowding. */
function nominalSize(entries: readonly Entry[]): number {
  const sizes = entries.map((e) => e.size).sort((a, b) => a - b);
  const median = sizes.length > 0 ? sizes[sizes.length >> 1] : 64;
  return Math.min(512, Math.max(8, Math.round(median / 4)));
}

function liveTokens(span: FileSpan): number {
  return piecesOf(span).reduce((n, p) => n + p.header + p.length, 0);
}

/** Tombstoned tokens inside [start, end). */
function deadWithin(ranges: readonly (readonly [number, number])[], start: number, end: number): number {
  let dead = 0;
  for (const [a, b] of ranges) {
    if (a >= end) break;
    dead += Math.max(0, Math.min(b, end) - Math.max(a, start));
  }
  return dead;
}

function newFolder(path: string): Folder {
  return { path, name: path.slice(path.lastIndexOf('/') + 1), size: 0, files: 0, tokens: 0, states: FILE_STATES.map(() => 0), folders: new Map(), entries: [] };
}

function folderTree(entries: readonly Entry[]): Folder {
  const root = newFolder('');
  for (const entry of entries) {
    const parts = entry.path.split('/');
    let folder = root;
    const chain = [root];
    for (let i = 0; i < parts.length - 1; i++) {
      let next = folder.folders.get(parts[i]);
      if (!next) folder.folders.set(parts[i], (next = newFolder(folder.path === '' ? parts[i] : `${folder.path}/${parts[i]}`)));
      folder = next;
      chain.push(folder);
    }
    folder.entries.push(entry);
    const stateIndex = FILE_STATES.indexOf(entry.state);
    for (const f of chain) {
      f.size += entry.size;
      f.tokens += entry.tokens;
      f.files++;
      f.states[stateIndex] += entry.size;
    }
  }
  return root;
}

/** Cells the tree takes when files below `fileMin` and folders below `folderMin` go into their folder's 'rest'. */
function countCells(folder: Folder, fileMin: number, folderMin: number): number {
  let cells = 1;
  let rest = 0;
  for (const entry of folder.entries) {
    if (entry.size >= fileMin) cells++;
    else rest++;
  }
  for (const child of folder.folders.values()) {
    if (child.size >= folderMin) cells += countCells(child, fileMin, folderMin);
    else rest++;
  }
  // A lone small file is drawn as itself: the same one cell.
  return cells + (rest > 0 ? 1 : 0);
}

/**
 * The smallest thresholds that keep the tree within `maxCells`: first every folder
 * with its small files aggregated; where the folders alone are too many, small
 * folders collapse too (one threshold for both, found by bisection over the sizes).
 */
function thresholds(root: Folder, maxCells: number): { fileMin: number; folderMin: number } {
  if (countCells(root, 0, 0) <= maxCells) return { fileMin: 0, folderMin: 0 };
  const sizes: number[] = [];
  const collect = (folder: Folder) => {
    sizes.push(folder.size);
    for (const e of folder.entries) sizes.push(e.size);
    for (const child of folder.folders.values()) collect(child);
  };
  collect(root);
  const candidates = [...new Set(sizes)].sort((a, b) => a - b);
  candidates.push(Number.POSITIVE_INFINITY);
  const smallest = (fits: (t: number) => boolean) => {
    let lo = 0;
    let hi = candidates.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (fits(candidates[mid])) hi = mid;
      else lo = mid + 1;
    }
    return candidates[lo];
  };
  if (countCells(root, Number.POSITIVE_INFINITY, 0) <= maxCells) return { fileMin: smallest((t) => countCells(root, t, 0) <= maxCells), folderMin: 0 };
  const both = smallest((t) => countCells(root, t, t) <= maxCells);
  return { fileMin: both, folderMin: both };
}

function dominant(states: readonly number[]): FileState {
  let best = 0;
  for (let i = 1; i < states.length; i++) if (states[i] > states[best]) best = i;
  return FILE_STATES[best];
}

function emit(folder: Folder, parent: number, fileMin: number, folderMin: number, cells: MapCell[]): void {
  const index = cells.length;
  cells.push({ parent, kind: 'folder', path: folder.path, size: folder.size, tokens: folder.tokens, files: folder.files, state: dominant(folder.states), states: folder.states });
  const rest = { size: 0, tokens: 0, files: 0, states: FILE_STATES.map(() => 0), entries: [] as Entry[] };
  const keptFiles: Entry[] = [];
  for (const entry of folder.entries) {
    if (entry.size >= fileMin) keptFiles.push(entry);
    else {
      rest.entries.push(entry);
      rest.size += entry.size;
      rest.tokens += entry.tokens;
      rest.files++;
      rest.states[FILE_STATES.indexOf(entry.state)] += entry.size;
    }
  }
  const keptFolders: Folder[] = [];
  let restFolders = 0;
  for (const child of folder.folders.values()) {
    if (child.size >= folderMin) keptFolders.push(child);
    else {
      restFolders++;
      rest.size += child.size;
      rest.tokens += child.tokens;
      rest.files += child.files;
      child.states.forEach((s, i) => (rest.states[i] += s));
    }
  }
  if (rest.files === 1 && restFolders === 0) keptFiles.push(rest.entries[0]);
  // Largest first, as a squarified layout wants them; ties by path, so the map is stable.
  const items: ({ kind: 'file'; entry: Entry } | { kind: 'folder'; folder: Folder })[] = [
    ...keptFiles.map((entry) => ({ kind: 'file' as const, entry })),
    ...keptFolders.map((f) => ({ kind: 'folder' as const, folder: f })),
  ];
  const sizeOf = (item: (typeof items)[number]) => (item.kind === 'file' ? item.entry.size : item.folder.size);
  const pathOf = (item: (typeof items)[number]) => (item.kind === 'file' ? item.entry.path : item.folder.path);
  items.sort((a, b) => sizeOf(b) - sizeOf(a) || (pathOf(a) < pathOf(b) ? -1 : 1));
  for (const item of items) {
    if (item.kind === 'folder') {
      emit(item.folder, index, fileMin, folderMin, cells);
      continue;
    }
    const { entry } = item;
    const cell: MapCell = { parent: index, kind: 'file', path: entry.path, size: entry.size, tokens: entry.tokens, files: 1, state: entry.state };
    if (entry.reason) cell.reason = entry.reason;
    if (entry.detail) cell.detail = entry.detail;
    if (entry.patchedTokens !== undefined) cell.patchedTokens = entry.patchedTokens;
    if (entry.deadTokens !== undefined) cell.deadTokens = entry.deadTokens;
    cells.push(cell);
  }
  if (rest.files > 1 || restFolders > 0) {
    const detail = `${rest.files.toLocaleString('en')} smaller files${restFolders > 0 ? ` in ${restFolders} folder${restFolders > 1 ? 's' : ''} and loose` : ''}, drawn as one`;
    cells.push({
      parent: index,
      kind: 'rest',
      path: folder.path,
      size: rest.size,
      tokens: rest.tokens,
      files: rest.files,
      state: dominant(rest.states),
      states: rest.states,
      detail,
    });
  }
}

// ---- Per answer: the selected blocks as files and line ranges ----

export const MAX_PLACES = 20;
export const MAX_OVERLAY_FILES = 64;
export const MAX_RANGES_PER_FILE = 64;

interface Placed {
  at: number;
  piece: FilePiece;
  span: FileSpan;
}

/**
 * Maps per-block hit counts (as ask() counts them) onto the layout the answer
 * was generated over: each block's overlap with each file piece becomes a line
 * range weighted count / total, as `sources` weighs them. The places merge ranges
 * of one file that touch, as `sources` does; the files keep them block by block.
 * Bounded: MAX_PLACES places, MAX_OVERLAY_FILES files of at most
 * MAX_RANGES_PER_FILE ranges each.
 */
export function buildAnswerOverlay(requestId: string, spans: readonly FileSpan[], blockHits: readonly (readonly [number, number])[], blockSize: number): AnswerOverlay {
  const total = blockHits.reduce((n, [, count]) => n + count, 0);
  if (total === 0) return { requestId, hits: 0, unmapped: 0, places: [], files: [], otherWeight: 0 };
  // Every piece of every file, by position: a block finds its pieces by bisection, not by a walk over every file.
  const placed: Placed[] = spans.flatMap((span) => piecesOf(span).map((piece) => ({ at: piece.at, piece, span })));
  placed.sort((a, b) => a.at - b.at);
  const byFileLine = new Map<string, Source>();
  let unmapped = 0;
  for (const [block, count] of [...blockHits].sort((a, b) => b[1] - a[1])) {
    const from = block * blockSize;
    const to = from + blockSize;
    let mapped = false;
    for (let i = Math.max(0, lastAtOrBefore(placed, from)); i < placed.length && placed[i].at < to; i++) {
      const { piece, span } = placed[i];
      const a = Math.max(from, piece.at);
      const b = Math.min(to, piece.at + piece.length);
      if (a >= b) continue;
      mapped = true;
      const startLine = lineOf(span, piece.from + a - piece.at);
      const endLine = lineOf(span, piece.from + b - 1 - piece.at);
      const key = `${span.path}:${startLine}`;
      const entry = byFileLine.get(key) ?? { path: span.path, startLine, endLine, weight: 0 };
      entry.weight += count / total;
      byFileLine.set(key, entry);
    }
    if (!mapped) unmapped += count / total;
  }
  const merged = mergeAdjacent([...byFileLine.values()]);
  const places = [...merged].sort((a, b) => b.weight - a.weight).slice(0, MAX_PLACES);
  const lines = new Map(spans.map((s) => [s.path, s.lineStarts.length]));
  const perFile = new Map<string, OverlayFile>();
  for (const range of byFileLine.values()) {
    const file = perFile.get(range.path) ?? { path: range.path, lines: lines.get(range.path) ?? range.endLine, weight: 0, ranges: [] };
    file.weight += range.weight;
    file.ranges.push({ startLine: range.startLine, endLine: range.endLine, weight: range.weight });
    perFile.set(range.path, file);
  }
  const files = [...perFile.values()].sort((a, b) => b.weight - a.weight || (a.path < b.path ? -1 : 1));
  for (const file of files) {
    if (file.ranges.length > MAX_RANGES_PER_FILE) file.ranges = file.ranges.sort((a, b) => b.weight - a.weight).slice(0, MAX_RANGES_PER_FILE);
    file.ranges.sort((a, b) => a.startLine - b.startLine);
  }
  const kept = files.slice(0, MAX_OVERLAY_FILES);
  const otherWeight = files.slice(MAX_OVERLAY_FILES).reduce((n, f) => n + f.weight, 0);
  return { requestId, hits: total, unmapped, places, files: kept, otherWeight };
}

/** Index of the last piece starting at or before `position` (−1 if none). */
function lastAtOrBefore(placed: readonly Placed[], position: number): number {
  let lo = 0;
  let hi = placed.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (placed[mid].at <= position) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}
