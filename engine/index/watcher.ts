// Watches the workspace (chokidar) and reports what changed, in batches: the context engine
// wants "these files changed, these are gone" once a burst is over, not one event per write.
//
// A batch is relative to what this watcher last reported (or to the baseline it started
// from): a file re-saved with the same bytes is not reported; one created and deleted within
// a burst is not reported at all; a rename is a deletion plus a change.
import { realpathSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { isIgnoreFile } from './ignore.js';
import {
  createScanContext,
  guardOutcome,
  inspectWorkspacePath,
  isInside,
  toWorkspacePath,
  walkWorkspace,
  type FileOutcome,
  type ScanContext,
  type ScanOptions,
  type SkippedFile,
  type SkipReason,
  type WorkspaceFile,
} from './scan.js';

export interface ChangeBatch {
  changed: WorkspaceFile[];
  deleted: string[];
  /** Files that changed but stay out of the context (or newly left it), each reported once per reason. */
  skipped: SkippedFile[];
}

/** What the caller already holds for a file, typically from the scan that came before the watcher. */
export type BaselineFile = Pick<WorkspaceFile, 'path' | 'contentHash' | 'size' | 'mtimeMs'>;

export interface WatcherOptions extends ScanOptions {
  /** Quiet time that ends a burst. Default 150 ms. */
  debounceMs?: number;
  /** A batch is delivered at the latest this long after the burst's first event. Default 2000 ms. */
  maxWaitMs?: number;
  /**
   * The files the caller holds. start() then reports, in the first batch, every difference
   * between it and the disk (edits made between the caller's scan and the watcher's start).
   * Without it, start() reads the workspace itself and reports only later changes.
   */
  baseline?: readonly BaselineFile[];
}

type ChangeListener = (batch: ChangeBatch) => void;

const READ_CONCURRENCY = 32;
const noop = () => {};

export class WorkspaceWatcher {
  private readonly root: string;
  private readonly options: WatcherOptions;
  private readonly debounceMs: number;
  private readonly maxWaitMs: number;
  private readonly log: (message: string) => void;
  private context: ScanContext | undefined;
  private fsWatcher: FSWatcher | undefined;
  private state: 'new' | 'starting' | 'running' | 'closed' = 'new';
  private readonly listeners = new Set<ChangeListener>();
  /** Batches produced while nobody listened; the first listener gets them. */
  private heldBatches: ChangeBatch[] = [];
  /** path → sha256 of the version last reported (or given in the baseline). */
  private readonly knownHashes = new Map<string, string>();
  /** path → why it was last reported as skipped, so a file that stays skipped is reported once. */
  private readonly skipReasons = new Map<string, SkipReason>();
  /** Whether chokidar's paths are directories, as last seen with stats. */
  private readonly isDirectoryByPath = new Map<string, boolean>();
  private pendingPaths = new Set<string>();
  private ignoreRulesChanged = false;
  private debounceTimer: NodeJS.Timeout | undefined;
  private maxWaitTimer: NodeJS.Timeout | undefined;
  /** Flushes run one after another, so `knownHashes` only ever moves forward. */
  private work: Promise<void> = Promise.resolve();

  constructor(root: string, options: WatcherOptions = {}) {
    this.root = root;
    this.options = options;
    this.debounceMs = options.debounceMs ?? 150;
    this.maxWaitMs = options.maxWaitMs ?? 2000;
    this.log = options.log ?? noop;
  }

  /** Resolves once the watcher is ready and knows the current state of every file. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error('WorkspaceWatcher.start() may be called only once.');
    this.options.signal?.throwIfAborted();
    this.state = 'starting';
    this.options.signal?.addEventListener('abort', () => void this.close(), { once: true });
    const context = await createScanContext(this.root, this.options);
    // Skips are logged by this class, once per change of reason, not on every event.
    this.context = { ...context, log: noop };
    const initialStats = new Map<string, Stats | undefined>();
    let collectingInitialScan = true;
    const fsWatcher = watch(context.root, {
      ignoreInitial: false,
      alwaysStat: true,
      followSymlinks: true,
      ignored: (absolutePath, stats) => this.isIgnoredByWatcher(absolutePath, stats),
    });
    this.fsWatcher = fsWatcher;
    fsWatcher.on('error', (error) => this.log(`watcher error: ${error instanceof Error ? error.message : String(error)}`));
    fsWatcher.on('all', (event, absolutePath, stats) => {
      const workspacePath = toWorkspacePath(context.root, absolutePath);
      if (workspacePath === '' || workspacePath.startsWith('..')) return;
      if (event === 'unlink' || event === 'unlinkDir') this.isDirectoryByPath.delete(workspacePath);
      if (collectingInitialScan && event === 'add') initialStats.set(workspacePath, stats);
      else if (event === 'unlinkDir') this.markDirectoryDirty(workspacePath);
      else if (event === 'add' || event === 'change' || event === 'unlink') this.markDirty(workspacePath);
    });
    await new Promise<void>((resolve) =>
      fsWatcher.once('ready', () => {
        collectingInitialScan = false;
        resolve();
      }),
    );
    if (this.isClosed()) return;

    const baseline = this.options.baseline;
    if (baseline) {
      // Trust the caller's hashes where size and mtime still match; look again at the rest.
      const baselineByPath = new Map(baseline.map((file) => [file.path, file]));
      for (const file of baseline) {
        this.knownHashes.set(file.path, file.contentHash);
        if (!initialStats.has(file.path)) this.markDirty(file.path);
      }
      for (const [workspacePath, stats] of initialStats) {
        const known = baselineByPath.get(workspacePath);
        if (!known || !stats || known.size !== stats.size || known.mtimeMs !== stats.mtimeMs) this.markDirty(workspacePath);
      }
    } else {
      const initialPaths = [...initialStats.keys()].sort();
      this.work = this.work.then(async () => {
        await this.processPaths(initialPaths);
      });
      await this.work;
    }
    if (this.state === 'starting') this.state = 'running';
  }

  // A method, not a field test: TypeScript would narrow `state` across the awaits in start().
  private isClosed(): boolean {
    return this.state === 'closed';
  }

  /** Registers a listener; returns the function that removes it. */
  onChanges(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    if (this.heldBatches.length > 0) {
      const held = this.heldBatches;
      this.heldBatches = [];
      setImmediate(() => held.forEach((batch) => this.deliver(batch)));
    }
    return () => this.listeners.delete(listener);
  }

  /** Stops watching; pending changes are dropped and no batch is delivered afterwards. */
  async close(): Promise<void> {
    if (this.isClosed()) return;
    this.state = 'closed';
    clearTimeout(this.debounceTimer);
    clearTimeout(this.maxWaitTimer);
    await this.fsWatcher?.close();
    await this.work;
  }

  private markDirty(workspacePath: string): void {
    if (this.isClosed()) return;
    this.pendingPaths.add(workspacePath);
    if (isIgnoreFile(workspacePath)) {
      this.ignoreRulesChanged = true;
      this.context?.rules.invalidate(workspacePath);
    }
    this.scheduleFlush();
  }

  // chokidar reports the files of a removed directory too, but only those it tracked.
  private markDirectoryDirty(directory: string): void {
    const prefix = `${directory}/`;
    for (const knownPath of this.knownHashes.keys()) {
      if (knownPath.startsWith(prefix)) this.markDirty(knownPath);
    }
  }

  // Debounce with a cap: a burst ends after `debounceMs` of quiet, or `maxWaitMs` after it began.
  private scheduleFlush(): void {
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => this.startFlush(), this.debounceMs);
    this.maxWaitTimer ??= setTimeout(() => this.startFlush(), this.maxWaitMs);
  }

  private startFlush(): void {
    clearTimeout(this.debounceTimer);
    clearTimeout(this.maxWaitTimer);
    this.debounceTimer = undefined;
    this.maxWaitTimer = undefined;
    this.work = this.work
      .then(() => this.flush())
      .catch((error: unknown) => {
        this.log(`watcher could not process changes: ${error instanceof Error ? error.message : String(error)}`);
      });
  }

  private async flush(): Promise<void> {
    if (this.isClosed()) return;
    const paths = this.pendingPaths;
    this.pendingPaths = new Set();
    if (this.ignoreRulesChanged) {
      this.ignoreRulesChanged = false;
      await this.reevaluateIgnoreRules(paths);
    }
    if (paths.size === 0) return;
    const batch = await this.processPaths([...paths].sort());
    if (this.isClosed()) return;
    if (batch.changed.length + batch.deleted.length + batch.skipped.length > 0) this.deliver(batch);
  }

  /**
   * After a `.gitignore` or `.panoramaignore` changed: every known file the rules now exclude
   * must leave the context, and every file they now let in must join it.
   */
  private async reevaluateIgnoreRules(paths: Set<string>): Promise<void> {
    const context = this.context;
    const fsWatcher = this.fsWatcher;
    if (!context || !fsWatcher) return;
    const { candidates } = await walkWorkspace(context);
    const candidatePaths = new Set(candidates.map((candidate) => candidate.path));
    for (const knownPath of this.knownHashes.keys()) {
      if (!candidatePaths.has(knownPath)) paths.add(knownPath);
    }
    // chokidar did not enter directories that were ignored until now: point it at them.
    const watchedDirectories = new Set(Object.keys(fsWatcher.getWatched()));
    const directoriesToWatch = new Set<string>();
    for (const candidate of candidates) {
      if (this.knownHashes.has(candidate.path)) continue;
      paths.add(candidate.path);
      let directory = path.dirname(candidate.absolutePath);
      if (watchedDirectories.has(directory)) continue;
      while (!watchedDirectories.has(path.dirname(directory)) && path.dirname(directory) !== directory) directory = path.dirname(directory);
      directoriesToWatch.add(directory);
    }
    if (directoriesToWatch.size > 0) fsWatcher.add([...directoriesToWatch]);
  }

  /** Reads the given paths and folds what it finds into the known state; returns what differs. */
  private async processPaths(paths: readonly string[]): Promise<ChangeBatch> {
    const context = this.context;
    const batch: ChangeBatch = { changed: [], deleted: [], skipped: [] };
    if (!context) return batch;
    const outcomes = new Array<FileOutcome>(paths.length);
    let next = 0;
    const worker = async () => {
      while (next < paths.length) {
        const index = next++;
        outcomes[index] = await guardOutcome(context, paths[index], () => inspectWorkspacePath(context, paths[index]));
      }
    };
    await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, paths.length) }, worker));

    paths.forEach((workspacePath, index) => {
      const outcome = outcomes[index];
      if (outcome.kind === 'file') {
        this.skipReasons.delete(workspacePath);
        if (this.knownHashes.get(workspacePath) !== outcome.file.contentHash) {
          this.knownHashes.set(workspacePath, outcome.file.contentHash);
          batch.changed.push(outcome.file);
        }
        return;
      }
      // Gone, or no longer fit for the context: either way the caller must drop it.
      if (this.knownHashes.delete(workspacePath)) batch.deleted.push(workspacePath);
      if (outcome.kind === 'vanished') {
        this.skipReasons.delete(workspacePath);
      } else if (this.skipReasons.get(workspacePath) !== outcome.skipped.reason) {
        this.skipReasons.set(workspacePath, outcome.skipped.reason);
        this.log(`skipped ${workspacePath}: ${outcome.skipped.reason} (${outcome.skipped.detail})`);
        batch.skipped.push(outcome.skipped);
      }
    });
    return batch;
  }

  private deliver(batch: ChangeBatch): void {
    if (this.listeners.size === 0) {
      this.heldBatches.push(batch);
      return;
    }
    for (const listener of this.listeners) {
      try {
        listener(batch);
      } catch (error) {
        this.log(`a change listener threw: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }

  /**
   * chokidar's filter: keeps it out of ignored directories (so it never watches node_modules)
   * and out of directories reached through symlinks that loop or leave the workspace.
   */
  private isIgnoredByWatcher(absolutePath: string, stats: Stats | undefined): boolean {
    const context = this.context;
    if (!context) return false;
    const workspacePath = toWorkspacePath(context.root, absolutePath);
    if (workspacePath === '') return false;
    if (workspacePath.startsWith('..')) return true;
    // chokidar asks first with stats (while listing), later sometimes without; directory-only
    // patterns need to know, so remember the answer instead of calling stat again.
    let isDirectory = stats?.isDirectory();
    if (isDirectory === undefined) isDirectory = this.isDirectoryByPath.get(workspacePath) ?? isDirectorySync(absolutePath);
    this.isDirectoryByPath.set(workspacePath, isDirectory);
    if (context.rules.match(workspacePath, isDirectory)) return true;
    return isDirectory && reachesOutsideOrLoops(context, workspacePath, absolutePath);
  }
}

function isDirectorySync(absolutePath: string): boolean {
  try {
    return statSync(absolutePath).isDirectory();
  } catch {
    return false;
  }
}

function reachesOutsideOrLoops(context: ScanContext, workspacePath: string, absolutePath: string): boolean {
  let realPath: string;
  try {
    realPath = realpathSync(absolutePath);
  } catch {
    return true;
  }
  // No symlink on the way: the common case costs one realpath.
  if (realPath === path.join(context.realRoot, workspacePath)) return false;
  if (!isInside(context.realRoot, realPath)) return true;
  // A loop: the link leads to a directory that holds one of the directories above it.
  for (let ancestor = path.dirname(absolutePath); isInside(context.root, ancestor); ancestor = path.dirname(ancestor)) {
    try {
      if (isInside(realPath, realpathSync(ancestor))) return true;
    } catch {
      return true;
    }
    if (ancestor === context.root) break;
  }
  return false;
}
