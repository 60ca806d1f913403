// Inline completions come first: they go ahead of queued work, and long work under
// the lock (an answer being written, a file being fed) yields to them between
// steps. Whatever follows the context end is then set aside (parked: a few hundred
// tokens' K/V rows and the lightning states) and brought back exactly afterwards.
import { ContextError } from './context-types.js';
import type { ContextCore, ParkedTail } from './context-core.js';

/**
 * Leaves the sequence at the context end for the lock's new holder. What follows
 * it can only be the last completion's prefix state: that is set aside, so the
 * next completion continues it.
 */
export function settleTail(core: ContextCore): void {
  if (core.sequence.length === core.contextEnd.length) return;
  const state = core.completion;
  if (state && !state.parked && state.version === core.version) state.parked = parkTail(core);
  else core.sequence.rollback(core.contextEnd);
}

/** Sets aside everything after the context end and rolls back to it. */
export function parkTail(core: ContextCore): ParkedTail {
  const sequence = core.sequence;
  const from = core.contextEnd.length;
  const kv = new Map<number, { keys: Float32Array; values: Float32Array }>();
  for (const [layer, cache] of sequence.sparse) kv.set(layer, cache.rows(from, sequence.length));
  const parked = { version: core.version, tokens: sequence.tokens.slice(from), kv, end: sequence.checkpoint() };
  sequence.rollback(core.contextEnd);
  return parked;
}

/** Puts a parked tail back after the context end: the sequence is then exactly as it was when parked. */
export function unparkTail(core: ContextCore, parked: ParkedTail): void {
  const sequence = core.sequence;
  if (parked.version !== core.version || sequence.length !== core.contextEnd.length) throw new ContextError('internal: a parked state no longer fits the context');
  for (const [layer, rows] of parked.kv) sequence.sparse.get(layer)?.append(rows.keys, rows.values);
  for (const id of parked.tokens) sequence.tokens.push(id);
  for (const [layer, state] of parked.end.lightning) sequence.lightning.get(layer)?.set(state);
}

/** At a safe point of long work under the lock: lets waiting completions run, then carries on exactly where it was. */
export async function yieldToCompletions(core: ContextCore): Promise<void> {
  if (!core.lock.interactiveWaiting) return;
  const own = core.sequence.length > core.contextEnd.length ? parkTail(core) : undefined;
  await core.lock.yield();
  settleTail(core);
  if (own) unparkTail(core, own);
}
