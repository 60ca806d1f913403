// Panorama: Select Model… — the shipped model, downloaded and added ones, "Download
// MiniCPM-SALA…" and "Add a folder…". The engine's own CLI does the work (`panorama models
// list|pull|add --json`, run like the engine itself), with PANORAMA_HOME in the extension's
// global storage and the Hugging Face token from SecretStorage as HF_TOKEN. The choice is
// the panorama.modelPath setting, so changing it restarts the engine as that setting always
// did, and a path set by hand keeps working. A status bar item shows the model.

import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { discoverEngine, type EngineLaunch } from './engine/discovery.js';

export const HF_TOKEN_SECRET = 'panorama.huggingFace.token';
const DEFAULT_REPO = 'openbmb/MiniCPM-SALA';

interface ListedModel {
  name: string;
  kind: 'default' | 'hub' | 'local';
  dir: string;
  parameters?: number;
  precision?: string;
  diskBytes?: number;
  problem?: string;
}

interface ModelList {
  home: string;
  models: ListedModel[];
  partial: { repo: string; dir: string; bytes: number }[];
}

type PullEvent =
  | { type: 'log'; message: string }
  | { type: 'fit'; fits: boolean; reason?: string }
  | { type: 'progress'; file: string; bytesDone: number; bytesTotal: number; bytesPerSecond: number; etaSeconds?: number }
  | { type: 'done'; name: string; dir: string }
  | { type: 'error'; message: string };

function bytes(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${(n / 1e6).toFixed(1)} MB`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

export class ModelPicker implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('panorama.model', vscode.StatusBarAlignment.Right, 99);
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.item.name = 'Panorama Model';
    this.item.command = 'panorama.selectModel';
    this.disposables.push(
      this.item,
      vscode.commands.registerCommand('panorama.selectModel', () => this.pick()),
      vscode.commands.registerCommand('panorama.setHuggingFaceToken', () => this.setToken()),
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (event.affectsConfiguration('panorama.modelPath')) this.render();
      }),
    );
    this.render();
    this.item.show();
  }

  /** Where downloads go: the extension's global storage, so they survive updates. */
  private get home(): string {
    return path.join(this.context.globalStorageUri.fsPath, 'models-home');
  }

  private get modelPath(): string {
    return vscode.workspace.isTrusted ? vscode.workspace.getConfiguration('panorama').get<string>('modelPath', '').trim() : '';
  }

  /** `org/name` for a download (…/models/org--name/<commit>), the folder's name otherwise. */
  private modelLabel(dir: string): string {
    if (dir === '') return 'default model';
    const parts = dir.split(/[\\/]/);
    const repo = parts.at(-2);
    return repo?.includes('--') && parts.at(-3) === 'models' ? repo.replace('--', '/') : (parts.at(-1) ?? dir);
  }

  private render(): void {
    const label = this.modelLabel(this.modelPath);
    this.item.text = `$(package) ${label}`;
    this.item.tooltip = `Panorama model: ${this.modelPath || 'the model shipped with the extension'}\nClick to select another.`;
    this.item.accessibilityInformation = { label: `Panorama model: ${label}`, role: 'button' };
  }

  private launch(): EngineLaunch {
    const config = vscode.workspace.getConfiguration('panorama');
    const found = discoverEngine({
      enginePathSetting: config.get<string>('enginePath', ''),
      nodePathSetting: config.get<string>('nodePath', ''),
      cudaLibraryPathSetting: config.get<string>('cudaLibraryPath', ''),
      workspaceTrusted: vscode.workspace.isTrusted,
      extensionPath: this.context.extensionPath,
      hostExecPath: process.execPath,
      platform: process.platform,
      arch: process.arch,
      isFile: (file) => statSync(file, { throwIfNoEntry: false })?.isFile() ?? false,
      isDirectory: (dir) => statSync(dir, { throwIfNoEntry: false })?.isDirectory() ?? false,
    });
    if (!found.ok) throw new Error(found.message);
    return found.launch;
  }

  /** Runs `panorama <args>`; each stdout line goes to onLine. Resolves with the exit code and stderr. */
  private async cli(args: string[], onLine?: (line: string) => void, token?: vscode.CancellationToken): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const launch = this.launch();
    const hfToken = await this.context.secrets.get(HF_TOKEN_SECRET);
    const env: NodeJS.ProcessEnv = { ...process.env, ...launch.env, PANORAMA_HOME: this.home };
    if (hfToken) env.HF_TOKEN = hfToken;
    // the rpc loader's first arguments, with the CLI command in place of "rpc"
    const command = [...launch.args.slice(0, -1), ...args];
    this.log.info(`models: panorama ${args.join(' ')}`);
    return new Promise((resolve, reject) => {
      const child = spawn(launch.command, command, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let pending = '';
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk;
        pending += chunk;
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) onLine?.(line);
      });
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
      const cancel = token?.onCancellationRequested(() => child.kill('SIGTERM'));
      child.on('error', reject);
      child.on('close', (code) => {
        cancel?.dispose();
        if (stderr.trim()) this.log.info(`models: ${stderr.trim()}`);
        resolve({ code, stdout, stderr });
      });
    });
  }

  private async list(): Promise<ModelList> {
    const { code, stdout, stderr } = await this.cli(['models', 'list', '--json']);
    const parsed: unknown = code === 0 ? JSON.parse(stdout) : undefined;
    if (!isObject(parsed) || !Array.isArray(parsed.models) || !Array.isArray(parsed.partial) || typeof parsed.home !== 'string')
      throw new Error(`could not list the models: ${stderr.trim() || `exit ${code}`}`);
    const models = parsed.models.flatMap((m): ListedModel[] => {
      if (!isObject(m) || typeof m.name !== 'string' || typeof m.dir !== 'string' || (m.kind !== 'default' && m.kind !== 'hub' && m.kind !== 'local')) return [];
      const number = (v: unknown) => (typeof v === 'number' ? v : undefined);
      return [
        {
          name: m.name,
          kind: m.kind,
          dir: m.dir,
          parameters: number(m.parameters),
          precision: typeof m.precision === 'string' ? m.precision : undefined,
          diskBytes: number(m.diskBytes),
          problem: typeof m.problem === 'string' ? m.problem : undefined,
        },
      ];
    });
    const partial = parsed.partial.flatMap((p) =>
      isObject(p) && typeof p.repo === 'string' && typeof p.dir === 'string' ? [{ repo: p.repo, dir: p.dir, bytes: typeof p.bytes === 'number' ? p.bytes : 0 }] : [],
    );
    return { home: parsed.home, models, partial };
  }

  async pick(): Promise<void> {
    let listed: ModelList;
    try {
      listed = await this.list();
    } catch (error) {
      void vscode.window.showErrorMessage(`Panorama: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    const current = this.modelPath;
    type Item = vscode.QuickPickItem & { run: () => Promise<unknown> };
    const describe = (m: ListedModel) =>
      m.problem ? `unreadable: ${m.problem}` : `${((m.parameters ?? 0) / 1e6).toFixed(1)}M parameters · ${m.precision} · ${bytes(m.diskBytes ?? 0)}`;
    const items: Item[] = [
      ...listed.models.map((m): Item => {
        const selected = m.kind === 'default' ? current === '' : path.resolve(m.dir) === path.resolve(current || '.');
        return {
          label: `${selected ? '$(check) ' : ''}${m.name}`,
          description: `${m.kind === 'default' ? 'shipped · ' : m.kind === 'local' ? 'folder · ' : ''}${describe(m)}`,
          detail: m.dir,
          run: () => this.select(m.kind === 'default' ? '' : m.dir),
        };
      }),
      ...listed.partial.map((p): Item => ({
        label: `$(warning) ${p.repo}`,
        description: `partial download (${bytes(p.bytes)}): resume`,
        detail: p.dir,
        run: () => this.download(p.repo),
      })),
      { label: '', kind: vscode.QuickPickItemKind.Separator, run: async () => undefined },
      { label: '$(cloud-download) Download MiniCPM-SALA…', description: 'from the Hugging Face Hub', run: () => this.askAndDownload() },
      { label: '$(folder-opened) Add a folder…', description: 'a model folder on this machine', run: () => this.addFolder() },
      { label: '$(key) Set Hugging Face Token…', description: 'for gated or private models', run: () => this.setToken() },
    ];
    const picked = await vscode.window.showQuickPick(items, {
      title: 'Panorama: Select Model',
      placeHolder: `Current: ${this.modelLabel(current)} (switching restarts the engine; each model keeps its own index)`,
      matchOnDetail: true,
    });
    await picked?.run();
  }

  /** Sets panorama.modelPath where it is set now (a workspace value wins over a user one). */
  private async select(dir: string): Promise<void> {
    const config = vscode.workspace.getConfiguration('panorama');
    const target = config.inspect<string>('modelPath')?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
    await config.update('modelPath', dir === '' ? undefined : dir, target);
    this.log.info(`models: selected ${dir || 'the shipped model'}`);
  }

  private async askAndDownload(): Promise<void> {
    const repo = await vscode.window.showInputBox({
      title: 'Panorama: Download a Model',
      prompt: 'A Hugging Face model id (ORG/NAME, or ORG/NAME@REVISION)',
      value: DEFAULT_REPO,
      validateInput: (value) => (/^[\w.-]+\/[\w.-]+(@[\w./-]+)?$/.test(value.trim()) ? undefined : 'ORG/NAME, e.g. openbmb/MiniCPM-SALA'),
    });
    if (repo !== undefined) await this.download(repo.trim());
  }

  /** Pulls with a cancellable notification; a model that does not fit is offered anyway after the reason. */
  async download(repo: string, force = false): Promise<void> {
    const device = vscode.workspace.getConfiguration('panorama').get<string>('device', 'auto');
    const args = ['models', 'pull', repo, '--json', '--device', device === 'cpu' ? 'cpu' : device === 'auto' ? 'auto' : 'gpu', ...(force ? ['--force'] : [])];
    let done: { name: string; dir: string } | undefined;
    let failure: string | undefined;
    let refused = false;
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Panorama: downloading ${repo}`, cancellable: true },
      async (progress, token) => {
        let reported = 0;
        return this.cli(
          args,
          (line) => {
            let event: PullEvent;
            try {
              event = JSON.parse(line);
            } catch {
              return;
            }
            if (event.type === 'fit' && !event.fits) refused = !force;
            else if (event.type === 'log') progress.report({ message: event.message });
            else if (event.type === 'progress') {
              const percent = event.bytesTotal > 0 ? (100 * event.bytesDone) / event.bytesTotal : 0;
              const eta = event.etaSeconds !== undefined ? ` · ${Math.ceil(event.etaSeconds / 60)} min left` : '';
              progress.report({ increment: percent - reported, message: `${bytes(event.bytesDone)} of ${bytes(event.bytesTotal)} · ${bytes(event.bytesPerSecond)}/s${eta}` });
              reported = percent;
            } else if (event.type === 'done') done = { name: event.name, dir: event.dir };
            else if (event.type === 'error') failure = event.message;
          },
          token,
        );
      },
    );
    if (done !== undefined) {
      await this.select(done.dir);
      void vscode.window.showInformationMessage(`Panorama: ${done.name} is downloaded and selected; the engine restarts with it.`);
      return;
    }
    if (result.code === 130) {
      void vscode.window.showInformationMessage(`Panorama: the download of ${repo} stopped; what arrived is kept, and downloading it again resumes.`);
      return;
    }
    const message = failure ?? (result.stderr.trim() || `the download failed (exit ${result.code})`);
    const actions = refused ? ['Download Anyway'] : /HF_TOKEN/.test(message) ? ['Set Hugging Face Token…'] : [];
    const choice = await vscode.window.showErrorMessage(`Panorama: ${message}`, ...actions);
    if (choice === 'Download Anyway') await this.download(repo, true);
    else if (choice === 'Set Hugging Face Token…' && (await this.setToken())) await this.download(repo, force);
  }

  private async addFolder(): Promise<void> {
    const picked = await vscode.window.showOpenDialog({
      canSelectFolders: true,
      canSelectFiles: false,
      canSelectMany: false,
      openLabel: 'Use This Model',
      title: 'Panorama: a model folder (config.json, *.safetensors, tokenizer.json)',
    });
    const dir = picked?.[0]?.fsPath;
    if (dir === undefined) return;
    const { code, stderr } = await this.cli(['models', 'add', dir]);
    if (code !== 0) {
      void vscode.window.showErrorMessage(`Panorama: ${stderr.replace(/^panorama: error: /, '').trim() || `could not add ${dir}`}`);
      return;
    }
    await this.select(dir);
  }

  /** The token goes to SecretStorage (the OS keychain where there is one), never to settings. */
  async setToken(): Promise<boolean> {
    const token = await vscode.window.showInputBox({
      title: 'Panorama: Hugging Face Token',
      prompt: 'A read token from huggingface.co/settings/tokens (for gated models, accept the licence on the model page first). Empty clears it.',
      password: true,
      ignoreFocusOut: true,
    });
    if (token === undefined) return false;
    if (token.trim() === '') await this.context.secrets.delete(HF_TOKEN_SECRET);
    else await this.context.secrets.store(HF_TOKEN_SECRET, token.trim());
    void vscode.window.showInformationMessage(token.trim() === '' ? 'Panorama: the Hugging Face token is cleared.' : 'Panorama: the Hugging Face token is kept in secret storage.');
    return true;
  }

  dispose(): void {
    for (const disposable of this.disposables) disposable.dispose();
  }
}
