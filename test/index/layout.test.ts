// planLayout: context order, the budget rule ("recent first, first fit"), exact counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planLayout, type LayoutInput, type LayoutPlan } from '../../engine/index/layout.js';

function file(path: string, tokens: number, editCount = 0, mtimeMs = 0): LayoutInput {
  return { path, tokens, editCount, mtimeMs };
}

/** Checks what must hold of every plan, whatever the input. */
function assertPlanInvariants(files: readonly LayoutInput[], plan: LayoutPlan): void {
  const sum = (items: readonly { tokens: number }[]) => items.reduce((total, item) => total + item.tokens, 0);
  assert.equal(plan.includedTokens, sum(plan.included), 'includedTokens is exact');
  assert.equal(plan.excludedTokens, sum(plan.excluded), 'excludedTokens is exact');
  assert.equal(plan.includedTokens + plan.excludedTokens, sum(files), 'every token is accounted for');
  assert.ok(plan.includedTokens <= plan.budget, 'within budget');
  const listed = [...plan.included.map((f) => f.path), ...plan.excluded.map((f) => f.path)].sort();
  assert.deepEqual(listed, files.map((f) => f.path).sort(), 'every file is either included or listed as excluded');
  // Never dropped in favour of a staler file: an excluded file does not fit next to the
  // fresher files alone (those after it in context order).
  const inputsByPath = new Map(files.map((f) => [f.path, f]));
  const compareOrder = (a: LayoutInput, b: LayoutInput) => a.editCount - b.editCount || a.mtimeMs - b.mtimeMs || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
  for (const excluded of plan.excluded) {
    const excludedInput = inputsByPath.get(excluded.path);
    assert.ok(excludedInput);
    const fresherIncluded = plan.included.filter((f) => compareOrder(excludedInput, f) < 0);
    assert.ok(excluded.tokens > plan.budget - sum(fresherIncluded), `${excluded.path} was dropped although it fit next to the fresher files`);
  }
  for (let i = 1; i < plan.included.length; i++) assert.ok(compareOrder(plan.included[i - 1], plan.included[i]) < 0, 'included is in context order');
}

test('context order: fewest edits first, then oldest mtime, then path', () => {
  const files = [file('hot.ts', 10, 5, 100), file('b.ts', 10, 0, 50), file('a.ts', 10, 0, 50), file('old.ts', 10, 0, 10), file('warm.ts', 10, 1, 1)];
  const plan = planLayout(files);
  assert.deepEqual(
    plan.included.map((f) => f.path),
    ['old.ts', 'a.ts', 'b.ts', 'warm.ts', 'hot.ts'],
  );
  assert.deepEqual(plan.excluded, []);
  assert.equal(plan.budget, 1_000_000, 'the default budget');
  assert.equal(plan.includedTokens, 50);
  assert.equal(plan.excludedTokens, 0);
});

interface BudgetCase {
  name: string;
  files: LayoutInput[];
  budget: number;
  included: string[];
  excluded: string[];
}

// stale.ts (0 edits) < mid.ts (1 edit) < recent.ts (3 edits): 100 + 50 + 30 = 180 tokens.
const threeFiles = [file('recent.ts', 30, 3, 300), file('stale.ts', 100, 0, 100), file('mid.ts', 50, 1, 200)];

const budgetCases: BudgetCase[] = [
  { name: 'budget exactly filled: everything fits', files: threeFiles, budget: 180, included: ['stale.ts', 'mid.ts', 'recent.ts'], excluded: [] },
  { name: 'over by one token: the stalest file gives way', files: threeFiles, budget: 179, included: ['mid.ts', 'recent.ts'], excluded: ['stale.ts'] },
  {
    name: 'room left by a file that does not fit goes to smaller, staler files',
    files: [...threeFiles, file('tiny-stale.ts', 20, 0, 1)],
    budget: 120,
    included: ['tiny-stale.ts', 'mid.ts', 'recent.ts'],
    excluded: ['stale.ts'],
  },
  {
    name: 'a recent file larger than the whole budget is excluded, not the stale ones',
    files: [file('huge-recent.ts', 500, 9, 1), file('s1.ts', 100), file('s2.ts', 100)],
    budget: 400,
    included: ['s1.ts', 's2.ts'],
    excluded: ['huge-recent.ts'],
  },
  { name: 'zero budget: everything is listed as excluded', files: threeFiles, budget: 0, included: [], excluded: ['stale.ts', 'mid.ts', 'recent.ts'] },
  { name: 'zero-token files always fit', files: [file('empty.ts', 0), file('big.ts', 10, 1)], budget: 5, included: ['empty.ts'], excluded: ['big.ts'] },
  { name: 'no files', files: [], budget: 10, included: [], excluded: [] },
];

for (const budgetCase of budgetCases) {
  test(`budget: ${budgetCase.name}`, () => {
    const plan = planLayout(budgetCase.files, budgetCase.budget);
    assert.deepEqual(
      plan.included.map((f) => f.path),
      budgetCase.included,
    );
    assert.deepEqual(
      plan.excluded.map((f) => f.path),
      budgetCase.excluded,
    );
    assert.ok(plan.excluded.every((f) => f.reason === 'over-budget'));
    assertPlanInvariants(budgetCase.files, plan);
  });
}

test('budget: counts are exact with excluded files listed with their tokens', () => {
  const plan = planLayout(threeFiles, 179);
  assert.deepEqual(plan.excluded, [{ path: 'stale.ts', tokens: 100, reason: 'over-budget' }]);
  assert.equal(plan.includedTokens, 80);
  assert.equal(plan.excludedTokens, 100);
  assert.equal(plan.budget, 179);
});

test('budget: the invariants hold on 200 random workspaces (seeded)', () => {
  let seed = 12345;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let round = 0; round < 200; round++) {
    const count = Math.floor(random() * 40);
    const files = Array.from({ length: count }, (_, i) => file(`f${i}.ts`, Math.floor(random() * 5000), Math.floor(random() * 4), Math.floor(random() * 10)));
    const total = files.reduce((sum, f) => sum + f.tokens, 0);
    const budget = Math.floor(random() * total * 1.2);
    assertPlanInvariants(files, planLayout(files, budget));
  }
});

test('a million-token workspace: 20,000 files of 60 tokens, budget 1,000,000 exactly fits 16,666 of them', () => {
  const files = Array.from({ length: 20_000 }, (_, i) => file(`src/f${String(i).padStart(5, '0')}.ts`, 60, i % 3, i));
  const plan = planLayout(files);
  assert.equal(plan.included.length, 16_666);
  assert.equal(plan.includedTokens, 999_960);
  assert.equal(plan.excluded.length, 3_334);
  assert.equal(plan.excludedTokens, 200_040);
  assert.ok(
    plan.excluded.every((f) => Number(f.path.slice(5, 10)) % 3 === 0),
    'only never-edited files are dropped',
  );
});

test('invalid input fails loudly instead of reporting wrong totals', () => {
  assert.throws(() => planLayout([file('a.ts', 1), file('a.ts', 2)]), /a\.ts is listed twice/);
  assert.throws(() => planLayout([file('a.ts', -1)]), /invalid token count -1/);
  assert.throws(() => planLayout([file('a.ts', 1.5)]), /invalid token count 1\.5/);
  assert.throws(() => planLayout([file('a.ts', 1)], -5), /budget must be a non-negative integer/);
  assert.throws(() => planLayout([{ path: 'a.ts', tokens: 1, editCount: Number.NaN, mtimeMs: 0 }]), /invalid editCount or mtimeMs/);
});
