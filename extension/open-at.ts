// Opening a workspace file at a line: what a source link in the chat and a pick in
// Find Where… both do (its own module, so neither imports the other).

import * as vscode from 'vscode';

/** Shows `file` (absolute) with the cursor at the start of `line` (1-based), in a preview editor. */
export async function openAt(file: string, line: number): Promise<void> {
  const position = new vscode.Position(Math.max(0, line - 1), 0);
  await vscode.window.showTextDocument(vscode.Uri.file(file), { selection: new vscode.Range(position, position), preview: true });
}
