// The command palette: every contributed command, each a few lines that hand
// off to the engine, the current backend, the chat view or the editor.

import * as vscode from 'vscode';
import { randomUUID } from 'node:crypto';
import type { DevicePreference } from '../engine/server/protocol.js';
import type { BackendService } from './backend-service.js';
import type { ChatViewProvider } from './chat/chat-view-provider.js';
import { DEVICES, REMOTE_API_KEY_SECRET } from './config.js';
import { errorMessage, isNotReady } from './engine/client.js';
import type { EngineService } from './engine/engine-service.js';
import { openAt } from './open-at.js';
import { resolveInside } from './workspace-paths.js';

export function registerCommands(
  context: vscode.ExtensionContext,
  engine: EngineService,
  backends: BackendService,
  chat: ChatViewProvider,
  log: vscode.LogOutputChannel,
): vscode.Disposable {
  const register = (id: string, run: (...args: unknown[]) => unknown): vscode.Disposable => vscode.commands.registerCommand(id, run);
  const setPaused = async (paused: boolean): Promise<void> => {
    const status = await withEngineErrors(() => engine.client.request('setPaused', { paused }));
    if (status !== undefined) engine.applyStatus(status);
  };

  return vscode.Disposable.from(
    register('panorama.ask', async () => {
      const question = await vscode.window.showInputBox({
        title: 'Ask About Workspace',
        prompt: 'A question about the whole workspace',
        placeHolder: 'How does the index stay fresh after an edit?',
        ignoreFocusOut: true,
      });
      if (question?.trim()) await chat.askFromCommand(question.trim(), { includeSelection: false });
    }),
    register('panorama.explainSelection', async () => {
      await chat.askFromCommand('Explain the selected code: what it does, why, and how it fits into the rest of the workspace.', { includeSelection: true });
    }),
    register('panorama.findWhere', () => findWhere(engine.workspaceRoot, backends)),
    register('panorama.reindex', async () => {
      const status = await withEngineErrors(() => engine.client.request('reindex', {}));
      if (status !== undefined) engine.applyStatus(status);
    }),
    register('panorama.pauseIndexing', () => setPaused(true)),
    register('panorama.resumeIndexing', () => setPaused(false)),
    register('panorama.selectDevice', () => selectDevice()),
    register('panorama.showEngineLog', () => log.show()),
    register('panorama.restartEngine', () => {
      if (backends.isRemote)
        return void vscode.window.showInformationMessage('Panorama answers from a remote server (panorama.backend is "remote"): the local engine does not run.');
      return engine.client.restart();
    }),
    register('panorama.setRemoteApiKey', () => setRemoteApiKey(context)),
    register('panorama.clearRemoteApiKey', async () => {
      await context.secrets.delete(REMOTE_API_KEY_SECRET);
      void vscode.window.showInformationMessage('Panorama: the remote API key is cleared.');
    }),
    register('panorama.toggleInlineCompletions', async () => {
      const config = vscode.workspace.getConfiguration('panorama');
      const enabled = !config.get<boolean>('inlineCompletions.enabled', true);
      await config.update('inlineCompletions.enabled', enabled, vscode.ConfigurationTarget.Global);
      vscode.window.setStatusBarMessage(`Panorama inline completions ${enabled ? 'on' : 'off'}`, 3_000);
    }),
    register('panorama.statusMenu', () => statusMenu(engine, backends)),
  );
}

async function withEngineErrors<T>(run: () => Promise<T>): Promise<T | undefined> {
  try {
    return await run();
  } catch (error) {
    if (isNotReady(error)) {
      void vscode.window.showInformationMessage(errorMessage(error));
      return undefined;
    }
    const choice = await vscode.window.showErrorMessage(`Panorama: ${errorMessage(error)}`, 'Show Log');
    if (choice === 'Show Log') await vscode.commands.executeCommand('panorama.showEngineLog');
    return undefined;
  }
}

async function selectDevice(): Promise<void> {
  const config = vscode.workspace.getConfiguration('panorama');
  const current = config.get<string>('device', 'auto');
  const descriptions: Record<DevicePreference, string> = {
    auto: 'a GPU when one works, else the CPU',
    cpu: 'always available',
    webgpu: 'GPU through Vulkan / Metal / D3D12',
    cuda: 'NVIDIA GPU, when onnxruntime’s CUDA provider is installed',
  };
  const picked = await vscode.window.showQuickPick(
    DEVICES.map((device) => ({ label: device, description: descriptions[device], picked: device === current, detail: device === current ? 'current' : undefined })),
    { title: 'Panorama: Select Device', placeHolder: `Current: ${current} (the engine restarts on change; the index is kept)` },
  );
  if (picked !== undefined && picked.label !== current) await config.update('device', picked.label, vscode.ConfigurationTarget.Global);
}

/** The key goes to SecretStorage (the OS keychain where there is one), never to settings. */
async function setRemoteApiKey(context: vscode.ExtensionContext): Promise<void> {
  const key = await vscode.window.showInputBox({
    title: 'Panorama: Remote API Key',
    prompt: "The bearer token of the remote server (vLLM/SGLang --api-key, panorama serve --api-key). Stored in VS Code's secret storage.",
    password: true,
    ignoreFocusOut: true,
    validateInput: (value) => (value.trim() === '' ? 'Enter the key, or press Escape to cancel.' : /\s/.test(value.trim()) ? 'An API key has no spaces.' : undefined),
  });
  if (key === undefined) return;
  await context.secrets.store(REMOTE_API_KEY_SECRET, key.trim());
  void vscode.window.showInformationMessage("Panorama: the remote API key is saved in VS Code's secret storage.");
}

/** A name (an identifier) is asked about the way the default model was trained to answer; anything else in words. */
export function findWhereQuestion(what: string): string {
  const name = what.replace(/^`|`$/g, '');
  return /^[A-Za-z_$][\w$.]*$/.test(name) ? `Where is \`${name}\` defined?` : `Where in this workspace is ${what}? Name the files and lines.`;
}

async function findWhere(workspaceRoot: string, backends: BackendService): Promise<void> {
  const what = await vscode.window.showInputBox({ title: 'Find Where…', prompt: 'What are you looking for?', placeHolder: 'where retries are scheduled', ignoreFocusOut: true });
  if (!what?.trim()) return;
  const requestId = `find-${randomUUID()}`;
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: 'Panorama: searching the workspace…', cancellable: true },
    async (_progress, token) => {
      try {
        return await backends.current().ask({ requestId, question: findWhereQuestion(what.trim()), maxTokens: 256 }, () => undefined, token);
      } catch (error) {
        const message = token.isCancellationRequested ? undefined : backends.describeError(error);
        if (message === undefined) return undefined;
        backends.noteFailure(error);
        if (isNotReady(error)) void vscode.window.showInformationMessage(message);
        else if ((await vscode.window.showErrorMessage(`Panorama: ${message}`, 'Show Log')) === 'Show Log') await vscode.commands.executeCommand('panorama.showEngineLog');
        return undefined;
      }
    },
  );
  if (result === undefined || result.finishReason === 'cancelled') return;
  const places = result.locations.map((place) => ({
    label: `$(arrow-right) ${place.path}:${place.line}`,
    description: place.text,
    detail: 'the line the answer points to',
    source: { path: place.path, startLine: place.line, endLine: place.line, weight: 0 },
  }));
  const attended = result.sources.map((source) => ({
    label: `$(file-code) ${source.path}:${source.startLine}`,
    description: `lines ${source.startLine}–${source.endLine}`,
    detail: source.weight > 0 ? `attention weight ${(source.weight * 100).toFixed(1)}%` : 'named in the answer',
    source,
  }));
  const items = [...places, ...attended];
  const summary = result.text.trim().replace(/\s+/g, ' ').slice(0, 200);
  if (items.length === 0) {
    void vscode.window.showInformationMessage(`Panorama: ${summary || 'no answer'}${backends.isRemote ? ' (the remote answer names no file of the workspace)' : ''}`);
    return;
  }
  // the local engine kept what its sparse layers read for this answer: the map can show it
  const showRead = { label: '$(map) Show what it read', description: "the workspace map with this answer's overlay", source: undefined };
  const picked = await vscode.window.showQuickPick([...items, ...(backends.isRemote ? [] : [showRead])], {
    title: `Find Where: ${what.trim()}`,
    placeHolder: summary || 'Sources the model attended to',
    matchOnDescription: true,
  });
  if (picked === undefined) return;
  if (picked.source === undefined) return void vscode.commands.executeCommand('panorama.showWorkspaceMap', { requestId, question: what.trim() });
  const file = resolveInside(workspaceRoot, picked.source.path);
  if (file !== undefined) await openAt(file, picked.source.startLine);
}

async function statusMenu(engine: EngineService, backends: BackendService): Promise<void> {
  if (backends.isRemote) {
    const remoteActions: Array<vscode.QuickPickItem & { command: string; args?: unknown[] }> = [
      { label: '$(key) Set Remote API Key…', command: 'panorama.setRemoteApiKey' },
      { label: '$(settings-gear) Remote Backend Settings', command: 'workbench.action.openSettings', args: ['panorama.remote'] },
      { label: '$(output) Show Log', command: 'panorama.showEngineLog' },
      { label: '$(lightbulb) Toggle Inline Completions', command: 'panorama.toggleInlineCompletions' },
    ];
    const picked = await vscode.window.showQuickPick(remoteActions, { title: 'Panorama (remote backend)' });
    if (picked !== undefined) await vscode.commands.executeCommand(picked.command, ...(picked.args ?? []));
    return;
  }
  const paused = engine.lastStatus?.state === 'paused';
  const running = engine.client.isRunning;
  const actions: Array<vscode.QuickPickItem & { command: string }> = [
    ...(running
      ? [paused ? { label: '$(debug-start) Resume Indexing', command: 'panorama.resumeIndexing' } : { label: '$(debug-pause) Pause Indexing', command: 'panorama.pauseIndexing' }]
      : []),
    ...(running ? [{ label: '$(refresh) Reindex Workspace', command: 'panorama.reindex' }] : []),
    { label: '$(chip) Select Device…', command: 'panorama.selectDevice' },
    { label: '$(output) Show Engine Log', command: 'panorama.showEngineLog' },
    { label: '$(debug-restart) Restart Engine', command: 'panorama.restartEngine' },
    { label: '$(lightbulb) Toggle Inline Completions', command: 'panorama.toggleInlineCompletions' },
  ];
  const picked = await vscode.window.showQuickPick(actions, { title: 'Panorama' });
  if (picked !== undefined) await vscode.commands.executeCommand(picked.command);
}
