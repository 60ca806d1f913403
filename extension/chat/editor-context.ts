// The editor context offered as chips (the active file, its selection) and the
// text they stand for, read by the host: the webview only names a chip, it never
// supplies the text, so it cannot smuggle content or paths in.

import * as vscode from 'vscode';
import type { AskParams } from '../../engine/server/protocol.js';
import type { ContextChip } from '../../webview/protocol.js';
import { resolveInside, toWorkspacePath } from '../workspace-paths.js';

/** Longer selections are cut, with a notice: the question must leave room in the engine's request. */
export const MAX_SELECTION_CHARS = 16_000;

export function chipsForEditor(editor: vscode.TextEditor | undefined, root: string): ContextChip[] {
  if (editor === undefined || editor.document.uri.scheme !== 'file') return [];
  const relative = toWorkspacePath(root, editor.document.uri.fsPath);
  if (relative === undefined) return [];
  const chips: ContextChip[] = [{ id: `file:${relative}`, kind: 'file', path: relative, label: relative.split('/').pop() ?? relative }];
  const selection = editor.selection;
  if (!selection.isEmpty) {
    const startLine = selection.start.line + 1;
    const endLine = selection.end.character === 0 && selection.end.line > selection.start.line ? selection.end.line : selection.end.line + 1;
    const truncated = editor.document.getText(selection).length > MAX_SELECTION_CHARS;
    chips.unshift({
      id: `sel:${relative}:${startLine}-${endLine}`,
      kind: 'selection',
      path: relative,
      startLine,
      endLine,
      label: `${relative.split('/').pop()}:${startLine}-${endLine}`,
      ...(truncated ? { truncated } : {}),
    });
  }
  return chips;
}

/** The AskParams selection for a question's chips: the selection if there is one, else the file. */
export async function selectionFor(chips: ContextChip[], root: string): Promise<{ selection?: AskParams['selection']; truncated: boolean }> {
  const chip = chips.find((candidate) => candidate.kind === 'selection') ?? chips[0];
  if (chip === undefined) return { truncated: false };
  const file = resolveInside(root, chip.path);
  if (file === undefined) return { truncated: false };
  const document = await vscode.workspace.openTextDocument(vscode.Uri.file(file));
  const range = chip.kind === 'selection' && chip.startLine !== undefined && chip.endLine !== undefined ? new vscode.Range(chip.startLine - 1, 0, chip.endLine, 0) : undefined;
  const text = document.getText(range);
  const truncated = text.length > MAX_SELECTION_CHARS;
  return {
    truncated,
    selection: { path: chip.path, text: truncated ? text.slice(0, MAX_SELECTION_CHARS) : text, ...(chip.startLine !== undefined ? { startLine: chip.startLine } : {}) },
  };
}
