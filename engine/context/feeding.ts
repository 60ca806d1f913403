// Feeding token ids through the model at a track's tail: a file (or a patch) at a
// time, checkpointed at file boundaries and along recently fed files, in pieces so
// waiting completions can go between them. A run that fails half fed is rolled back,
// so no tokens are left that no span owns.
import type { Feeder, Sequence } from '../model/sala-model.js';
import { MAX_PIECE_TOKENS, PIECE_SECONDS, PIECE_TOKENS, type ContextCore, type Track } from './context-core.js';
import { wholeFileSpan, type FileMeta } from './file-span.js';
import { addRecent, recentCheckpoints, type PieceCheckpoints } from './recent-checkpoints.js';

/** Feeds a whole file's ids at the tail of `track` and records its span there. */
export async function feedFile(
  core: ContextCore,
  track: Track,
  path: string,
  ids: number[],
  headerTokens: number,
  meta: FileMeta,
  signal?: AbortSignal,
  between?: () => Promise<void>,
): Promise<void> {
  const start = await feedTokens(core, track, path, ids, signal, between);
  track.spans.set(path, wholeFileSpan(core.format, path, start, ids, headerTokens, meta));
}

/** Feeds a file's (or a patch's) ids at the tail, checkpointed; returns where they start. A half-fed run is rolled back. */
export async function feedTokens(core: ContextCore, track: Track, path: string, ids: readonly number[], signal?: AbortSignal, between?: () => Promise<void>): Promise<number> {
  const { sequence, checkpoints } = track;
  const start = sequence.length;
  const before = sequence.checkpoint();
  const last = checkpoints[checkpoints.length - 1];
  if (start === 0 || start - (last?.length ?? 0) >= core.checkpointEvery) checkpoints.push(before);
  const entry = addRecent(core, track, path, before);
  try {
    await feedInPieces(core, sequence, ids, signal, between, recentCheckpoints(core, track));
  } catch (err) {
    // Half-fed ids would leave tokens no span owns: roll back to where they started.
    sequence.rollback(before);
    track.recent = track.recent.filter((r) => r !== entry);
    throw err;
  }
  return start;
}

/**
 * Feeds ids in pieces, running `between` after each, where that gives the same result
 * as one call: the model decides the dense/sparse switch per call and aligns an all-new
 * prefill differently, so only a sequence already past the switch (and past the full
 * top-k), or staying below it, is split. Pieces are PIECE_TOKENS long on the host; on a
 * GPU they go through one feeder (SalaModel.feeder: a resident decoder), closed while a
 * request that waits is let in, and grow to about PIECE_SECONDS each. A feeder's state
 * is synced into the sequence only where `checkpoints` keeps one.
 */
export async function feedInPieces(
  core: ContextCore,
  sequence: Sequence,
  ids: readonly number[],
  signal?: AbortSignal,
  between?: () => Promise<void>,
  checkpoints?: PieceCheckpoints,
): Promise<void> {
  const { model } = core;
  const { denseLen, blockSize } = model.config.sparse;
  const past = sequence.length;
  core.encodedTokens += ids.length;
  const sparseThroughout = past + Math.min(PIECE_TOKENS, ids.length) >= Math.max(denseLen, model.sizes.topkTotal * blockSize);
  const denseThroughout = past + ids.length < denseLen;
  if (!between || past === 0 || !(sparseThroughout || denseThroughout)) {
    await model.feed(sequence, ids, { chunkSize: core.options.chunkSize, signal });
    return;
  }
  let feeder: Feeder | undefined;
  let piece = PIECE_TOKENS;
  try {
    for (let at = 0, to = 0; at < ids.length; at = to) {
      if (at > 0) {
        // between() lets a waiting request in, which uses the sequence: the feeder's state goes
        // back into it first (nothing awaits between this check and between()'s own).
        if (feeder && core.lock.interactiveWaiting) {
          await feeder.close();
          feeder = undefined;
        }
        await between();
      }
      feeder ??= await model.feeder(sequence, ids.length - at);
      const started = performance.now();
      to = Math.min(ids.length, at + piece);
      await feeder.feed(ids.slice(at, to), { signal });
      if (to < ids.length && checkpoints?.due(sequence.length)) {
        await feeder.sync();
        checkpoints.keep();
      }
      if (feeder.onDevice) piece = nextPiece(to - at, performance.now() - started);
    }
  } finally {
    await feeder?.close();
  }
  // Spans point into the sequence by position: a piece skipped or fed twice would misplace every later line.
  if (sequence.length !== past + ids.length) throw new Error(`fed ${sequence.length - past} of ${ids.length} tokens`);
}

/** The next piece's length on a device: about PIECE_SECONDS at the rate the last one ran, in whole PIECE_TOKENS. */
function nextPiece(tokens: number, ms: number): number {
  const fitting = Math.floor((tokens * PIECE_SECONDS * 1000) / Math.max(ms, 1) / PIECE_TOKENS) * PIECE_TOKENS;
  return Math.min(MAX_PIECE_TOKENS, Math.max(PIECE_TOKENS, fitting));
}
