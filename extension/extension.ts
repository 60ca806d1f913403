// Entry point: wires the engine, the backend choice (local engine or remote
// server), the status bar, the commands, the chat view and the inline completion
// provider. Everything registered goes into context.subscriptions, so
// deactivation disposes it (and stops the engine).

import { writeFileSync } from 'node:fs';
import * as vscode from 'vscode';
import { BackendService } from './backend-service.js';
import { ChatViewProvider } from './chat/chat-view-provider.js';
import { registerCommands } from './commands.js';
import { contributedCommands } from './contributed-commands.js';
import { PanoramaInlineCompletionProvider } from './completion/inline-provider.js';
import { EngineService } from './engine/engine-service.js';
import { MapPanel } from './map/map-panel.js';
import { registerStatusBar } from './status-bar.js';
import { ModelPicker } from './model-picker.js';

let activeEngine: EngineService | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Panorama', { log: true });
  context.subscriptions.push(log);

  // The engine holds one folder as its context: the first workspace folder.
  const folder = vscode.workspace.workspaceFolders?.find((candidate) => candidate.uri.scheme === 'file');
  if (folder === undefined) {
    log.info('no local folder is open: Panorama waits for one');
    const needsFolder = (): void =>
      void vscode.window.showInformationMessage('Panorama reads a workspace folder: open a folder first.', 'Open Folder…').then((choice) => {
        if (choice !== undefined) void vscode.commands.executeCommand('workbench.action.files.openFolder');
      });
    const ids = contributedCommands(context.extension.packageJSON).filter((id) => id !== 'panorama.showEngineLog');
    context.subscriptions.push(
      vscode.commands.registerCommand('panorama.showEngineLog', () => log.show()),
      ...ids.map((id) => vscode.commands.registerCommand(id, needsFolder)),
    );
    return;
  }

  const root = folder.uri.fsPath;
  const engine = new EngineService(context, log, root);
  activeEngine = engine;
  const backends = new BackendService(context, engine, log);
  const chat = new ChatViewProvider(context, backends, root, log);
  context.subscriptions.push(
    engine,
    backends,
    chat,
    new MapPanel(context, engine, backends, root, log),
    registerStatusBar(backends),
    new ModelPicker(context, log),
    registerCommands(context, engine, backends, chat, log),
    vscode.window.registerWebviewViewProvider(ChatViewProvider.viewType, chat),
    vscode.languages.registerInlineCompletionItemProvider({ pattern: '**' }, new PanoramaInlineCompletionProvider(backends, root, log)),
  );
  void backends.initialize();
  void engine.start();

  // The e2e test waits for this file instead of guessing when activation is over.
  const marker = process.env.PANORAMA_E2E_MARKER;
  if (marker) writeFileSync(marker, String(Date.now()));
}

/** Waits for the engine to save its context and exit (disposal alone would not wait). */
export function deactivate(): Promise<void> | undefined {
  return activeEngine?.client.stop();
}
