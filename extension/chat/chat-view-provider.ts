// The sidebar chat: a WebviewViewProvider that validates every message from the
// webview, runs questions through the current backend with a cancellation token
// per request (Stop → $/cancelRequest for the engine, an aborted HTTP request for
// a remote server), streams the answer into the view and keeps the history in
// workspaceState so it survives reloads.

import { randomUUID } from 'node:crypto';
import * as vscode from 'vscode';
import { parseWebviewMessage, type ChatTurn, type ContextChip, type HostMessage, type WebviewMessage } from '../../webview/protocol.js';
import { readSettings } from '../config.js';
import type { BackendService } from '../backend-service.js';
import { errorMessage, isNotReady } from '../engine/client.js';
import { openAt } from '../open-at.js';
import { resolveInside } from '../workspace-paths.js';
import { chipsForEditor, MAX_SELECTION_CHARS, selectionFor } from './editor-context.js';
import { chatHtml } from './html.js';

const HISTORY_KEY = 'panorama.chatHistory';
const MAX_TURNS = 50;
const MAX_STORED_ANSWER = 20_000;

export class ChatViewProvider implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewType = 'panorama.chat';

  private view: vscode.WebviewView | undefined;
  private ready = false;
  private turns: ChatTurn[];
  private readonly inFlight = new Map<string, { turn: ChatTurn; cancel: vscode.CancellationTokenSource }>();
  private chips: ContextChip[] = [];
  /** Chips the user removed; a new selection makes a new chip id, so it shows again. */
  private readonly removedChips = new Set<string>();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly backends: BackendService,
    private readonly workspaceRoot: string,
    private readonly log: vscode.LogOutputChannel,
  ) {
    // a turn saved while another was streaming has no finish reason: it was cut off by the reload
    this.turns = context.workspaceState
      .get<ChatTurn[]>(HISTORY_KEY, [])
      .filter((turn) => typeof turn?.requestId === 'string')
      .map((turn) => (turn.finishReason === undefined ? { ...turn, finishReason: 'cancelled' } : turn));
    let chipTimer: ReturnType<typeof setTimeout> | undefined;
    const refreshChipsSoon = (): void => {
      clearTimeout(chipTimer);
      chipTimer = setTimeout(() => this.refreshChips(), 150);
    };
    this.disposables.push(
      backends.onDidChange(() => this.postEngineState()),
      vscode.window.onDidChangeActiveTextEditor(refreshChipsSoon),
      vscode.window.onDidChangeTextEditorSelection(refreshChipsSoon),
      { dispose: () => clearTimeout(chipTimer) },
    );
    this.refreshChips();
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    this.ready = false;
    view.webview.options = {
      enableScripts: true,
      // only the bundle and the stylesheet are loadable
      localResourceRoots: [vscode.Uri.joinPath(this.context.extensionUri, 'dist'), vscode.Uri.joinPath(this.context.extensionUri, 'media')],
    };
    view.webview.html = chatHtml(view.webview, this.context.extensionUri);
    // a hidden webview is torn down (no retainContextWhenHidden: its state is cheap to restore);
    // on its next 'ready' it gets the history, in-flight answers included
    view.onDidDispose(
      () => {
        this.view = undefined;
        this.ready = false;
      },
      undefined,
      this.disposables,
    );
    view.webview.onDidReceiveMessage(
      (raw: unknown) => {
        const message = parseWebviewMessage(raw);
        if (message === undefined) {
          this.log.warn(`chat: rejected a malformed or unknown webview message (${describe(raw)})`);
          return;
        }
        void this.handle(message);
      },
      undefined,
      this.disposables,
    );
  }

  /** From the command palette: reveal the chat and ask there. */
  async askFromCommand(question: string, options: { includeSelection: boolean }): Promise<void> {
    // read the selection before the chat takes the focus
    const chips = chipsForEditor(vscode.window.activeTextEditor, this.workspaceRoot);
    const selection = chips.filter((chip) => chip.kind === 'selection');
    if (options.includeSelection && selection.length === 0) {
      void vscode.window.showInformationMessage('Panorama: select some code first, then run Explain Selection.');
      return;
    }
    await vscode.commands.executeCommand(`${ChatViewProvider.viewType}.focus`);
    await this.ask(question, options.includeSelection ? selection : []);
  }

  private async handle(message: WebviewMessage): Promise<void> {
    switch (message.type) {
      case 'ready':
        this.ready = true;
        this.post({ type: 'history', turns: this.turns });
        this.post({ type: 'chips', chips: this.visibleChips() });
        this.postEngineState();
        return;
      case 'ask':
        return this.ask(message.question, message.context);
      case 'stop':
        this.inFlight.get(message.requestId)?.cancel.cancel();
        return;
      case 'openSource': {
        const file = resolveInside(this.workspaceRoot, message.path);
        if (file === undefined) {
          this.log.warn(`chat: refused to open a path outside the workspace: ${message.path}`);
          return;
        }
        return openAt(file, message.line).catch((error: unknown) => void vscode.window.showWarningMessage(`Panorama: cannot open ${message.path}: ${errorMessage(error)}`));
      }
      case 'copyCode':
        await vscode.env.clipboard.writeText(message.code);
        vscode.window.setStatusBarMessage('Panorama: code copied', 2_000);
        return;
      case 'insertCode': {
        const editor = vscode.window.activeTextEditor ?? vscode.window.visibleTextEditors[0];
        if (editor === undefined) {
          void vscode.window.showInformationMessage('Panorama: open an editor to insert the code into.');
          return;
        }
        await editor.edit((edit) => edit.replace(editor.selection, message.code));
        return;
      }
      case 'showRead': {
        const turn = this.turns.find((candidate) => candidate.requestId === message.requestId);
        if (turn !== undefined) await vscode.commands.executeCommand('panorama.showWorkspaceMap', { requestId: turn.requestId, question: turn.question });
        return;
      }
      case 'removeChip':
        this.removedChips.add(message.id);
        this.post({ type: 'chips', chips: this.visibleChips() });
        return;
      case 'clearHistory':
        for (const { cancel } of this.inFlight.values()) cancel.cancel();
        this.turns = [];
        await this.saveHistory();
        this.post({ type: 'history', turns: [] });
        return;
    }
  }

  private async ask(question: string, context: ContextChip[]): Promise<void> {
    // chips come from the webview: only those inside the workspace survive
    const chips = context.filter((chip) => resolveInside(this.workspaceRoot, chip.path) !== undefined);
    const turn: ChatTurn = { requestId: randomUUID(), question, context: chips, answer: '', sources: [] };
    const cancel = new vscode.CancellationTokenSource();
    this.inFlight.set(turn.requestId, { turn, cancel });
    this.turns.push(turn);
    if (this.turns.length > MAX_TURNS) this.turns.splice(0, this.turns.length - MAX_TURNS);
    this.post({ type: 'turnStarted', turn });
    try {
      const { selection, truncated } = await selectionFor(chips, this.workspaceRoot);
      if (truncated) this.post({ type: 'notice', text: `The context was longer than ${MAX_SELECTION_CHARS.toLocaleString('en')} characters and was truncated.` });
      const onDelta = (text: string): void => {
        if (!this.inFlight.has(turn.requestId)) return;
        turn.answer += text;
        this.post({ type: 'answerDelta', requestId: turn.requestId, text });
      };
      const result = await this.backends
        .current()
        .ask({ requestId: turn.requestId, question, maxTokens: readSettings().maxAnswerTokens, ...(selection !== undefined ? { selection } : {}) }, onDelta, cancel.token);
      turn.answer = result.text;
      turn.locations = result.locations;
      turn.sources = result.sources;
      turn.finishReason = result.finishReason;
    } catch (error) {
      if (cancel.token.isCancellationRequested) {
        turn.finishReason = 'cancelled';
      } else {
        turn.finishReason = 'error';
        turn.error = this.backends.describeError(error) ?? 'cancelled';
        this.backends.noteFailure(error);
        if (!isNotReady(error)) this.log.error(`ask failed: ${turn.error}`);
      }
    } finally {
      this.inFlight.delete(turn.requestId);
      cancel.dispose();
    }
    this.post({ type: 'turnFinished', turn });
    await this.saveHistory();
  }

  private refreshChips(): void {
    this.chips = chipsForEditor(vscode.window.activeTextEditor, this.workspaceRoot);
    this.post({ type: 'chips', chips: this.visibleChips() });
  }

  private visibleChips(): ContextChip[] {
    return this.chips.filter((chip) => !this.removedChips.has(chip.id));
  }

  private postEngineState(): void {
    this.post({ type: 'engine', ready: this.backends.ready, label: this.backends.statusView().label });
  }

  private post(message: HostMessage): void {
    if (this.view !== undefined && this.ready) void this.view.webview.postMessage(message);
  }

  private saveHistory(): Thenable<void> {
    const stored = this.turns.map((turn) => ({ ...turn, answer: turn.answer.slice(0, MAX_STORED_ANSWER) }));
    return this.context.workspaceState.update(HISTORY_KEY, stored);
  }

  dispose(): void {
    for (const { cancel } of this.inFlight.values()) cancel.cancel();
    for (const disposable of this.disposables) disposable.dispose();
  }
}

function describe(raw: unknown): string {
  if (typeof raw === 'object' && raw !== null && 'type' in raw) return `type ${JSON.stringify(raw.type).slice(0, 40)}`;
  return typeof raw;
}
