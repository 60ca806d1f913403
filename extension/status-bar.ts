// The status bar item: indexing progress, tokens in context, device, errors — or,
// with the remote backend, the server and what its last request cost.
// Clicking it opens the quick menu (panorama.statusMenu).

import * as vscode from 'vscode';
import type { BackendService } from './backend-service.js';

export function registerStatusBar(backends: BackendService): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('panorama.status', vscode.StatusBarAlignment.Right, 100);
  item.name = 'Panorama';
  item.command = 'panorama.statusMenu';
  const render = (): void => {
    const view = backends.statusView();
    item.text = view.text;
    item.tooltip = view.tooltip;
    item.accessibilityInformation = { label: view.label, role: 'button' };
    item.backgroundColor =
      view.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  };
  render();
  item.show();
  return vscode.Disposable.from(item, backends.onDidChange(render));
}
