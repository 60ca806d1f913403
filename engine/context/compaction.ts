// When dead tokens pass a threshold, a background compaction builds a new sequence
// from the last lightning checkpoint before the first tombstone, re-feeding the
// live files after it from their cached token ids (no re-tokenization), while the
// current sequence keeps serving requests; it pauses while questions and
// completions run. Edits made meanwhile are replayed onto the new sequence before
// it replaces the old one.
import type { ContextCore, Track } from './context-core.js';
import { feedFile } from './feeding.js';
import { idsOf, rangesOf } from './file-span.js';
import { settleTail } from './tail-parking.js';

/** Whether the dead share of the sequence calls for a compaction. */
export function wantsCompaction(core: ContextCore): boolean {
  return core.sequence.deadTokens > core.compactAt * core.sequence.length;
}

/** Builds the compacted track and swaps it in (see the top of this file). */
export async function compactTrack(core: ContextCore, signal?: AbortSignal): Promise<void> {
  const plan = await core.lock.run(async () => {
    settleTail(core);
    const firstDead = core.sequence.deadRanges[0]?.[0];
    if (firstDead === undefined) return undefined;
    const restart = [...core.checkpoints].reverse().find((c) => c.length <= firstDead) ?? core.checkpoints[0];
    const layout = core.layout();
    // A patched file with pieces on both sides of the restart is re-fed whole, its earlier pieces tombstoned.
    const refeed = layout.filter((span) => span.end > restart.length).map((span) => ({ span, ids: idsOf(span, core.sequence.tokens) }));
    const track: Track = {
      sequence: core.sequence.prefix(restart),
      spans: new Map(layout.filter((span) => span.end <= restart.length).map((span) => [span.path, span])),
      checkpoints: core.checkpoints.filter((c) => c.length <= restart.length),
      recent: [],
    };
    for (const { span } of refeed) for (const [a, b] of rangesOf(span)) if (a < restart.length) track.sequence.markDead(a, Math.min(b, restart.length));
    core.log(`context: compacting from token ${restart.length} (${core.sequence.deadTokens} dead, ${refeed.length} files to re-feed)`);
    return { restart, refeed, track };
  });
  if (!plan) return;
  // Requests run on the live sequence meanwhile; the building pauses while they do (between pieces of a file).
  const pause = () => core.foreground.settled();
  for (const { span, ids } of plan.refeed) {
    await pause();
    await feedFile(core, plan.track, span.path, ids, span.headerTokens, span, signal, pause);
  }
  await core.lock.run(async () => {
    settleTail(core);
    // Replay what changed while building: new versions appended, deletions tombstoned.
    for (const span of core.layout()) {
      const built = plan.track.spans.get(span.path);
      if (built && built.contentHash === span.contentHash) continue;
      if (built) {
        for (const [a, b] of rangesOf(built)) plan.track.sequence.markDead(a, b);
        plan.track.spans.delete(span.path);
      }
      await feedFile(core, plan.track, span.path, idsOf(span, core.sequence.tokens), span.headerTokens, span, signal);
    }
    for (const [path, built] of [...plan.track.spans]) {
      if (core.spans.has(path)) continue;
      for (const [a, b] of rangesOf(built)) plan.track.sequence.markDead(a, b);
      plan.track.spans.delete(path);
    }
    core.track = plan.track;
    core.dirtyFrom = Math.min(core.dirtyFrom, plan.restart.length);
    core.contextEnd = core.sequence.checkpoint();
    core.version++;
  });
  core.options.onCompacted?.();
}
