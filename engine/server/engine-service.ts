// One workspace held as context, as both transports (stdio JSON-RPC and HTTP) see
// it: opening and indexing in the background, watching, pause/resume, reindex,
// ask and complete with cancellation, and the status a client shows. Requests
// queue on the context's own lock; this class adds no second queue.
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { SalaModel } from '../model/sala-model.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { WorkspaceIndex, type IndexProgress } from '../context/workspace-index.js';
import type { CompletionBreakdown } from '../context/workspace-context.js';
import { WorkspaceWatcher, type ChangeBatch } from '../index/watcher.js';
import type { AnswerOverlay, WorkspaceMap } from '../context/workspace-map.js';
import type { CodeSelection } from '../vocabulary.js';
import { MapState } from './map-state.js';
import type { AskResult, CompleteResult, EngineNotifications, EngineStatus } from './protocol.js';

export type LogLevel = EngineNotifications['panorama/log']['level'];

export interface EngineServiceOptions {
  /** Absolute workspace folder. */
  root: string;
  /** This workspace's index folder (see workspaceStoreDir); none = in memory only. */
  storeDir?: string;
  model: SalaModel;
  tokenizer: Tokenizer;
  /** Model fingerprint for the store (modelFingerprint). */
  modelId: string;
  exclude?: readonly string[];
  budget?: number;
  chunkSize?: number;
  maxFileBytes?: number;
  /** Keep the context fresh from file-system events (default true). */
  watch?: boolean;
  log?: (level: LogLevel, message: string) => void;
}

/** The workspace is not open yet (indexing, paused before the first open, or failed). */
export class EngineNotReadyError extends Error {}

/** A complete() that was cancelled: it has no partial result worth showing. */
export class RequestCancelledError extends Error {}

export interface AskRequest {
  question: string;
  selection?: CodeSelection;
  maxTokens?: number;
  temperature?: number;
}

export interface CompleteRequest {
  path: string;
  prefix: string;
  suffix: string;
  maxTokens?: number;
  stop?: string[];
  /** An editor's inline completion (default): a short window restated, generation stopped where the suggestion ends. False: the prefix and suffix are the whole prompt (/v1/completions). */
  inline?: boolean;
}

/** Counters for /metrics; monotonic over the service's life. */
export interface ServiceCounters {
  generatedTokens: number;
  promptTokens: number;
  generations: number;
  cancelled: number;
  /** Completion prefix tokens whose state was reused rather than fed again (the prefix cache's hits). */
  reusedTokens: number;
  /** Completion tokens fed to the model (the prefix cache's misses, plus the suffix). */
  completionFedTokens: number;
}

/** Where a workspace's index lives under a base folder: one folder per workspace, named so a person can tell which. */
export function workspaceStoreDir(base: string, root: string): string {
  const id = createHash('sha256').update(path.resolve(root)).digest('hex').slice(0, 16);
  return path.join(base, `${path.basename(path.resolve(root))}-${id}`);
}

const PROGRESS_EVERY_MS = 250;

export class EngineService {
  private index?: WorkspaceIndex;
  private watcher?: WorkspaceWatcher;
  private state: EngineStatus['state'] = 'starting';
  private paused = false;
  private error?: string;
  private progress?: IndexProgress;
  private tokensPerSecond?: number;
  private lastRequest?: EngineStatus['lastRequest'];
  /** Watcher batches held while paused, applied in order on resume. */
  private pending: ChangeBatch[] = [];
  private opening?: { controller: AbortController; done: Promise<void> };
  /** Lifecycle operations (pause, resume, reindex, close) run one at a time. */
  private lifecycle: Promise<unknown> = Promise.resolve();
  private readonly inFlight = new Set<AbortController>();
  private readonly listeners = new Set<(status: EngineStatus) => void>();
  private lastProgressEmit = 0;
  private closed = false;
  private readonly mapState: MapState;
  readonly counters: ServiceCounters = { generatedTokens: 0, promptTokens: 0, generations: 0, cancelled: 0, reusedTokens: 0, completionFedTokens: 0 };

  constructor(readonly options: EngineServiceOptions) {
    this.mapState = new MapState(options.budget ?? 1_000_000);
  }

  get root(): string {
    return this.options.root;
  }

  /** Starts opening the workspace in the background; progress arrives as status events. */
  start(): void {
    this.startOpening();
  }

  /** Resolves when the current open (if any) has finished, successfully or not. */
  async whenSettled(): Promise<void> {
    await this.opening?.done;
  }

  onStatus(listener: (status: EngineStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  status(): EngineStatus {
    const stats = this.index?.context.stats();
    const progress = this.progress;
    const indexing = this.state === 'indexing' || this.state === 'starting';
    return {
      state: this.state,
      files: stats?.files ?? progress?.filesDone ?? 0,
      liveTokens: stats?.liveTokens ?? progress?.tokensDone ?? 0,
      deadTokens: stats?.deadTokens ?? 0,
      tokenBudget: this.options.budget ?? 1_000_000,
      progress: indexing && progress ? (progress.tokensTotal > 0 ? progress.tokensDone / progress.tokensTotal : 0) : undefined,
      tokensPerSecond: indexing ? progress?.tokensPerSecond : this.tokensPerSecond,
      device: this.options.model.device.kind,
      excludedFiles: stats?.excluded.length ?? 0,
      lastRequest: this.lastRequest,
      error: this.error,
    };
  }

  /** Requests waiting on or running in the context (for queue-depth metrics). */
  get activeRequests(): number {
    return this.inFlight.size;
  }

  private emit(): void {
    const status = this.status();
    for (const listener of this.listeners) listener(status);
  }

  private log(level: LogLevel, message: string): void {
    this.options.log?.(level, message);
  }

  private setState(state: EngineStatus['state'], error?: string): void {
    this.state = state;
    this.error = error;
    this.emit();
  }

  private startOpening(): void {
    const controller = new AbortController();
    this.progress = undefined;
    this.setState('indexing');
    const done = this.open(controller.signal).finally(() => {
      if (this.opening?.controller === controller) this.opening = undefined;
    });
    this.opening = { controller, done };
  }

  private async open(signal: AbortSignal): Promise<void> {
    const { options } = this;
    try {
      const { index, report } = await WorkspaceIndex.open(options.root, options.model, options.tokenizer, {
        storeDir: options.storeDir,
        modelId: options.modelId,
        exclude: options.exclude,
        budget: options.budget,
        chunkSize: options.chunkSize,
        maxFileBytes: options.maxFileBytes,
        signal,
        onProgress: (p) => this.onProgress(p),
        onPlan: (plan) => {
          this.mapState.planned(plan);
          this.emit();
        },
        log: (message) => this.log('debug', message),
      });
      if (signal.aborted) {
        await index.close();
        return;
      }
      this.index = index;
      this.mapState.finished();
      this.log(
        'info',
        `workspace ${options.root}: ${report.files} files, ${report.tokens} tokens (${report.encodedTokens} encoded now, ${report.store.restoredTokens} reopened) in ${report.seconds.toFixed(1)} s` +
          (report.excluded.length ? `; ${report.excluded.length} files left out for the token budget` : ''),
      );
      if (options.watch !== false) await this.startWatcher(index);
      this.setState(this.paused ? 'paused' : 'ready');
    } catch (err) {
      if (signal.aborted) return; // paused, reindexed or closed: what was encoded is saved
      const message = err instanceof Error ? err.message : String(err);
      this.log('error', `opening ${options.root} failed: ${message}`);
      this.setState('error', `opening the workspace failed: ${message}. Fix the cause and run Reindex.`);
    }
  }

  private onProgress(progress: IndexProgress): void {
    this.progress = progress;
    const now = performance.now();
    if (progress.phase !== 'ready' && now - this.lastProgressEmit < PROGRESS_EVERY_MS) return;
    this.lastProgressEmit = now;
    this.emit();
  }

  private async startWatcher(index: WorkspaceIndex): Promise<void> {
    const { options } = this;
    const baseline = index.context.layout().map((s) => ({ path: s.path, contentHash: s.contentHash, mtimeMs: s.mtimeMs, size: s.size ?? -1 }));
    const watcher = new WorkspaceWatcher(options.root, { exclude: options.exclude, maxFileBytes: options.maxFileBytes, baseline, log: (m) => this.log('debug', m) });
    watcher.onChanges((batch) => this.onBatch(index, batch));
    this.watcher = watcher;
    await watcher.start();
  }

  private onBatch(index: WorkspaceIndex, batch: ChangeBatch): void {
    if (index !== this.index) return;
    if (this.paused) {
      this.pending.push(batch);
      return;
    }
    this.applyBatch(index, batch);
  }

  private applyBatch(index: WorkspaceIndex, batch: ChangeBatch): void {
    this.mapState.applying(batch);
    this.emit();
    index.apply(batch).then(
      () => {
        this.mapState.applied(batch);
        this.log('debug', `applied ${batch.changed.length} changed and ${batch.deleted.length} deleted files`);
        this.emit();
      },
      (err: unknown) => {
        this.mapState.applied(batch);
        this.log('warn', `applying file changes failed: ${err instanceof Error ? err.message : String(err)}`);
      },
    );
  }

  private serialize<T>(work: () => Promise<T>): Promise<T> {
    const run = this.lifecycle.then(work);
    this.lifecycle = run.catch(() => undefined);
    return run;
  }

  /** Pausing stops indexing (an unfinished index keeps what it saved) and holds file changes; resuming applies them. */
  setPaused(paused: boolean): Promise<EngineStatus> {
    return this.serialize(async () => {
      if (this.closed || paused === this.paused) return this.status();
      this.paused = paused;
      if (paused) {
        const opening = this.opening;
        if (opening) {
          opening.controller.abort(new Error('paused'));
          await opening.done;
        }
        this.setState('paused');
      } else if (!this.index) {
        this.startOpening();
      } else {
        const held = this.pending;
        this.pending = [];
        for (const batch of held) this.applyBatch(this.index, batch);
        this.setState('ready');
      }
      return this.status();
    });
  }

  /** Drops the stored context and rebuilds it from the files; returns at once with state 'indexing'. */
  reindex(): Promise<EngineStatus> {
    return this.serialize(async () => {
      if (this.closed) return this.status();
      await this.stop('reindex');
      this.mapState.reset();
      if (this.options.storeDir) await rm(this.options.storeDir, { recursive: true, force: true });
      this.paused = false;
      this.log('info', `reindexing ${this.options.root}`);
      this.startOpening();
      return this.status();
    });
  }

  /** Stops opening, cancels requests and closes the index (which saves). */
  private async stop(reason: string): Promise<void> {
    const opening = this.opening;
    opening?.controller.abort(new Error(reason));
    for (const controller of this.inFlight) controller.abort(new Error(reason));
    await opening?.done;
    await this.watcher?.close();
    this.watcher = undefined;
    const index = this.index;
    this.index = undefined;
    this.pending = [];
    await index?.close();
  }

  close(): Promise<void> {
    return this.serialize(async () => {
      if (this.closed) return;
      this.closed = true;
      await this.stop('engine shutting down');
      this.listeners.clear();
    });
  }

  /** Throws EngineNotReadyError (with what to do) unless requests can run now. */
  assertReady(): void {
    this.requireIndex();
  }

  private requireIndex(): WorkspaceIndex {
    if (this.closed) throw new EngineNotReadyError('the engine is shutting down');
    if (this.index) return this.index;
    if (this.state === 'error') throw new EngineNotReadyError(this.error ?? 'the workspace failed to open');
    if (this.state === 'paused') throw new EngineNotReadyError('indexing is paused before the workspace was fully open; resume it first');
    const share = this.status().progress;
    throw new EngineNotReadyError(`the workspace is still being indexed${share !== undefined ? ` (${Math.floor(share * 100)}%)` : ''}; try again when it is ready`);
  }

  /** An AbortController tied to the caller's signal and to engine shutdown/reindex. */
  private track(signal?: AbortSignal): { controller: AbortController; dispose: () => void } {
    const controller = new AbortController();
    const forward = () => controller.abort(signal?.reason);
    if (signal?.aborted) controller.abort(signal.reason);
    else signal?.addEventListener('abort', forward, { once: true });
    this.inFlight.add(controller);
    return {
      controller,
      dispose: () => {
        signal?.removeEventListener('abort', forward);
        this.inFlight.delete(controller);
      },
    };
  }

  /** Tokens the text encodes to (for usage reports). */
  countTokens(text: string): number {
    return text.length === 0 ? 0 : this.options.tokenizer.encode(text, { addSpecialTokens: false }).length;
  }

  private record(kind: 'ask' | 'complete', started: number, promptTokens: number, generated: number, cancelled: boolean): void {
    const latencyMs = performance.now() - started;
    this.counters.generations++;
    this.counters.generatedTokens += generated;
    this.counters.promptTokens += promptTokens;
    if (cancelled) this.counters.cancelled++;
    this.lastRequest = { kind, latencyMs: Math.round(latencyMs), tokens: promptTokens + generated };
    if (generated > 0) this.tokensPerSecond = (generated / latencyMs) * 1000;
    this.emit();
  }

  /**
   * Streams an answer over the whole workspace. A cancelled ask resolves with
   * finishReason 'cancelled' and the text so far (it stops within one token).
   */
  async ask(request: AskRequest, options: { signal?: AbortSignal; onDelta?: (text: string) => void; requestId?: string } = {}): Promise<AskResult> {
    const index = this.requireIndex();
    const { controller, dispose } = this.track(options.signal);
    const started = performance.now();
    let text = '';
    try {
      const stream = index.ask(request.question, { selection: request.selection, maxTokens: request.maxTokens, temperature: request.temperature, signal: controller.signal });
      for (;;) {
        const next = await stream.next();
        if (next.done) {
          const { text: answer, locations, sources, finishReason, promptTokens } = next.value;
          this.record('ask', started, promptTokens, this.countTokens(answer), finishReason === 'cancelled');
          if (options.requestId !== undefined) this.mapState.answered(options.requestId, next.value, this.options.model.config.sparse.blockSize);
          return { text: answer, locations, sources, finishReason, promptTokens };
        }
        text += next.value;
        options.onDelta?.(next.value);
      }
    } catch (err) {
      // Aborted during the prefill (model.forward throws the signal's reason).
      if (!controller.signal.aborted) throw err;
      this.record('ask', started, 0, this.countTokens(text), true);
      return { text, locations: [], sources: [], finishReason: 'cancelled', promptTokens: 0 };
    } finally {
      dispose();
    }
  }

  /** The workspace as a map (see workspace-map.ts): files, their tokens and states, at most `maxCells` cells. */
  workspaceMap(maxCells?: number): WorkspaceMap {
    return this.mapState.map(this.index ? 'ready' : 'indexing', maxCells);
  }

  /** What the sparse layers read for one of the last answers asked with a requestId; undefined when it is not kept. */
  answerOverlay(requestId: string): AnswerOverlay | undefined {
    return this.mapState.overlay(requestId);
  }

  /** Inline completion after the context, with where its time went; throws RequestCancelledError when cancelled. */
  async complete(request: CompleteRequest, options: { signal?: AbortSignal; onDelta?: (text: string) => void } = {}): Promise<CompleteResult & { breakdown: CompletionBreakdown }> {
    const index = this.requireIndex();
    const { controller, dispose } = this.track(options.signal);
    const started = performance.now();
    try {
      const result = await index.complete(request.path, request.prefix, request.suffix, {
        maxTokens: request.maxTokens,
        stop: request.stop,
        inline: request.inline,
        signal: controller.signal,
        onDelta: options.onDelta,
      });
      const cancelled = controller.signal.aborted;
      this.counters.reusedTokens += result.reusedTokens;
      this.counters.completionFedTokens += result.fedTokens;
      this.record('complete', started, result.fedTokens, this.countTokens(result.text), cancelled);
      if (cancelled) throw new RequestCancelledError('the completion was cancelled');
      return { ...result, latencyMs: Math.round(performance.now() - started) };
    } catch (err) {
      if (err instanceof RequestCancelledError) throw err;
      if (!controller.signal.aborted) throw err;
      this.record('complete', started, 0, 0, true);
      throw new RequestCancelledError('the completion was cancelled');
    } finally {
      dispose();
    }
  }
}
