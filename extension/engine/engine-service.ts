// The engine as the rest of the extension sees it: one EngineClient configured
// from settings and the workspace, its failures turned into an actionable
// notification, restarted when a setting that shapes it changes. With
// panorama.backend = remote it does not run (no local indexing).

import { statSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { PROTOCOL_VERSION, type EngineStatus, type InitializeParams } from '../../engine/server/protocol.js';
import { readSettings } from '../config.js';
import { EngineClient, type ClientState } from './client.js';
import { discoverEngine } from './discovery.js';

const ENGINE_SETTINGS = ['panorama.enginePath', 'panorama.nodePath', 'panorama.modelPath', 'panorama.device', 'panorama.cudaLibraryPath'];

export class EngineService implements vscode.Disposable {
  readonly client: EngineClient;
  private status: EngineStatus | undefined;
  private readonly statusEmitter = new vscode.EventEmitter<void>();
  /** Fires when the client state or the engine status changes. */
  readonly onDidChange = this.statusEmitter.event;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
    readonly workspaceRoot: string,
  ) {
    this.client = new EngineClient({
      logger: log,
      discover: () => {
        const settings = readSettings();
        return discoverEngine({
          enginePathSetting: settings.enginePath,
          nodePathSetting: settings.nodePath,
          cudaLibraryPathSetting: settings.cudaLibraryPath,
          workspaceTrusted: vscode.workspace.isTrusted,
          extensionPath: context.extensionPath,
          hostExecPath: process.execPath,
          platform: process.platform,
          arch: process.arch,
          isFile: (file) => statSync(file, { throwIfNoEntry: false })?.isFile() ?? false,
          isDirectory: (dir) => statSync(dir, { throwIfNoEntry: false })?.isDirectory() ?? false,
        });
      },
      initializeParams: () => this.initializeParams(),
    });
    this.disposables.push(
      this.client,
      this.statusEmitter,
      this.client.onStatus((status) => this.applyStatus(status)),
      this.client.onState((state) => this.onClientState(state)),
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (event.affectsConfiguration('panorama.backend')) {
          if (this.wanted) {
            log.info('backend is local again: starting the engine');
            void this.client.start();
          } else {
            log.info('backend is remote: stopping the local engine');
            void this.client.stop();
          }
        } else if (this.wanted && ENGINE_SETTINGS.some((key) => event.affectsConfiguration(key))) {
          log.info('engine settings changed: restarting the engine');
          void this.client.restart();
        }
      }),
      vscode.workspace.onDidGrantWorkspaceTrust(() => {
        if (this.wanted) void this.client.restart();
      }),
    );
  }

  get lastStatus(): EngineStatus | undefined {
    return this.status;
  }

  /** A status from a notification, or the one reindex/setPaused answer with. */
  applyStatus(status: EngineStatus): void {
    this.status = status;
    void vscode.commands.executeCommand('setContext', 'panorama.paused', status.state === 'paused');
    this.statusEmitter.fire();
  }

  /** Whether the local engine should run: not while a remote server answers. */
  get wanted(): boolean {
    return readSettings().backend === 'local';
  }

  start(): Promise<void> {
    return this.wanted ? this.client.start() : Promise.resolve();
  }

  private initializeParams(): InitializeParams {
    const settings = readSettings();
    // under the extension's per-user storage; the engine adds one subfolder per workspace root
    const storeDir = path.join(this.context.globalStorageUri.fsPath, 'index');
    const filesExclude = vscode.workspace.getConfiguration('files').get<Record<string, unknown>>('exclude', {});
    const exclude = Object.entries(filesExclude)
      .filter(([, enabled]) => enabled === true)
      .map(([glob]) => glob);
    const params: InitializeParams = { protocolVersion: PROTOCOL_VERSION, workspaceRoot: this.workspaceRoot, storeDir, device: settings.device, exclude };
    if (settings.modelPath !== '') params.modelDir = settings.modelPath;
    this.log.info(`initialize: workspace ${this.workspaceRoot}, store ${storeDir}, device ${settings.device}${params.modelDir ? `, model ${params.modelDir}` : ''}`);
    return params;
  }

  private onClientState(state: ClientState): void {
    void vscode.commands.executeCommand('setContext', 'panorama.engineRunning', state.kind === 'running');
    if (state.kind !== 'running') this.status = undefined;
    this.statusEmitter.fire();
    if (state.kind === 'failed') void this.notifyFailure(state.message);
  }

  private async notifyFailure(message: string): Promise<void> {
    const choice = await vscode.window.showErrorMessage(`Panorama's engine could not start: ${message}`, 'Show Log', 'Retry');
    if (choice === 'Show Log') this.log.show();
    if (choice === 'Retry') await this.client.restart();
  }

  dispose(): void {
    for (const disposable of this.disposables) disposable.dispose();
  }
}
