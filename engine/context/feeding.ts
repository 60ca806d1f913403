// Feeding token ids through the model at a track's tail: a file (or a patch) at a
// time, checkpointed at file boundaries and along recently fed files, in pieces so
// waiting completions can go between them. A run that fails half fed is rolled back,
// so no tokens are left that no span owns.
import type { Feeder, Sequence } from '../model/sala-model.js';
import { PIECE_TOKENS, type ContextCore, type Track } from './context-core.js';
import { wholeFileSpan, type FileMeta } from './file-span.js';
import { addRecent, keepRecentCheckpoint } from './recent-checkpoints.js';

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
    await feedInPieces(core, sequence, ids, signal, between, (length) => keepRecentCheckpoint(core, track, length));
  } catch (err) {
    // Half-fed ids would leave tokens no span owns: roll back to where they started.
    sequence.rollback(before);
    track.recent = track.recent.filter((r) => r !== entry);
    throw err;
  }
  return start;
}

/**
 * Feeds ids in calls of PIECE_TOKENS, running `between` after each, where that gives
 * the same result as one call: the model decides the dense/sparse switch per call and
 * aligns an all-new prefill differently, so only a sequence already past the switch
 * (and past the full top-k), or staying below it, is split. On a GPU the pieces go
 * through one feeder (SalaModel.feeder: a resident decoder), closed while a request
 * that waits is let in and synced before each piece's checkpoint.
 */
export async function feedInPieces(
  core: ContextCore,
  sequence: Sequence,
  ids: readonly number[],
  signal?: AbortSignal,
  between?: () => Promise<void>,
  afterPiece?: (length: number) => void,
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
  try {
    for (let at = 0; at < ids.length; at += PIECE_TOKENS) {
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
      await feeder.feed(ids.slice(at, at + PIECE_TOKENS), { signal });
      if (at + PIECE_TOKENS < ids.length && afterPiece) {
        await feeder.sync();
        afterPiece(sequence.length);
      }
    }
  } finally {
    await feeder?.close();
  }
}
