// Inline completions: guard clauses, an adaptive debounce, the suggestion cache,
// then one `complete` request carrying VS Code's cancellation token (which
// vscode-jsonrpc turns into $/cancelRequest for the engine, and which aborts the
// HTTP request to a remote server). It never blocks typing: every await checks the
// token, and a backend that is not ready returns nothing.

import * as vscode from 'vscode';
import { isLanguageEnabled, readSettings } from '../config.js';
import type { BackendService } from '../backend-service.js';
import { toWorkspacePath } from '../workspace-paths.js';
import { SuggestionCache } from './cache.js';
import { AdaptiveDebounce, sleepUnlessCancelled } from './debounce.js';
import { tidySuggestion } from './trim.js';

/** The engine holds the whole workspace; the window is what the request restates around the cursor. */
const PREFIX_CHARS = 6_000;
const SUFFIX_CHARS = 1_500;
const MAX_TOKENS = 64;

export class PanoramaInlineCompletionProvider implements vscode.InlineCompletionItemProvider {
  private readonly debounce = new AdaptiveDebounce();
  private readonly cache = new SuggestionCache();

  constructor(
    private readonly backends: BackendService,
    private readonly workspaceRoot: string,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  async provideInlineCompletionItems(
    document: vscode.TextDocument,
    position: vscode.Position,
    context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[] | undefined> {
    const settings = readSettings();
    if (!isLanguageEnabled(settings, document.languageId)) return undefined;
    // the suggest widget is open: IntelliSense has the user's attention
    if (context.selectedCompletionInfo !== undefined) return undefined;
    const editor = vscode.window.activeTextEditor;
    if (editor?.document === document && !editor.selection.isEmpty) return undefined;
    if (!this.backends.ready) return undefined;
    const path = document.uri.scheme === 'file' ? toWorkspacePath(this.workspaceRoot, document.uri.fsPath) : undefined;
    if (path === undefined) return undefined;

    const offset = document.offsetAt(position);
    const text = document.getText();
    const prefix = text.slice(Math.max(0, offset - PREFIX_CHARS), offset);
    const suffix = text.slice(offset, offset + SUFFIX_CHARS);
    const documentKey = document.uri.toString();
    // the cache compares the whole text before the cursor, so a sliding window cannot fool it
    const fullPrefix = text.slice(0, offset);

    const cached = this.cache.lookup(documentKey, fullPrefix, suffix);
    if (cached !== undefined) return [this.item(cached, position)];

    // an explicit request (Alt+\) skips the wait; automatic ones wait out the typing
    const wait = this.debounce.next(Date.now());
    if (context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic && !(await sleepUnlessCancelled(wait, token))) return undefined;

    let raw: string;
    try {
      const backend = this.backends.current();
      const result = await backend.complete({ path, prefix, suffix, maxTokens: MAX_TOKENS }, token);
      raw = result.text;
      this.log.debug(`complete (${backend.kind}): ${result.latencyMs.toFixed(0)} ms, ${result.fedTokens} tokens fed, ${result.reusedTokens} reused`);
    } catch (error) {
      if (!token.isCancellationRequested) {
        this.log.debug(`complete failed: ${this.backends.describeError(error)}`);
        this.backends.noteFailure(error);
      }
      return undefined;
    }
    if (token.isCancellationRequested) return undefined;

    const line = document.lineAt(position.line).text;
    const nextLines: string[] = [];
    for (let index = position.line + 1; index < Math.min(document.lineCount, position.line + 4); index++) nextLines.push(document.lineAt(index).text);
    // Where the suggestion ends the backend decided (the engine's completion scope); this only tidies it for the editor.
    const suggestion = tidySuggestion({ completion: raw, lineSuffix: line.slice(position.character), nextLines });
    this.cache.remember({ documentKey, prefix: fullPrefix, suffix, text: suggestion });
    return suggestion === '' ? undefined : [this.item(suggestion, position)];
  }

  private item(text: string, position: vscode.Position): vscode.InlineCompletionItem {
    return new vscode.InlineCompletionItem(text, new vscode.Range(position, position));
  }
}
