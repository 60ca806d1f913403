// Lines an answer read, highlighted in the editor for a few seconds: the
// decoration clears itself after a while or at the document's next edit.

import * as vscode from 'vscode';

const SHOWN_MS = 5_000;

export class LineHighlight implements vscode.Disposable {
  private readonly decoration = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    backgroundColor: new vscode.ThemeColor('editor.rangeHighlightBackground'),
    overviewRulerColor: new vscode.ThemeColor('editorOverviewRuler.rangeHighlightForeground'),
    overviewRulerLane: vscode.OverviewRulerLane.Full,
  });
  private timer: ReturnType<typeof setTimeout> | undefined;
  private editListener: vscode.Disposable | undefined;
  private editor: vscode.TextEditor | undefined;

  show(editor: vscode.TextEditor, range: vscode.Range): void {
    this.clear();
    this.editor = editor;
    editor.setDecorations(this.decoration, [range]);
    this.timer = setTimeout(() => this.clear(), SHOWN_MS);
    this.editListener = vscode.workspace.onDidChangeTextDocument((event) => {
      if (event.document === editor.document && event.contentChanges.length > 0) this.clear();
    });
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.editListener?.dispose();
    this.editListener = undefined;
    this.editor?.setDecorations(this.decoration, []);
    this.editor = undefined;
  }

  dispose(): void {
    this.clear();
    this.decoration.dispose();
  }
}
