// A small edit is a patch: only the changed lines are tombstoned and appended at
// the tail after a `path:first-last` header; the rest of the file stays where it
// is, so a one-line edit costs a line's tokens wherever the file sits. The file is
// then in pieces (see file-span.ts).
import type { ContextCore } from './context-core.js';
import type { FilePiece, FileSpan } from './context-types.js';
import { feedTokens } from './feeding.js';
import { idsOf, lineStartsOf, piecesOf, type FileMeta } from './file-span.js';
import { yieldToCompletions } from './tail-parking.js';

/** A file in more pieces than this is appended whole at its next edit (its pieces collapse into one). */
const MAX_PIECES = 32;

/** A planned patch (see planPatch). */
export interface PatchPlan {
  /** The patch header, then the file's new ids [from, from + ids.length − header). */
  ids: number[];
  header: number;
  from: number;
  /** The file's pieces other than the patch, shifted to the new version's offsets. */
  pieces: FilePiece[];
  /** Sequence ranges the edit replaced. */
  dead: [number, number][];
  lineStarts: number[];
  headerTokens: number;
  /** Tokens the patch feeds. */
  cost: number;
}

/**
 * A patch for an edit of `span` to `ids`: the lines from the first changed token to
 * the last, as edited, with a `path:first-last` header. The file's common start and
 * end stay where they are; only the replaced lines are tombstoned. Undefined where
 * it would feed more than the patch share of the file, split the file into too many
 * pieces, or not fit the budget.
 */
export function planPatch(core: ContextCore, span: FileSpan, ids: readonly number[], headerTokens: number): PatchPlan | undefined {
  if (!(core.patchShare > 0) || headerTokens !== span.headerTokens) return undefined;
  const old = idsOf(span, core.sequence.tokens);
  const limit = Math.min(old.length, ids.length);
  let same = 0;
  while (same < limit && old[same] === ids[same]) same++;
  let sameEnd = 0;
  while (sameEnd < limit - same && old[old.length - 1 - sameEnd] === ids[ids.length - 1 - sameEnd]) sameEnd++;
  if (same < headerTokens) return undefined;
  const lineStarts = lineStartsOf(core.format, ids, headerTokens);
  // From the start of the line with the first changed token to the first line start after
  // the last one whose break token is unchanged too (so it is a line start in both versions).
  let first = 0;
  while (first + 1 < lineStarts.length && lineStarts[first + 1] <= same) first++;
  let next = first;
  while (next < lineStarts.length && lineStarts[next] <= ids.length - sameEnd) next++;
  const from = lineStarts[first];
  const to = next < lineStarts.length ? lineStarts[next] : ids.length;
  const oldTo = to - (ids.length - old.length);
  const header = core.format.patchHeader(span.path, first + 1, Math.max(first + 1, next));
  const cost = header.length + to - from;
  if (cost > core.patchShare * ids.length) return undefined;

  const pieces: FilePiece[] = [];
  const dead: [number, number][] = [];
  for (const piece of piecesOf(span)) {
    const a = piece.from;
    const b = piece.from + piece.length;
    if (a < from) pieces.push({ at: piece.at, from: a, length: Math.min(b, from) - a, header: piece.header });
    const deadFrom = Math.max(a, from);
    const deadTo = Math.min(b, oldTo);
    if (deadFrom < deadTo) dead.push([piece.at + deadFrom - a, piece.at + deadTo - a]);
    if (b > oldTo) {
      const keep = Math.max(a, oldTo);
      pieces.push({ at: piece.at + keep - a, from: keep + ids.length - old.length, length: b - keep, header: keep === a ? piece.header : 0 });
    }
    // A patch header whose first tokens were replaced heads nothing now.
    if (piece.header > 0 && a >= from && a < oldTo) dead.push([piece.at - piece.header, piece.at]);
  }
  if (pieces.length + 1 > MAX_PIECES) return undefined;
  if (core.budgetTokens() - old.length + ids.length > core.budget) return undefined;
  return { ids: [...header, ...ids.slice(from, to)], header: header.length, from, pieces, dead, lineStarts, headerTokens, cost };
}

/** Feeds a planned patch at the tail; returns its token count. If it fails half fed, the file leaves the context (the next update adds it back). */
export async function applyPatch(core: ContextCore, span: FileSpan, patch: PatchPlan, meta: FileMeta, signal?: AbortSignal): Promise<number> {
  const track = core.track;
  for (const [a, b] of patch.dead) track.sequence.markDead(a, b);
  core.version++;
  let at: number;
  try {
    at = (await feedTokens(core, track, span.path, patch.ids, signal, () => yieldToCompletions(core))) + patch.header;
  } catch (err) {
    core.tombstone(span.path);
    throw err;
  }
  const pieces = [...patch.pieces, { at, from: patch.from, length: patch.ids.length - patch.header, header: patch.header }].sort((x, y) => x.from - y.from);
  const { contentHash, mtimeMs, size, editCount } = meta;
  track.spans.set(span.path, {
    path: span.path,
    start: Math.min(...pieces.map((p) => p.at - p.header)),
    end: Math.max(...pieces.map((p) => p.at + p.length)),
    headerTokens: patch.headerTokens,
    lineStarts: patch.lineStarts,
    pieces,
    contentHash,
    mtimeMs,
    size,
    editCount,
  });
  return patch.ids.length;
}
