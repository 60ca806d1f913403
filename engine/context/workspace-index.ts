// A workspace folder kept as one persistent, fresh model context: scan → layout →
// encode (resumable, saved in batches) → watch → apply edits as they happen.
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import type { SalaModel } from '../model/sala-model.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { scanWorkspace, type SkippedFile, type WorkspaceFile } from '../index/scan.js';
import { planLayout } from '../index/layout.js';
import { WorkspaceWatcher, type ChangeBatch } from '../index/watcher.js';
import { WorkspaceContext, type AskOptions, type AskResult, type CompleteOptions, type ContextFile, type ContextOptions } from './workspace-context.js';
import { ContextStore, type LoadReport } from './store.js';

export interface IndexProgress {
  phase: 'scan' | 'encode' | 'ready';
  filesDone: number;
  filesTotal: number;
  tokensDone: number;
  tokensTotal: number;
  tokensPerSecond: number;
  etaSeconds?: number;
}

export interface IndexOptions extends ContextOptions {
  /** Where the index is persisted; none = in memory only. */
  storeDir?: string;
  /** Identifies the model for the store (a changed model means a rebuild). */
  modelId: string;
  exclude?: readonly string[];
  maxFileBytes?: number;
  /** Save after roughly this many newly encoded tokens (default 65,536), so an interrupted index resumes. */
  saveEvery?: number;
  onProgress?: (progress: IndexProgress) => void;
  /** Called once the scan is planned, before encoding: the context (filling up from here on), what the scan left out, and what is to be encoded, in order. */
  onPlan?: (plan: IndexPlan) => void;
  signal?: AbortSignal;
}

export interface IndexPlan {
  context: WorkspaceContext;
  skipped: SkippedFile[];
  queued: { path: string; tokens: number; contentHash: string }[];
}

export interface IndexReport {
  files: number;
  tokens: number;
  encodedTokens: number;
  skipped: SkippedFile[];
  excluded: { path: string; tokens: number }[];
  store: LoadReport;
  seconds: number;
}

/** Default store location: per workspace, under the user's cache directory (never inside the workspace). */
export function defaultStoreDir(root: string): string {
  const cache = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  const id = createHash('sha256').update(path.resolve(root)).digest('hex').slice(0, 16);
  return path.join(cache, 'panorama', `${path.basename(path.resolve(root))}-${id}`);
}

export class WorkspaceIndex {
  private watcher?: WorkspaceWatcher;
  private applying: Promise<void> = Promise.resolve();

  private constructor(
    readonly root: string,
    readonly context: WorkspaceContext,
    private readonly store: ContextStore | undefined,
    private readonly options: IndexOptions,
  ) {}

  /**
   * Opens (or builds) the index of `root`: restores what the store holds, scans
   * the folder, and encodes what is new or changed, saving as it goes.
   */
  static async open(root: string, model: SalaModel, tokenizer: Tokenizer, options: IndexOptions): Promise<{ index: WorkspaceIndex; report: IndexReport }> {
    const started = performance.now();
    const store = options.storeDir ? new ContextStore(options.storeDir, options.modelId) : undefined;
    const loaded = store ? await store.load(model) : { state: undefined, report: { notes: [], restoredTokens: 0, lostFiles: [] } };
    for (const note of loaded.report.notes) options.log?.(`index: ${note}`);
    // A background compaction replaces the sequence: save the result once it lands.
    const contextOptions = {
      ...options,
      onCompacted: () => void index.save().catch((err: unknown) => options.log?.(`index: saving after compaction failed: ${err instanceof Error ? err.message : String(err)}`)),
    };
    const context = loaded.state ? WorkspaceContext.restore(model, tokenizer, contextOptions, loaded.state) : new WorkspaceContext(model, tokenizer, contextOptions);
    const index = new WorkspaceIndex(root, context, store, options);

    options.onProgress?.({ phase: 'scan', filesDone: 0, filesTotal: 0, tokensDone: 0, tokensTotal: 0, tokensPerSecond: 0 });
    const { files, skipped } = await scanWorkspace(root, { exclude: options.exclude, maxFileBytes: options.maxFileBytes, signal: options.signal, log: options.log });
    const encodedTokens = await index.applyScan(files, skipped);
    const stats = context.stats();
    return {
      index,
      report: {
        files: stats.files,
        tokens: stats.liveTokens,
        encodedTokens,
        skipped,
        excluded: stats.excluded,
        store: loaded.report,
        seconds: (performance.now() - started) / 1000,
      },
    };
  }

  /** Brings the context in line with a full scan: removed files tombstoned, new/changed ones encoded in layout order. */
  private async applyScan(files: WorkspaceFile[], skipped: SkippedFile[]): Promise<number> {
    const { context, options } = this;
    const onDisk = new Set(files.map((f) => f.path));
    const deleted = context
      .layout()
      .map((s) => s.path)
      .filter((p) => !onDisk.has(p));
    const pending: (ContextFile & { tokens: number })[] = [];
    for (const file of files) {
      const span = context.span(file.path);
      if (span && span.contentHash === file.contentHash) continue;
      // A file left out for the budget last time keeps its count: no need to tokenize it again to plan.
      const left = context.excludedFiles().get(file.path);
      if (left && left.contentHash === file.contentHash) pending.push({ ...file, tokens: left.tokens });
      else {
        const encoded = context.format.file(file.path, file.text);
        pending.push({ ...file, encoded, tokens: encoded.ids.length });
      }
    }
    // Rarely edited first, recently edited last; what does not fit the budget is listed.
    const room = (options.budget ?? 1_000_000) - context.stats().liveTokens;
    const editCount = (file: string) => {
      const span = context.span(file);
      return span ? span.editCount + 1 : 0;
    };
    const plan = planLayout(
      pending.map((f) => ({ path: f.path, tokens: f.tokens, editCount: editCount(f.path), mtimeMs: f.mtimeMs })),
      Math.max(0, room),
    );
    for (const excluded of plan.excluded) options.log?.(`index: ${excluded.path} (${excluded.tokens} tokens) does not fit the token budget; left out`);
    const hashOf = new Map(pending.map((f) => [f.path, f.contentHash]));
    context.setExcluded(
      plan.excluded.map((e) => ({ path: e.path, tokens: e.tokens, contentHash: hashOf.get(e.path) ?? '' })),
      [...context.excludedFiles().keys()].filter((p) => !onDisk.has(p) || plan.included.some((i) => i.path === p)),
    );
    const byPath = new Map(pending.map((f) => [f.path, f]));
    const ordered = plan.included
      .map((entry) => byPath.get(entry.path))
      .filter((f): f is ContextFile & { tokens: number } => f !== undefined)
      .map((f) => ({ ...f, encoded: f.encoded ?? context.format.file(f.path, f.text) }));
    options.onPlan?.({ context, skipped, queued: ordered.map((f) => ({ path: f.path, tokens: f.encoded.ids.length, contentHash: f.contentHash })) });

    const tokensTotal = plan.includedTokens;
    const started = performance.now();
    let tokensDone = 0;
    let filesDone = 0;
    let sinceSave = 0;
    const saveEvery = options.saveEvery ?? 65_536;
    const report = () => {
      const seconds = (performance.now() - started) / 1000;
      const rate = seconds > 0 ? tokensDone / seconds : 0;
      options.onProgress?.({
        phase: 'encode',
        filesDone,
        filesTotal: ordered.length,
        tokensDone,
        tokensTotal,
        tokensPerSecond: rate,
        etaSeconds: rate > 0 ? (tokensTotal - tokensDone) / rate : undefined,
      });
    };
    report();
    await context.update([], deleted);
    // Encode in batches and save after each: an interrupted index resumes from the last save.
    for (let i = 0; i < ordered.length;) {
      const batch: ContextFile[] = [];
      let batchTokens = 0;
      while (i < ordered.length && (batch.length === 0 || batchTokens < saveEvery - sinceSave)) {
        batchTokens += ordered[i].encoded?.ids.length ?? 0;
        batch.push(ordered[i++]);
      }
      try {
        await context.update(batch, [], {
          signal: options.signal,
          onFile: (_path, tokens) => {
            filesDone++;
            tokensDone += tokens;
            report();
          },
        });
      } finally {
        await this.save();
      }
      sinceSave = 0;
    }
    await this.save();
    options.onProgress?.({
      phase: 'ready',
      filesDone,
      filesTotal: ordered.length,
      tokensDone,
      tokensTotal,
      tokensPerSecond: tokensDone / Math.max((performance.now() - started) / 1000, 1e-9),
    });
    return tokensDone;
  }

  async save(): Promise<void> {
    const { store } = this;
    if (!store) return;
    await this.context.withState((state) => store.save(this.context.model, state));
  }

  /** Applies a watcher batch (edits, deletes) and saves. Batches apply one at a time, in order. */
  apply(batch: ChangeBatch): Promise<void> {
    const run = this.applying.then(async () => {
      const changed = batch.changed.map((f) => ({ ...f }));
      const deleted = [...batch.deleted, ...batch.skipped.map((s) => s.path).filter((p) => this.context.span(p))];
      await this.context.update(changed, deleted);
      await this.save();
    });
    this.applying = run.catch((err: unknown) => this.options.log?.(`index: applying changes failed: ${err instanceof Error ? err.message : String(err)}`));
    return run;
  }

  /** Keeps the context fresh from file-system events until close(). */
  async watch(onApplied?: (batch: ChangeBatch) => void): Promise<void> {
    if (this.watcher) return;
    const baseline = this.context.layout().map((s) => ({ path: s.path, contentHash: s.contentHash, mtimeMs: s.mtimeMs, size: s.size ?? -1 }));
    this.watcher = new WorkspaceWatcher(this.root, { exclude: this.options.exclude, maxFileBytes: this.options.maxFileBytes, log: this.options.log, baseline });
    this.watcher.onChanges((batch) => {
      void this.apply(batch).then(
        () => onApplied?.(batch),
        () => undefined,
      );
    });
    await this.watcher.start();
  }

  ask(question: string, options?: AskOptions): AsyncGenerator<string, AskResult> {
    return this.context.ask(question, options);
  }

  complete(file: string, prefix: string, suffix: string, options?: CompleteOptions) {
    return this.context.complete(file, prefix, suffix, options);
  }

  async close(): Promise<void> {
    await this.watcher?.close();
    await this.applying;
  }
}
