// Files coming into the context: an edit goes in the cheapest way that keeps the
// context exact — in place (edit-in-place.ts), as a patch (patch.ts), or as the
// whole new version appended at the tail after a tombstone of the old one — and the
// stalest files give way where the budget is full.
import { compareLayoutOrder } from '../index/layout.js';
import type { ContextCore } from './context-core.js';
import type { ContextFile, UpdateOptions } from './context-types.js';
import { editInPlace } from './edit-in-place.js';
import { feedFile } from './feeding.js';
import { fileTokens } from './file-span.js';
import { applyPatch, planPatch } from './patch.js';
import { settleTail, yieldToCompletions } from './tail-parking.js';

/**
 * Tombstones the deleted files and feeds the changed ones in the given order,
 * skipping unchanged files. Runs under the lock (see WorkspaceContext.update).
 */
export async function applyUpdate(core: ContextCore, changed: readonly ContextFile[], deleted: readonly string[], options: UpdateOptions): Promise<void> {
  const { signal } = options;
  settleTail(core);
  for (const path of deleted) core.tombstone(path);
  for (const file of changed) {
    const old = core.spans.get(file.path);
    if (old && old.contentHash === file.contentHash) continue;
    const editCount = old ? old.editCount + 1 : 0;
    const encoded = file.encoded ?? core.format.file(file.path, file.text);
    // The file just edited goes in: where it outgrows the budget, the stalest files give way (as in the layout plan).
    if (encoded.ids.length <= core.budget) makeRoom(core, core.budgetTokens() + encoded.ids.length - (old ? fileTokens(old) : 0) - core.budget, file.path);
    const patch = old && planPatch(core, old, encoded.ids, encoded.headerTokens);
    const tokens =
      (await editInPlace(core, { ...file, encoded }, editCount, patch?.cost, signal)) ??
      (patch && (await applyPatch(core, old, patch, { ...file, editCount }, signal))) ??
      (core.tombstone(file.path), await append(core, { ...file, encoded }, editCount, signal));
    // Each file fed is in the context (completions let in meanwhile see it; an abort keeps it).
    core.contextEnd = core.sequence.checkpoint();
    core.version++;
    options.onFile?.(file.path, tokens);
  }
}

/** Appends a file at the tail; returns its token count. */
async function append(core: ContextCore, file: ContextFile, editCount: number, signal?: AbortSignal): Promise<number> {
  const { ids, headerTokens } = file.encoded ?? core.format.file(file.path, file.text);
  if (core.budgetTokens() + ids.length > core.budget) {
    core.excluded.set(file.path, { tokens: ids.length, contentHash: file.contentHash });
    core.log(`context: ${file.path} (${ids.length} tokens) does not fit the ${core.budget}-token budget; left out`);
    return ids.length;
  }
  const meta = { contentHash: file.contentHash, mtimeMs: file.mtimeMs, size: file.size, editCount };
  await feedFile(core, core.track, file.path, ids, headerTokens, meta, signal, () => yieldToCompletions(core));
  return ids.length;
}

/**
 * Leaves out the stalest files (layout order: fewest edits, oldest) until `needed`
 * budget tokens are free, never `keep`; each is tombstoned and listed as excluded.
 */
function makeRoom(core: ContextCore, needed: number, keep: string): void {
  if (needed <= 0) return;
  const stalest = [...core.spans.values()].filter((s) => s.path !== keep).sort((a, b) => compareLayoutOrder({ ...a, tokens: 0 }, { ...b, tokens: 0 }));
  for (const span of stalest) {
    if (needed <= 0) break;
    const tokens = fileTokens(span);
    core.tombstone(span.path);
    core.excluded.set(span.path, { tokens, contentHash: span.contentHash });
    core.log(`context: ${span.path} (${tokens} tokens) left out to make room for ${keep} within the ${core.budget}-token budget`);
    needed -= tokens;
  }
}
