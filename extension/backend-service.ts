// Which backend answers, from the settings: the local engine, or a remote
// OpenAI-compatible server with the API key from SecretStorage. In remote mode a
// file watcher keeps the workspace prefix fresh; the client and the prefix are
// rebuilt when a remote setting, the key or files.exclude changes. Everything
// else (chat, palette, completions, status bar) asks this service for current().

import * as vscode from 'vscode';
import { LocalBackend, type AssistantBackend } from './backend.js';
import { readSettings, REMOTE_API_KEY_SECRET, type RemoteSettings } from './config.js';
import { EngineRequestError, errorMessage } from './engine/client.js';
import type { EngineService } from './engine/engine-service.js';
import { CancelledError, RemoteBackend, type RemoteRequestInfo } from './remote/remote-backend.js';
import { RemoteClient, RemoteError } from './remote/remote-client.js';
import { WorkspacePrefix } from './remote/workspace-prefix.js';
import { remoteStatusView, statusView, type StatusView } from './status-text.js';

interface RemoteState {
  backend: RemoteBackend | undefined;
  /** Why there is no backend (a setting is missing or wrong). */
  problem: string | undefined;
  baseUrl: string;
  settings: RemoteSettings;
  prefix: WorkspacePrefix | undefined;
  last?: RemoteRequestInfo;
  lastError?: string;
}

export class BackendService implements vscode.Disposable {
  private readonly local: LocalBackend;
  private remote: RemoteState | undefined;
  private apiKey: string | undefined;
  private watcher: vscode.FileSystemWatcher | undefined;
  private readonly changeEmitter = new vscode.EventEmitter<void>();
  /** Fires when the backend, its readiness or its last request changes. */
  readonly onDidChange = this.changeEmitter.event;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly engine: EngineService,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.local = new LocalBackend(engine.client);
    this.disposables.push(
      this.changeEmitter,
      engine.onDidChange(() => this.changeEmitter.fire()),
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (['panorama.backend', 'panorama.remote', 'files.exclude'].some((key) => event.affectsConfiguration(key))) this.configure();
      }),
      context.secrets.onDidChange((event) => {
        if (event.key === REMOTE_API_KEY_SECRET) void this.loadKey().then(() => this.configure());
      }),
      { dispose: () => this.watcher?.dispose() },
    );
  }

  /** Reads the key once; call before the first request. */
  async initialize(): Promise<void> {
    await this.loadKey();
    this.configure();
  }

  get isRemote(): boolean {
    return this.remote !== undefined;
  }

  /** The backend that answers now. A misconfigured remote one still answers, with the problem as its error. */
  current(): AssistantBackend {
    if (this.remote === undefined) return this.local;
    return this.remote.backend ?? new UnconfiguredBackend(this.remote.problem ?? 'the remote backend is not set up');
  }

  /** Whether asking makes sense now (the chat shows the label otherwise). */
  get ready(): boolean {
    return this.remote !== undefined ? this.remote.backend !== undefined : this.engine.client.isRunning;
  }

  statusView(): StatusView {
    if (this.remote === undefined) return statusView(this.engine.client.state, this.engine.lastStatus);
    const { baseUrl, settings, problem, last, lastError } = this.remote;
    return remoteStatusView({ baseUrl, model: settings.model, problem, last, lastError });
  }

  /** A failure worded for the user, or undefined when the request was cancelled. */
  describeError(error: unknown): string | undefined {
    if (error instanceof CancelledError || (error instanceof EngineRequestError && error.kind === 'cancelled')) return undefined;
    return errorMessage(error);
  }

  /** Records a remote failure for the status bar (local failures show through the engine's state). */
  noteFailure(error: unknown): void {
    if (this.remote === undefined || !(error instanceof RemoteError)) return;
    this.remote.lastError = error.message;
    this.changeEmitter.fire();
  }

  private async loadKey(): Promise<void> {
    this.apiKey = (await this.context.secrets.get(REMOTE_API_KEY_SECRET)) || undefined;
  }

  private configure(): void {
    const settings = readSettings();
    const root = this.engine.workspaceRoot;
    if (settings.backend !== 'remote') {
      if (this.remote !== undefined) this.log.info('backend: the local engine');
      this.remote = undefined;
      this.watcher?.dispose();
      this.watcher = undefined;
      this.changeEmitter.fire();
      return;
    }
    const exclude = Object.entries(vscode.workspace.getConfiguration('files').get<Record<string, unknown>>('exclude', {}))
      .filter(([, enabled]) => enabled === true)
      .map(([glob]) => glob);
    const prefix = new WorkspacePrefix(root, { budgetChars: settings.remote.contextChars, exclude, log: (message) => this.log.info(message) });
    let backend: RemoteBackend | undefined;
    let problem: string | undefined;
    let baseUrl = settings.remote.baseUrl;
    try {
      const client = new RemoteClient({ baseUrl: settings.remote.baseUrl, apiKey: this.apiKey, model: settings.remote.model });
      baseUrl = client.baseUrl;
      backend = new RemoteBackend({ client, prefix, onRequestDone: (info) => this.onRemoteRequest(info) });
      const url = new URL(client.baseUrl);
      if (this.apiKey !== undefined && url.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) {
        this.log.warn(`backend: the API key goes to ${url.host} over plain http; use https unless the network between is trusted`);
      }
    } catch (error) {
      problem = errorMessage(error);
    }
    this.remote = { backend, problem, baseUrl, settings: settings.remote, prefix };
    this.log.info(
      `backend: remote ${baseUrl || '(no baseUrl)'}${settings.remote.model ? `, model ${settings.remote.model}` : ''}, API key ${this.apiKey ? 'set' : 'not set'}, context ≤ ${settings.remote.contextChars.toLocaleString('en')} chars${problem ? ` — ${problem}` : ''}`,
    );
    // any change on disk may change the prefix; the next request rescans (stat first, reads only what changed)
    this.watcher?.dispose();
    this.watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(root, '**/*'));
    const markDirty = (): void => this.remote?.prefix?.markDirty();
    this.watcher.onDidCreate(markDirty);
    this.watcher.onDidChange(markDirty);
    this.watcher.onDidDelete(markDirty);
    this.changeEmitter.fire();
  }

  private onRemoteRequest(info: RemoteRequestInfo): void {
    if (this.remote === undefined) return;
    this.remote.last = info;
    this.remote.lastError = undefined;
    const usage =
      info.usage !== undefined ? `, ${info.usage.promptTokens} prompt tokens${info.usage.cachedTokens !== undefined ? ` (${info.usage.cachedTokens} cached)` : ''}` : '';
    const first = info.firstTokenMs !== undefined ? `first token ${Math.round(info.firstTokenMs)} ms, ` : '';
    this.log.debug(`remote ${info.kind}: ${first}${Math.round(info.totalMs)} ms${usage}, prefix ${info.prefix.hash} (${info.prefix.chars} chars)`);
    this.changeEmitter.fire();
  }

  dispose(): void {
    for (const disposable of this.disposables) disposable.dispose();
  }
}

/** Remote mode without a usable setting: every request fails with what to fix. */
class UnconfiguredBackend implements AssistantBackend {
  readonly kind = 'remote';
  constructor(private readonly problem: string) {}
  ask(): Promise<never> {
    return Promise.reject(new RemoteError('config', this.problem));
  }
  complete(): Promise<never> {
    return Promise.reject(new RemoteError('config', this.problem));
  }
}
