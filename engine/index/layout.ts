// Where each file goes in the one long context, and which files do not fit.
//
// Order: rarely-changing files first, recently edited files last (editCount ascending, then
// mtime ascending, then path). An edit appends the new version at the tail, so files that
// change often are already near the tail and re-encoding after an edit stays short; and the
// model reads what the user is working on closest to the question.
//
// Budget rule, "recent first, first fit": files are admitted from the most recently edited
// back to the stalest; each is included if it fits in what the budget has left, otherwise it
// is excluded and the next (staler) file is tried. So:
//   - a file is never excluded to make room for a staler one: when it is excluded, only
//     fresher files have been admitted, and they alone leave too little room;
//   - edit recency is the best relevance signal this layer has, so the stale head of the
//     context is what gives way;
//   - the room a large file could not use is filled by smaller, staler files instead of
//     being wasted (dropping "the oldest" as a block would waste it).
// Every excluded file is listed with its token count; nothing is dropped silently.

export interface LayoutInput {
  path: string;
  /** Exact token count including the path header, computed by the caller. */
  tokens: number;
  /** Edits observed so far. */
  editCount: number;
  mtimeMs: number;
}

export interface ExcludedFile {
  path: string;
  tokens: number;
  reason: 'over-budget';
}

export interface LayoutPlan {
  /** In context order. */
  included: LayoutInput[];
  /** In context order. */
  excluded: ExcludedFile[];
  includedTokens: number;
  excludedTokens: number;
  budget: number;
}

export const DEFAULT_TOKEN_BUDGET = 1_000_000;

/** Context order: stale first, recently edited last. */
export function compareLayoutOrder(a: LayoutInput, b: LayoutInput): number {
  if (a.editCount !== b.editCount) return a.editCount - b.editCount;
  if (a.mtimeMs !== b.mtimeMs) return a.mtimeMs - b.mtimeMs;
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

export function planLayout(files: readonly LayoutInput[], budget: number = DEFAULT_TOKEN_BUDGET): LayoutPlan {
  if (!Number.isSafeInteger(budget) || budget < 0) throw new RangeError(`The token budget must be a non-negative integer, got ${budget}.`);
  validateInputs(files);
  const ordered = [...files].sort(compareLayoutOrder);

  const admitted = new Array<boolean>(ordered.length).fill(false);
  let remaining = budget;
  for (let index = ordered.length - 1; index >= 0; index--) {
    if (ordered[index].tokens <= remaining) {
      admitted[index] = true;
      remaining -= ordered[index].tokens;
    }
  }

  const plan: LayoutPlan = { included: [], excluded: [], includedTokens: 0, excludedTokens: 0, budget };
  ordered.forEach((file, index) => {
    if (admitted[index]) {
      plan.included.push(file);
      plan.includedTokens += file.tokens;
    } else {
      plan.excluded.push({ path: file.path, tokens: file.tokens, reason: 'over-budget' });
      plan.excludedTokens += file.tokens;
    }
  });
  return plan;
}

// A duplicate path or a fractional count would make the reported totals wrong: fail loudly.
function validateInputs(files: readonly LayoutInput[]): void {
  const seen = new Set<string>();
  for (const file of files) {
    if (seen.has(file.path)) throw new Error(`planLayout: ${file.path} is listed twice.`);
    seen.add(file.path);
    if (!Number.isSafeInteger(file.tokens) || file.tokens < 0) throw new RangeError(`planLayout: ${file.path} has an invalid token count ${file.tokens}.`);
    if (!Number.isFinite(file.editCount) || !Number.isFinite(file.mtimeMs)) throw new RangeError(`planLayout: ${file.path} has an invalid editCount or mtimeMs.`);
  }
}
