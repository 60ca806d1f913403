// What the engine service remembers for the workspace map: the indexing run's plan
// (the context as it fills, the scan's left-out files, the queue), the watcher's
// changes since, and the last answers' overlays, keyed by their request id.
import type { IndexPlan } from '../context/workspace-index.js';
import type { AskResult as ContextAskResult } from '../context/workspace-context.js';
import { buildAnswerOverlay, buildWorkspaceMap, type AnswerOverlay, type MapInput, type WorkspaceMap } from '../context/workspace-map.js';
import type { ChangeBatch } from '../index/watcher.js';

/** Answers whose overlay is kept (each is bounded: see workspace-map.ts). */
export const KEPT_OVERLAYS = 32;

type Skipped = MapInput['skipped'][number];

export class MapState {
  private plan?: IndexPlan;
  private skipped = new Map<string, Skipped>();
  /** Files of watcher batches being applied now, in order. */
  private changing: MapInput['queued'] = [];
  private readonly overlays = new Map<string, AnswerOverlay>();

  constructor(private readonly budget: number) {}

  /** A new indexing run (open or reindex): its plan replaces what was known. */
  planned(plan: IndexPlan): void {
    this.plan = plan;
    this.skipped = new Map(plan.skipped.map((s) => [s.path, s]));
    this.changing = [];
  }

  /** Forgets the run (reindex drops the store). */
  reset(): void {
    this.plan = undefined;
    this.skipped.clear();
    this.changing = [];
  }

  /** The run encoded everything it queued (or left it out for the budget): nothing waits any more. */
  finished(): void {
    if (this.plan) this.plan = { ...this.plan, queued: [] };
  }

  /** A watcher batch starts applying: its files are being encoded; what it skips is left out. */
  applying(batch: ChangeBatch): void {
    const gone = new Set([...batch.deleted, ...batch.changed.map((f) => f.path)]);
    for (const path of gone) this.skipped.delete(path);
    for (const s of batch.skipped) this.skipped.set(s.path, s);
    if (this.plan) this.plan = { ...this.plan, queued: this.plan.queued.filter((f) => !gone.has(f.path)) };
    const context = this.plan?.context;
    const added = batch.changed.map((f) => {
      const span = context?.span(f.path);
      // Tokens are not known before the file is tokenized: the old version's, or about 4 bytes a token, stand in.
      return { path: f.path, tokens: span ? span.end - span.start : Math.ceil(f.size / 4), contentHash: f.contentHash };
    });
    this.changing = [...this.changing, ...added];
  }

  applied(batch: ChangeBatch): void {
    const done = new Set(batch.changed.map((f) => f.path));
    this.changing = this.changing.filter((f) => !done.has(f.path));
  }

  map(phase: WorkspaceMap['phase'], maxCells?: number): WorkspaceMap {
    const context = this.plan?.context;
    if (!context)
      return buildWorkspaceMap({ spans: [], overBudget: new Map(), skipped: [], queued: [], deadRanges: [], deadTokens: 0, budget: this.budget, phase: 'scanning' }, maxCells);
    const { sequence } = context;
    return buildWorkspaceMap(
      {
        spans: context.layout(),
        overBudget: context.excludedFiles(),
        skipped: [...this.skipped.values()],
        queued: [...(this.plan?.queued ?? []), ...this.changing],
        deadRanges: sequence.deadRanges,
        deadTokens: sequence.deadTokens,
        budget: this.budget,
        phase,
      },
      maxCells,
    );
  }

  /** Keeps an answer's overlay (the oldest beyond KEPT_OVERLAYS go). */
  answered(requestId: string, result: ContextAskResult, blockSize: number): void {
    this.overlays.delete(requestId);
    this.overlays.set(requestId, buildAnswerOverlay(requestId, result.layout, result.blockHits, blockSize));
    while (this.overlays.size > KEPT_OVERLAYS) this.overlays.delete(this.overlays.keys().next().value ?? requestId);
  }

  overlay(requestId: string): AnswerOverlay | undefined {
    return this.overlays.get(requestId);
  }
}
