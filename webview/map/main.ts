/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The workspace map view's script (bundled into dist/map.js): draws the map the
// host sends as a treemap on a canvas (a few thousand cells paint in a frame),
// colours by state from the theme, shows an answer's overlay as heat with its top
// places beside it, and lets the keyboard walk the files. Every message from the
// host is validated before it is drawn; updates arriving faster than frames are
// coalesced, so the view stays responsive while indexing streams them in.

import type { AnswerOverlay, MapCell, WorkspaceMap } from '../../engine/vocabulary.js';
import { heatOf, type Heat } from './heat.js';
import { MAP_STATES, PALETTE_KEYS, fallbackPalette, parseMapHostMessage, type MapStatus, type MapViewMessage, type Palette, type PaletteKey } from './protocol.js';
import { describe, label, mapSvg, stateText } from './map-svg.js';
import { cellAt, hasHeader, layoutTreemap, neighbour, type Rect } from './treemap-layout.js';

interface VsCodeApi {
  postMessage(message: MapViewMessage): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();
const canvas = canvasElement('treemap');
const stage = element('stage');
const tooltip = element('tooltip');
const summary = element('summary');
const legend = element('legend');
const readPanel = element('read');
const readTitle = element('read-title');
const readSummary = element('read-summary');
const placesList = element('places');
const filesList = element('read-files');
const focusInfo = element('focus-info');
const clearButton = element('clear-overlay');
const exportButton = element('export');

let map: WorkspaceMap | undefined;
let status: MapStatus = { label: 'Waiting for the engine…', available: false };
let overlay: AnswerOverlay | undefined;
let question = '';
let rects: Rect[] = [];
let heat: Heat = heatOf([], undefined);
let leaves: number[] = [];
let focused = -1;
let hovered = -1;
let palette: Palette = fallbackPalette();
let textOn: Record<string, string> = {};
let frameQueued = false;
let receivedAt = 0;
/** The view's own work, measured where it happens: drawing (layout + paint) and handling a message (validation + chrome). */
const timing = { renders: 0, maxMs: 0, maxHandleMs: 0 };

function element(id: string): HTMLElement {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`map view: #${id} is missing`);
  return found;
}

function canvasElement(id: string): HTMLCanvasElement {
  const found = element(id);
  if (!(found instanceof HTMLCanvasElement)) throw new Error(`map view: #${id} is not a canvas`);
  return found;
}

/** CSS variables the palette comes from (VS Code sets them per theme), with the dark theme's values where one is unset. */
const THEME_VARIABLES: Record<PaletteKey, string> = {
  encoded: '--vscode-charts-blue',
  patched: '--vscode-charts-purple',
  encoding: '--vscode-charts-green',
  waiting: '--vscode-charts-yellow',
  excluded: '--vscode-disabledForeground',
  heat: '--vscode-charts-red',
  folder: '--vscode-sideBar-background',
  border: '--vscode-editor-background',
  background: '--vscode-editor-background',
  text: '--vscode-foreground',
};

function readPalette(): void {
  const style = getComputedStyle(document.documentElement);
  const fallback = fallbackPalette();
  const next = { ...fallback };
  for (const key of PALETTE_KEYS) next[key] = style.getPropertyValue(THEME_VARIABLES[key]).trim() || fallback[key];
  // high contrast: every cell gets the theme's contrast border
  const contrast = style.getPropertyValue('--vscode-contrastBorder').trim();
  if (document.body.classList.contains('vscode-high-contrast') && contrast) next.border = contrast;
  palette = next;
  // what the theme gave, for a test to see the view follow a theme change
  canvas.dataset.theme = ['vscode-high-contrast-light', 'vscode-high-contrast', 'vscode-dark', 'vscode-light'].find((kind) => document.body.classList.contains(kind)) ?? '';
  canvas.dataset.palette = `${palette.encoded} ${palette.border} ${palette.background}`;
  textOn = {};
  for (const key of [...MAP_STATES, 'heat', 'folder'] as const) textOn[key] = readableOn(palette[key]);
}

/** Black or white, whichever reads better on a colour (the canvas normalizes any CSS colour to #rrggbb or rgba()). */
function readableOn(colour: string): string {
  const probe = document.createElement('canvas').getContext('2d');
  if (!probe) return palette.text;
  probe.fillStyle = colour;
  const value = probe.fillStyle;
  const hex = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(value);
  const rgba = /^rgba?\((\d+),\s*(\d+),\s*(\d+)/.exec(value);
  const [r, g, b] = hex ? hex.slice(1).map((h) => parseInt(h, 16)) : rgba ? rgba.slice(1, 4).map(Number) : [128, 128, 128];
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 ? '#000000' : '#ffffff';
}

function scheduleRender(): void {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(() => {
    frameQueued = false;
    render();
  });
}

function render(): void {
  const started = performance.now();
  const width = stage.clientWidth;
  const height = stage.clientHeight;
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
  }
  const cells = map?.cells ?? [];
  rects = layoutTreemap(cells, { x: 0, y: 0, w: width, h: height });
  heat = heatOf(cells, overlay);
  leaves = [];
  for (let i = 1; i < cells.length; i++) if (cells[i].kind !== 'folder' && rects[i].w > 0 && rects[i].h > 0) leaves.push(i);
  if (!leaves.includes(focused)) focused = heaviestLeaf();
  paint(ratio);
  const ms = performance.now() - started;
  timing.renders++;
  timing.maxMs = Math.max(timing.maxMs, ms);
  canvas.dataset.renderMs = ms.toFixed(1);
  canvas.dataset.sinceReceivedMs = receivedAt > 0 ? (performance.now() - receivedAt).toFixed(1) : '';
  canvas.dataset.renders = String(timing.renders);
  canvas.dataset.maxRenderMs = timing.maxMs.toFixed(1);
  canvas.dataset.cells = String(cells.length);
  canvas.dataset.phase = map?.phase ?? 'none';
  canvas.dataset.waiting = String((map?.totals.filesByState[MAP_STATES.indexOf('waiting')] ?? 0) + (map?.totals.filesByState[MAP_STATES.indexOf('encoding')] ?? 0));
  canvas.dataset.overlay = overlay?.requestId ?? '';
  if (map) vscode.postMessage({ type: 'rendered', ms, cells: cells.length });
}

function heaviestLeaf(): number {
  let best = leaves[0] ?? -1;
  for (const i of leaves) if (heat.weight[i] > (heat.weight[best] ?? 0)) best = i;
  return best;
}

function paint(ratio: number): void {
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = palette.background;
  ctx.fillRect(0, 0, canvas.width / ratio, canvas.height / ratio);
  const cells = map?.cells ?? [];
  ctx.font = `11px ${getComputedStyle(document.body).fontFamily || 'sans-serif'}`;
  ctx.textBaseline = 'top';
  for (let i = 1; i < cells.length; i++) {
    const r = rects[i];
    if (r.w < 0.5 || r.h < 0.5) continue;
    const cell = cells[i];
    if (cell.kind === 'folder') {
      ctx.fillStyle = palette.folder;
      ctx.fillRect(r.x, r.y, r.w, r.h);
      ctx.strokeStyle = palette.border;
      ctx.lineWidth = 1;
      ctx.strokeRect(r.x + 0.5, r.y + 0.5, r.w - 1, r.h - 1);
      if (hasHeader(r)) drawLabel(ctx, cell.path.slice(cell.path.lastIndexOf('/') + 1), r, palette.text);
      continue;
    }
    paintLeaf(ctx, i, cell, r);
  }
  if (hovered > 0 && rects[hovered]) outline(ctx, rects[hovered], palette.text, 1);
  if (focused > 0 && rects[focused] && document.activeElement === canvas)
    outline(ctx, rects[focused], getComputedStyle(document.documentElement).getPropertyValue('--vscode-focusBorder').trim() || '#007fd4', 2);
}

function paintLeaf(ctx: CanvasRenderingContext2D, i: number, cell: MapCell, r: Rect): void {
  // with an overlay the states fade, so what was read stands out
  ctx.globalAlpha = overlay ? 0.25 : cell.kind === 'rest' ? 0.65 : 1;
  ctx.fillStyle = palette[cell.state];
  ctx.fillRect(r.x, r.y, r.w, r.h);
  ctx.globalAlpha = 1;
  const read = heat.weight[i];
  if (read > 0) {
    ctx.globalAlpha = 0.3 + 0.5 * (read / heat.max);
    ctx.fillStyle = palette.heat;
    ctx.fillRect(r.x, r.y, r.w, r.h);
    ctx.globalAlpha = 1;
    // where in the file: a band per line range read, top = line 1
    const files = heat.files.get(i);
    if (cell.kind === 'file' && files && r.h > 8) {
      ctx.fillStyle = palette.heat;
      for (const file of files) {
        const top = Math.max(...file.ranges.map((range) => range.weight));
        for (const range of file.ranges) {
          const y0 = r.y + ((range.startLine - 1) / file.lines) * r.h;
          const y1 = r.y + (range.endLine / file.lines) * r.h;
          ctx.globalAlpha = 0.25 + 0.75 * (range.weight / top);
          ctx.fillRect(r.x + r.w * 0.75, y0, r.w * 0.25, Math.max(2, y1 - y0));
        }
      }
      ctx.globalAlpha = 1;
    }
  }
  ctx.strokeStyle = palette.border;
  ctx.lineWidth = 0.5;
  ctx.strokeRect(r.x, r.y, r.w, r.h);
  if (r.w > 40 && r.h > 14) drawLabel(ctx, label(cell), r, overlay ? palette.text : textOn[read > 0 ? 'heat' : cell.state]);
}

function drawLabel(ctx: CanvasRenderingContext2D, text: string, r: Rect, colour: string): void {
  ctx.save();
  ctx.beginPath();
  ctx.rect(r.x, r.y, r.w, Math.min(r.h, 16));
  ctx.clip();
  ctx.fillStyle = colour;
  ctx.fillText(text, r.x + 3, r.y + 2);
  ctx.restore();
}

function outline(ctx: CanvasRenderingContext2D, r: Rect, colour: string, width: number): void {
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.strokeRect(r.x + width / 2, r.y + width / 2, Math.max(0, r.w - width), Math.max(0, r.h - width));
}

function renderChrome(): void {
  const totals = map?.totals;
  const phase = map?.phase === 'scanning' ? 'listing the files…' : map?.phase === 'indexing' ? 'indexing' : '';
  summary.textContent = totals
    ? `${status.label}${phase && !status.label.includes('index') ? ` · ${phase}` : ''} · ${totals.files.toLocaleString('en')} files · ${totals.tokens.toLocaleString('en')} of ${totals.budget.toLocaleString('en')} tokens${totals.deadTokens > 0 ? ` · ${totals.deadTokens.toLocaleString('en')} tombstoned` : ''}${map && map.aggregated > 0 ? ` · ${map.aggregated.toLocaleString('en')} small files drawn together` : ''}`
    : status.label;
  const words: Record<(typeof MAP_STATES)[number], string> = { encoded: 'encoded', patched: 'patched', encoding: 'being encoded', waiting: 'waiting', excluded: 'left out' };
  legend.replaceChildren(
    ...MAP_STATES.map((state, i) => legendItem(palette[state], `${words[state]} ${(totals?.filesByState[i] ?? 0).toLocaleString('en')}`)),
    ...(overlay ? [legendItem(palette.heat, 'read by the answer')] : []),
  );
  canvas.setAttribute(
    'aria-label',
    totals
      ? `Treemap of the workspace: ${totals.files} files; ${MAP_STATES.map((s, i) => `${totals.filesByState[i]} ${words[s]}`).join(', ')}. Arrow keys move between files, Enter opens one.`
      : 'Treemap of the workspace (empty)',
  );
  clearButton.hidden = overlay === undefined;
  renderReadPanel();
}

function legendItem(colour: string, text: string): HTMLElement {
  const item = document.createElement('span');
  item.className = 'legend-item';
  item.setAttribute('role', 'listitem');
  const swatch = document.createElement('span');
  swatch.className = 'swatch';
  swatch.style.background = colour;
  item.append(swatch, text);
  return item;
}

/** The text alternative: the top places as a list of links, and each file read as a strip of its line ranges. */
function renderReadPanel(): void {
  readPanel.hidden = overlay === undefined;
  if (!overlay) return;
  readTitle.textContent = 'What the model read';
  readSummary.textContent = `${question ? `For “${question.length > 120 ? `${question.slice(0, 119)}…` : question}”: ` : ''}${overlay.hits.toLocaleString('en')} block selections${overlay.unmapped > 0 ? `, ${(overlay.unmapped * 100).toFixed(0)}% on text edited away since` : ''}.`;
  placesList.replaceChildren(
    ...overlay.places.map((place) => {
      const item = document.createElement('li');
      const button = document.createElement('button');
      button.className = 'place';
      button.textContent = `${place.path}:${place.startLine}${place.endLine > place.startLine ? `–${place.endLine}` : ''}`;
      const share = document.createElement('span');
      share.className = 'share';
      share.textContent = `${(place.weight * 100).toFixed(1)}%`;
      button.append(share);
      button.setAttribute('aria-label', `Open ${place.path} at lines ${place.startLine} to ${place.endLine}, ${(place.weight * 100).toFixed(1)} percent of what the answer read`);
      button.addEventListener('click', () => open(place.path, place.startLine, place.endLine));
      item.append(button);
      return item;
    }),
  );
  if (overlay.places.length === 0)
    placesList.replaceChildren(
      Object.assign(document.createElement('li'), { textContent: 'The sparse layers selected no block beyond the forced ones (a short context is read densely).' }),
    );
  filesList.replaceChildren(
    ...overlay.files.slice(0, 12).map((file) => {
      const item = document.createElement('li');
      const name = document.createElement('div');
      name.className = 'strip-name';
      name.textContent = `${file.path} (${(file.weight * 100).toFixed(1)}%, ${file.lines} lines)`;
      const strip = document.createElement('div');
      strip.className = 'strip';
      strip.setAttribute('role', 'group');
      strip.setAttribute('aria-label', `Line ranges read in ${file.path}`);
      const max = Math.max(...file.ranges.map((r) => r.weight));
      for (const range of file.ranges) {
        const band = document.createElement('button');
        band.className = 'band';
        band.style.left = `${((range.startLine - 1) / file.lines) * 100}%`;
        band.style.width = `${Math.max(0.8, ((range.endLine - range.startLine + 1) / file.lines) * 100)}%`;
        band.style.opacity = String(0.35 + 0.65 * (range.weight / max));
        band.title = `lines ${range.startLine}–${range.endLine}: ${(range.weight * 100).toFixed(1)}%`;
        band.setAttribute('aria-label', `Open lines ${range.startLine} to ${range.endLine}`);
        band.addEventListener('click', () => open(file.path, range.startLine, range.endLine));
        strip.append(band);
      }
      item.append(name, strip);
      return item;
    }),
  );
}

function open(path: string, startLine: number, endLine: number): void {
  vscode.postMessage({ type: 'open', path, startLine, endLine });
}

/** Opens a cell's file: at the heaviest range the answer read there, else at the top. */
function openCell(index: number): void {
  const cell = map?.cells[index];
  if (!cell || cell.kind !== 'file' || cell.reason === 'ignored') return;
  const ranges = heat.files.get(index)?.flatMap((f) => f.ranges) ?? [];
  const best = ranges.sort((a, b) => b.weight - a.weight)[0];
  open(cell.path, best?.startLine ?? 1, best?.endLine ?? 1);
}

function announce(index: number): void {
  const cell = map?.cells[index];
  if (!cell) return;
  focusInfo.textContent = describe(cell, heat.weight[index]);
  canvas.dataset.focused = cell.path;
}

function showTooltip(index: number, x: number, y: number): void {
  const cell = map?.cells[index];
  if (!cell || index === 0) {
    tooltip.hidden = true;
    return;
  }
  const lines = [
    cell.kind === 'rest' ? `${cell.path || '(workspace)'}/ — ${cell.detail ?? ''}` : cell.path,
    `${cell.tokens.toLocaleString('en')} tokens${cell.kind !== 'file' ? ` in ${cell.files.toLocaleString('en')} files` : ''}`,
    stateText(cell),
  ];
  if (cell.kind === 'file' && cell.detail) lines.push(cell.detail);
  if (cell.patchedTokens)
    lines.push(`${cell.patchedTokens.toLocaleString('en')} tokens in patches${cell.deadTokens ? `, ${cell.deadTokens.toLocaleString('en')} tombstoned` : ''}`);
  if (heat.weight[index] > 0) lines.push(`read: ${(heat.weight[index] * 100).toFixed(1)}% of the answer's selections`);
  tooltip.replaceChildren(...lines.map((text, i) => Object.assign(document.createElement(i === 0 ? 'strong' : 'div'), { textContent: text })));
  tooltip.hidden = false;
  const box = stage.getBoundingClientRect();
  tooltip.style.left = `${Math.min(x + 14, box.width - tooltip.offsetWidth - 4)}px`;
  tooltip.style.top = `${Math.min(y + 14, box.height - tooltip.offsetHeight - 4)}px`;
}

canvas.addEventListener('mousemove', (event) => {
  const index = cellAt(rects, event.offsetX, event.offsetY);
  if (index !== hovered) {
    hovered = index;
    scheduleRender();
  }
  showTooltip(index, event.offsetX, event.offsetY);
});
canvas.addEventListener('mouseleave', () => {
  hovered = -1;
  tooltip.hidden = true;
  scheduleRender();
});
canvas.addEventListener('click', (event) => {
  const index = cellAt(rects, event.offsetX, event.offsetY);
  if (index > 0) {
    focused = index;
    openCell(index);
  }
});
canvas.addEventListener('focus', () => {
  announce(focused);
  scheduleRender();
});
canvas.addEventListener('blur', () => scheduleRender());
canvas.addEventListener('keydown', (event) => {
  const directions: Record<string, 'left' | 'right' | 'up' | 'down'> = { ArrowLeft: 'left', ArrowRight: 'right', ArrowUp: 'up', ArrowDown: 'down' };
  const direction = directions[event.key];
  if (direction && focused > 0) {
    event.preventDefault();
    focused = neighbour(rects, leaves, focused, direction);
  } else if (event.key === 'Home' || event.key === 'End') {
    event.preventDefault();
    focused = event.key === 'Home' ? (leaves[0] ?? -1) : (leaves[leaves.length - 1] ?? -1);
  } else if (event.key === 'Enter') {
    event.preventDefault();
    openCell(focused);
    return;
  } else if (event.key === 'Escape' && overlay) {
    vscode.postMessage({ type: 'clearOverlay' });
    return;
  } else return;
  announce(focused);
  scheduleRender();
});

clearButton.addEventListener('click', () => vscode.postMessage({ type: 'clearOverlay' }));
exportButton.addEventListener('click', () => {
  if (map) vscode.postMessage({ type: 'exportSvg', svg: mapSvg(map, overlay, palette, Math.max(16, Math.round(stage.clientWidth)), Math.max(16, Math.round(stage.clientHeight))) });
});

window.addEventListener('message', (event: MessageEvent<unknown>) => {
  const arrived = performance.now();
  const message = parseMapHostMessage(event.data);
  if (message === undefined) {
    console.warn('map view: ignored a malformed message');
    return;
  }
  receivedAt = arrived;
  switch (message.type) {
    case 'map':
      map = message.map;
      status = message.status;
      break;
    case 'status':
      status = message.status;
      if (!status.available) map = undefined;
      break;
    case 'overlay':
      overlay = message.overlay;
      question = message.question;
      focused = -1;
      break;
    case 'clearOverlay':
      overlay = undefined;
      question = '';
      break;
  }
  renderChrome();
  scheduleRender();
  timing.maxHandleMs = Math.max(timing.maxHandleMs, performance.now() - arrived);
  canvas.dataset.maxHandleMs = timing.maxHandleMs.toFixed(1);
});

new ResizeObserver(() => scheduleRender()).observe(stage);
// a theme change rewrites the variables on <html> and the class on <body>: read the palette again
new MutationObserver(() => {
  readPalette();
  renderChrome();
  scheduleRender();
}).observe(document.documentElement, { attributes: true, attributeFilter: ['style', 'class'] });
new MutationObserver(() => {
  readPalette();
  scheduleRender();
}).observe(document.body, { attributes: true, attributeFilter: ['class'] });

readPalette();
renderChrome();
vscode.postMessage({ type: 'ready' });
