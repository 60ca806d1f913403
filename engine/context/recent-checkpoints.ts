// Recently fed files keep lightning checkpoints along them, so their next edit can
// roll back to just before the change and re-feed from there (edit-in-place.ts).
// The checkpoints live within a byte budget: the oldest files' go first, and one
// file's spread out as it grows.
import type { SequenceCheckpoint } from '../model/sequence.js';
import type { ContextCore, RecentFile, Track } from './context-core.js';

/** Checkpoints along a recently fed file at least this many tokens apart. */
const RECENT_CHECKPOINT_TOKENS = 128;

/** Starts the recent entry of a file fed from `start` (its first checkpoint), within the budget. */
export function addRecent(core: ContextCore, track: Track, path: string, start: SequenceCheckpoint): RecentFile {
  const entry = { path, start: start.length, checkpoints: [start] };
  track.recent.push(entry);
  trimRecent(core, track);
  return entry;
}

/** Whether the last recent file is due a checkpoint at `length` (the previous is far enough back). */
function recentCheckpointDue(core: ContextCore, track: Track, length: number): boolean {
  const entry = track.recent[track.recent.length - 1];
  if (!entry) return false;
  const spacing = Math.max(RECENT_CHECKPOINT_TOKENS, Math.ceil(((length - entry.start) * core.stateBytes()) / core.recentBudget));
  return length - entry.checkpoints[entry.checkpoints.length - 1].length >= spacing;
}

/** Keeps a checkpoint of the track's sequence in the last recent file, within the budget. */
function keepRecentCheckpoint(core: ContextCore, track: Track): void {
  track.recent[track.recent.length - 1]?.checkpoints.push(track.sequence.checkpoint());
  trimRecent(core, track);
}

/** The checkpoints feedInPieces keeps along the file being fed into `track`. */
export function recentCheckpoints(core: ContextCore, track: Track): PieceCheckpoints {
  return { due: (length) => recentCheckpointDue(core, track, length), keep: () => keepRecentCheckpoint(core, track) };
}

/** Asked after each piece of a feed: whether a checkpoint is due at `length`, then (its state synced) to keep it. */
export interface PieceCheckpoints {
  due(length: number): boolean;
  keep(): void;
}

/** Bytes the recent files' checkpoints hold. */
export function recentBytes(core: ContextCore): number {
  return core.track.recent.reduce((n, r) => n + r.checkpoints.length, 0) * core.stateBytes();
}

/** Drops the oldest files' checkpoints past the budget, then thins the last file's. */
function trimRecent(core: ContextCore, track: Track): void {
  const stateBytes = core.stateBytes();
  let held = track.recent.reduce((n, r) => n + r.checkpoints.length, 0) * stateBytes;
  while (held > core.recentBudget && track.recent.length > 1) held -= (track.recent.shift()?.checkpoints.length ?? 0) * stateBytes;
  const entry = track.recent[0];
  if (entry && held > core.recentBudget) entry.checkpoints = entry.checkpoints.filter((_, i) => i % 2 === 0);
}
