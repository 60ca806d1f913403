// An edit of a file fed recently can roll back to the checkpoint just before its
// first changed token and re-feed from there, in place, where that feeds fewer
// tokens than a patch or the whole new version: no tombstone, the file stays whole.
import type { SequenceCheckpoint } from '../model/sequence.js';
import { PIECE_TOKENS, type ContextCore } from './context-core.js';
import type { ContextFile } from './context-types.js';
import { feedFile, feedInPieces } from './feeding.js';
import { wholeFileSpan } from './file-span.js';
import { recentCheckpoints } from './recent-checkpoints.js';
import { yieldToCompletions } from './tail-parking.js';

/**
 * An edit in place, where that feeds fewer tokens than appending the whole new
 * version: roll back to the recent checkpoint at or before the file's first changed
 * token, feed the new version from there, then the files after it again (from their
 * cached ids). The file last in the context always qualifies (a one-line edit costs the
 * tokens after the change, not the file's); so does one followed by a few small files
 * (edits alternating between files). No tombstone. Returns the new token count, or
 * undefined where appending or a patch (`patchCost` tokens) is cheaper or the recent
 * checkpoints do not reach back.
 */
export async function editInPlace(
  core: ContextCore,
  file: ContextFile,
  editCount: number,
  patchCost = Number.POSITIVE_INFINITY,
  signal?: AbortSignal,
): Promise<number | undefined> {
  const track = core.track;
  const { sequence } = track;
  const span = core.spans.get(file.path);
  const entry = span && !span.pieces && track.recent.find((r) => r.path === file.path && r.start === span.start);
  if (!span || !entry) return undefined;
  // What follows the file must be live files laid end to end: they are fed again as they are.
  const lastDead = sequence.deadRanges[sequence.deadRanges.length - 1];
  if (lastDead && lastDead[1] > span.start) return undefined;
  const following = core.layout().filter((s) => s.start >= span.end);
  let end = span.end;
  for (const s of following) {
    if (s.pieces || s.start !== end) return undefined;
    end = s.end;
  }
  if (end !== sequence.length) return undefined;
  const { ids, headerTokens } = file.encoded ?? core.format.file(file.path, file.text);
  if (core.budgetTokens() - (span.end - span.start) + ids.length > core.budget) return undefined;
  let same = 0;
  const limit = Math.min(ids.length, span.end - span.start);
  while (same < limit && ids[same] === sequence.tokens[span.start + same]) same++;
  const from = [...entry.checkpoints].reverse().find((c) => c.length <= span.start + same) ?? entry.checkpoints[0];
  const cost = span.start + ids.length - from.length + (sequence.length - span.end);
  // In place when no dearer than a patch by more than a piece: it leaves the file whole.
  if (cost > ids.length || cost > patchCost + PIECE_TOKENS) return undefined;

  const between = () => yieldToCompletions(core);
  const refeed = following.map((s) => ({ span: s, ids: sequence.tokens.slice(s.start, s.end) }));
  const cutBack = (to: SequenceCheckpoint) => {
    sequence.rollback(to);
    track.checkpoints = track.checkpoints.filter((c) => c.length <= to.length);
    // The files after the cut get fresh entries as they are fed again.
    track.recent = track.recent.filter((r) => r.start < to.length || r === entry);
    entry.checkpoints = entry.checkpoints.filter((c) => c.length <= to.length);
    core.dirtyFrom = Math.min(core.dirtyFrom, to.length);
    // While it is fed, requests let in between pieces see the context up to here (as with an append).
    core.contextEnd = to;
  };
  const feedFollowing = async () => {
    for (const { span: s, ids: followingIds } of refeed) await feedFile(core, track, s.path, followingIds, s.headerTokens, s, undefined, between);
  };
  cutBack(from);
  core.spans.delete(file.path);
  for (const { span: s } of refeed) core.spans.delete(s.path);
  core.version++;
  try {
    await feedInPieces(core, sequence, ids.slice(from.length - span.start), signal, between, recentCheckpoints(core, track));
  } catch (err) {
    // Half fed: the old version is gone from here on, so the file leaves the context (the
    // next update adds it back), as with an append; the files after it are fed again.
    const start = entry.checkpoints[0];
    cutBack(start);
    track.recent = track.recent.filter((r) => r !== entry);
    await feedFollowing();
    core.contextEnd = sequence.checkpoint();
    throw err;
  }
  core.spans.set(file.path, wholeFileSpan(core.format, file.path, span.start, ids, headerTokens, { ...file, editCount }));
  core.contextEnd = sequence.checkpoint();
  // The files after it again (bounded: cheaper than the file itself, by the test above).
  await feedFollowing();
  return ids.length;
}
