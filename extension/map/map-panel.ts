// "Panorama: Show Workspace Map": a webview panel with the workspace as a treemap,
// kept fresh while indexing and after edits (the engine's status notifications
// trigger a throttled re-request of workspace/map), and, for an answer, what the
// model read (answer/overlay by the ask's request id). Every message from the view
// is validated; a place clicked opens its file at those lines, highlighted; an
// exported SVG is saved only if it is plain shapes and text.

import { stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { AnswerOverlay, WorkspaceMap } from '../../engine/server/protocol.js';
import { parseMapViewMessage, type MapHostMessage, type MapStatus, type MapViewMessage } from '../../webview/map/protocol.js';
import type { BackendService } from '../backend-service.js';
import { errorMessage } from '../engine/client.js';
import type { EngineService } from '../engine/engine-service.js';
import { webviewHtml } from '../webview-html.js';
import { resolveInside } from '../workspace-paths.js';
import { LineHighlight } from './line-highlight.js';

/** At most one workspace/map request this often while updates stream in (indexing, edits). */
const REFRESH_EVERY_MS = 500;

/** What the command accepts from its callers (the chat's "Show what it read", Find Where…). */
export interface ShowMapArgs {
  requestId?: string;
  question?: string;
}

export function parseShowMapArgs(raw: unknown): ShowMapArgs {
  if (typeof raw !== 'object' || raw === null) return {};
  const args: ShowMapArgs = {};
  if ('requestId' in raw && typeof raw.requestId === 'string' && raw.requestId.length > 0 && raw.requestId.length <= 256) args.requestId = raw.requestId;
  if ('question' in raw && typeof raw.question === 'string') args.question = raw.question.slice(0, 8_000);
  return args;
}

export class MapPanel implements vscode.Disposable {
  static readonly viewType = 'panorama.workspaceMap';

  private panel: vscode.WebviewPanel | undefined;
  private ready = false;
  private map: WorkspaceMap | undefined;
  private shown: { overlay: AnswerOverlay; question: string } | undefined;
  private fetching = false;
  private stale = false;
  private lastFetch = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly highlight = new LineHighlight();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly engine: EngineService,
    private readonly backends: BackendService,
    private readonly workspaceRoot: string,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.disposables.push(
      this.highlight,
      backends.onDidChange(() => this.refreshSoon()),
      vscode.commands.registerCommand('panorama.showWorkspaceMap', (raw: unknown) => this.show(parseShowMapArgs(raw))),
    );
  }

  async show(args: ShowMapArgs = {}): Promise<void> {
    if (this.panel === undefined) this.createPanel();
    else this.panel.reveal(undefined, false);
    this.refreshSoon();
    if (args.requestId !== undefined) await this.showOverlay(args.requestId, args.question ?? '');
  }

  private createPanel(): void {
    const panel = vscode.window.createWebviewPanel(MapPanel.viewType, 'Panorama: Workspace Map', vscode.ViewColumn.Active, {
      enableScripts: true,
      // only the bundle and the stylesheet are loadable
      localResourceRoots: [vscode.Uri.joinPath(this.context.extensionUri, 'dist'), vscode.Uri.joinPath(this.context.extensionUri, 'media')],
    });
    this.panel = panel;
    this.ready = false;
    panel.iconPath = vscode.Uri.joinPath(this.context.extensionUri, 'media', 'panorama.svg');
    panel.webview.html = webviewHtml(panel.webview, this.context.extensionUri, { title: 'Panorama: Workspace Map', script: 'map.js', style: 'map.css', body: MAP_BODY });
    panel.onDidDispose(
      () => {
        this.panel = undefined;
        this.ready = false;
      },
      undefined,
      this.disposables,
    );
    // hidden, the view is torn down; shown again, it says 'ready' and gets the map anew
    panel.onDidChangeViewState(
      () => {
        if (panel.visible) this.refreshSoon();
      },
      undefined,
      this.disposables,
    );
    panel.webview.onDidReceiveMessage(
      (raw: unknown) => {
        const message = parseMapViewMessage(raw);
        if (message === undefined) {
          this.log.warn('map: rejected a malformed or unknown message from the view');
          return;
        }
        void this.handle(message);
      },
      undefined,
      this.disposables,
    );
  }

  private async handle(message: MapViewMessage): Promise<void> {
    switch (message.type) {
      case 'ready':
        this.ready = true;
        if (this.map !== undefined) this.post({ type: 'map', map: this.map, status: this.status() });
        else this.post({ type: 'status', status: this.status() });
        if (this.shown !== undefined) this.post({ type: 'overlay', ...this.shown });
        this.refreshSoon();
        return;
      case 'open':
        return this.openPlace(message.path, message.startLine, message.endLine);
      case 'clearOverlay':
        this.shown = undefined;
        this.post({ type: 'clearOverlay' });
        return;
      case 'exportSvg':
        return this.exportSvg(message.svg);
      case 'rendered':
        // the view's own measure of drawing (layout and paint), for the log
        if (message.ms > 100) this.log.info(`map: drawing ${message.cells} cells took ${message.ms.toFixed(0)} ms`);
        else this.log.trace(`map: drew ${message.cells} cells in ${message.ms.toFixed(1)} ms`);
        return;
    }
  }

  private status(): MapStatus {
    if (this.backends.isRemote) return { label: 'The remote backend holds the workspace on its server: there is no local map.', available: false };
    return { label: this.backends.statusView().label, available: this.engine.client.isRunning };
  }

  /** Re-requests the map, at most every REFRESH_EVERY_MS, and only while the panel shows. */
  private refreshSoon(): void {
    if (this.panel === undefined || !this.panel.visible) return;
    if (this.fetching || this.timer !== undefined) {
      this.stale = true;
      return;
    }
    const wait = this.lastFetch + REFRESH_EVERY_MS - Date.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.refreshSoon();
      }, wait);
      return;
    }
    void this.fetchMap();
  }

  private async fetchMap(): Promise<void> {
    const status = this.status();
    if (!status.available) {
      this.post({ type: 'status', status });
      return;
    }
    this.fetching = true;
    this.stale = false;
    this.lastFetch = Date.now();
    try {
      const map = await this.engine.client.request('workspace/map', {});
      this.map = map;
      this.post({ type: 'map', map, status: this.status() });
    } catch (error) {
      this.log.warn(`map: workspace/map failed: ${errorMessage(error)}`);
      this.post({ type: 'status', status: { label: `The map is not available: ${errorMessage(error)}`, available: false } });
    } finally {
      this.fetching = false;
    }
    if (this.stale) this.refreshSoon();
  }

  private async showOverlay(requestId: string, question: string): Promise<void> {
    if (this.backends.isRemote) {
      void vscode.window.showInformationMessage('Panorama: a remote server does not report which blocks its model selected, so there is nothing to show for this answer.');
      return;
    }
    try {
      const overlay = await this.engine.client.request('answer/overlay', { requestId });
      this.shown = { overlay, question };
      this.post({ type: 'overlay', overlay, question });
    } catch (error) {
      void vscode.window.showInformationMessage(`Panorama: ${errorMessage(error)}`);
    }
  }

  private async openPlace(relative: string, startLine: number, endLine: number): Promise<void> {
    const file = resolveInside(this.workspaceRoot, relative);
    if (file === undefined) {
      this.log.warn(`map: refused to open a path outside the workspace: ${relative}`);
      return;
    }
    try {
      if ((await stat(file)).isDirectory()) {
        await vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(file));
        return;
      }
      const start = new vscode.Position(startLine - 1, 0);
      const editor = await vscode.window.showTextDocument(vscode.Uri.file(file), {
        selection: new vscode.Range(start, start),
        preview: true,
        viewColumn: vscode.ViewColumn.Beside,
      });
      const last = Math.min(endLine, editor.document.lineCount) - 1;
      const range = new vscode.Range(start, new vscode.Position(Math.max(startLine - 1, last), 0));
      editor.revealRange(range, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
      this.highlight.show(editor, range);
    } catch (error) {
      void vscode.window.showWarningMessage(`Panorama: cannot open ${relative}: ${errorMessage(error)}`);
    }
  }

  private async exportSvg(svg: string): Promise<void> {
    const target = await vscode.window.showSaveDialog({
      title: 'Export the workspace map as SVG',
      defaultUri: vscode.Uri.file(path.join(this.workspaceRoot, this.shown ? 'panorama-answer-map.svg' : 'panorama-workspace-map.svg')),
      filters: { 'SVG image': ['svg'] },
    });
    if (target === undefined) return;
    try {
      await writeFile(target.fsPath, svg);
      void vscode.window.showInformationMessage(`Panorama: the map is saved as ${target.fsPath}`);
    } catch (error) {
      void vscode.window.showErrorMessage(`Panorama: cannot write ${target.fsPath}: ${errorMessage(error)}`);
    }
  }

  private post(message: MapHostMessage): void {
    if (this.panel !== undefined && this.ready) void this.panel.webview.postMessage(message);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.panel?.dispose();
    for (const disposable of this.disposables) disposable.dispose();
  }
}

const MAP_BODY = `  <header id="bar">
    <div id="summary" role="status" aria-live="polite"></div>
    <div id="legend" role="list" aria-label="Colours by state"></div>
    <div id="actions">
      <button id="clear-overlay" hidden title="Back to the whole map (Escape)">Back to the map</button>
      <button id="export" title="Save the current map as an SVG file">Export SVG</button>
    </div>
  </header>
  <div id="main">
    <div id="stage">
      <canvas id="treemap" tabindex="0" role="img" aria-label="Treemap of the workspace"></canvas>
      <div id="tooltip" role="tooltip" hidden></div>
    </div>
    <aside id="read" hidden aria-labelledby="read-title">
      <h2 id="read-title">What the model read</h2>
      <p id="read-summary"></p>
      <h3>Top places</h3>
      <ol id="places" aria-label="Top places the answer read, heaviest first"></ol>
      <h3>Files, line by line</h3>
      <ul id="read-files" aria-label="Line ranges read per file"></ul>
    </aside>
  </div>
  <div id="focus-info" class="visually-hidden" aria-live="polite"></div>`;
