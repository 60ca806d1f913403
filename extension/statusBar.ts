// The status bar item: indexing progress, tokens in context, device, errors.
// Clicking it opens the quick menu (panorama.statusMenu).

import * as vscode from 'vscode';
import type { EngineService } from './engine/engineService';
import { statusView } from './statusText';

export function registerStatusBar(engine: EngineService): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('panorama.status', vscode.StatusBarAlignment.Right, 100);
  item.name = 'Panorama';
  item.command = 'panorama.statusMenu';
  const render = (): void => {
    const view = statusView(engine.client.state, engine.lastStatus);
    item.text = view.text;
    item.tooltip = view.tooltip;
    item.accessibilityInformation = { label: view.label, role: 'button' };
    item.backgroundColor =
      view.severity === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground') : view.severity === 'warning' ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
  };
  render();
  item.show();
  return vscode.Disposable.from(item, engine.onDidChange(render));
}
