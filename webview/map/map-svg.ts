// The treemap as a standalone SVG file: the same layout and colours the view draws
// (the theme's colours as the view resolved them), an answer's heat where one is
// shown, and a <title> per cell so a viewer's hover says what it is. Only
// rectangles, text and titles: the host checks that before it saves the file.

import type { AnswerOverlay, MapCell, WorkspaceMap } from '../../engine/vocabulary.js';
import { heatOf } from './heat.js';
import { PALETTE_KEYS, type Palette } from './protocol.js';
import { DEFAULT_TREEMAP, hasHeader, layoutTreemap } from './treemap-layout.js';

export function mapSvg(map: WorkspaceMap, overlay: AnswerOverlay | undefined, themePalette: Palette, width: number, height: number): string {
  // colours land in attributes: escaped like every other text
  const palette = { ...themePalette };
  for (const key of PALETTE_KEYS) palette[key] = escapeXml(themePalette[key]);
  const rects = layoutTreemap(map.cells, { x: 0, y: 0, w: width, h: height });
  const heat = heatOf(map.cells, overlay);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  parts.push(
    `<title>${escapeXml(overlay ? `Workspace map: what the model read (${overlay.places.length} places)` : `Workspace map: ${map.totals.files} files, ${map.totals.tokens} tokens`)}</title>`,
  );
  parts.push(`<rect width="${width}" height="${height}" fill="${palette.background}"/>`);
  map.cells.forEach((cell, i) => {
    const r = rects[i];
    if (r.w < 0.5 || r.h < 0.5 || i === 0) return;
    const box = `x="${r.x.toFixed(1)}" y="${r.y.toFixed(1)}" width="${r.w.toFixed(1)}" height="${r.h.toFixed(1)}"`;
    const title = `<title>${escapeXml(describe(cell, heat.weight[i]))}</title>`;
    if (cell.kind === 'folder') {
      parts.push(`<rect ${box} fill="${palette.folder}" stroke="${palette.border}" stroke-width="1">${title}</rect>`);
      if (hasHeader(r, DEFAULT_TREEMAP))
        parts.push(`<text x="${(r.x + 4).toFixed(1)}" y="${(r.y + 12).toFixed(1)}" fill="${palette.text}">${escapeXml(fit(cell.path.split('/').pop() ?? '', r.w))}</text>`);
      return;
    }
    const faded = overlay !== undefined;
    parts.push(
      `<rect ${box} fill="${palette[cell.state]}" fill-opacity="${faded ? 0.3 : cell.kind === 'rest' ? 0.6 : 1}" stroke="${palette.border}" stroke-width="0.5">${title}</rect>`,
    );
    if (heat.weight[i] > 0) parts.push(`<rect ${box} fill="${palette.heat}" fill-opacity="${(0.35 + 0.65 * (heat.weight[i] / heat.max)).toFixed(2)}"/>`);
    if (r.w > 40 && r.h > 14) parts.push(`<text x="${(r.x + 3).toFixed(1)}" y="${(r.y + 12).toFixed(1)}" fill="${palette.text}">${escapeXml(fit(label(cell), r.w))}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

export function label(cell: MapCell): string {
  if (cell.kind === 'rest') return `${cell.files} more`;
  return cell.path.slice(cell.path.lastIndexOf('/') + 1) || '(workspace)';
}

/** What hovering a cell says (also the SVG's title per cell). */
export function describe(cell: MapCell, read = 0): string {
  const where = cell.kind === 'rest' ? `${cell.path || '(workspace)'}: ${cell.detail ?? `${cell.files} smaller files`}` : cell.path || '(workspace)';
  const tokens = `${Math.round(cell.kind === 'file' && cell.state === 'excluded' ? 0 : cell.tokens).toLocaleString('en')} tokens in the context`;
  const parts = [where, cell.kind === 'file' ? tokens : `${cell.files.toLocaleString('en')} files, ${tokens}`, stateText(cell)];
  if (cell.kind === 'file' && cell.detail) parts.push(cell.detail);
  if (cell.patchedTokens)
    parts.push(`${cell.patchedTokens.toLocaleString('en')} tokens in patches at the tail${cell.deadTokens ? `, ${cell.deadTokens.toLocaleString('en')} tombstoned` : ''}`);
  if (read > 0) parts.push(`read: ${(read * 100).toFixed(1)}% of the answer's selections`);
  return parts.join(' · ');
}

const STATE_WORDS = {
  encoded: 'encoded',
  patched: 'patched (edited since it was encoded)',
  encoding: 'being encoded now',
  waiting: 'waiting to be encoded',
  excluded: 'left out of the context',
} as const;
const REASON_WORDS = {
  ignored: 'ignored',
  binary: 'binary',
  'too-large': 'too large',
  generated: 'generated',
  minified: 'minified',
  'symlink-loop': 'a symbolic-link loop',
  'outside-workspace': 'outside the workspace',
  unreadable: 'unreadable',
  'over-budget': 'over the token budget',
} as const;

export function stateText(cell: MapCell): string {
  if (cell.kind === 'file') return cell.state === 'excluded' && cell.reason ? `left out: ${REASON_WORDS[cell.reason]}` : STATE_WORDS[cell.state];
  return `mostly ${STATE_WORDS[cell.state]}`;
}

function fit(text: string, width: number): string {
  const chars = Math.max(1, Math.floor((width - 6) / 6.5));
  return text.length <= chars ? text : `${text.slice(0, Math.max(1, chars - 1))}…`;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}
