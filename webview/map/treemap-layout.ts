// A nested squarified treemap (Bruls, Huizing & van Wijk, 2000): each folder's
// cells fill its rectangle in rows that keep them as square as they can be, the
// largest first. Folders large enough keep a band at the top for their name and a
// pixel of padding, so the nesting shows. Pure: used by the view to draw and by the
// extension to export the same picture as SVG.

import type { MapCell } from '../../engine/vocabulary.js';

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface TreemapOptions {
  /** Height of a folder's name band, where the folder is big enough to show it. */
  header: number;
  padding: number;
}

export const DEFAULT_TREEMAP: TreemapOptions = { header: 16, padding: 2 };

/** Rectangles for every cell (preorder, parents first), the root filling `bounds`; a cell too small to draw gets w = h = 0. */
export function layoutTreemap(cells: readonly MapCell[], bounds: Rect, options: TreemapOptions = DEFAULT_TREEMAP): Rect[] {
  const rects: Rect[] = cells.map(() => ({ x: 0, y: 0, w: 0, h: 0 }));
  if (cells.length === 0) return rects;
  const children: number[][] = cells.map(() => []);
  for (let i = 1; i < cells.length; i++) children[cells[i].parent].push(i);
  rects[0] = { ...bounds };
  for (let i = 0; i < cells.length; i++) {
    if (cells[i].kind !== 'folder' || children[i].length === 0) continue;
    const r = rects[i];
    if (r.w < 1 || r.h < 1) continue;
    const inner = innerRect(r, i === 0 ? 0 : options.padding, i === 0 ? 0 : options.header);
    const kids = children[i].filter((c) => cells[c].size > 0).sort((a, b) => cells[b].size - cells[a].size);
    squarify(
      kids.map((c) => cells[c].size),
      inner,
    ).forEach((rect, k) => (rects[kids[k]] = rect));
  }
  return rects;
}

/** A folder's room for its cells: inside its padding, below its name band where it has room for one. */
function innerRect(r: Rect, padding: number, header: number): Rect {
  const band = r.h > header * 3 && r.w > 48 ? header : 0;
  const x = r.x + padding;
  const y = r.y + padding + band;
  return { x, y, w: Math.max(0, r.w - 2 * padding), h: Math.max(0, r.h - 2 * padding - band) };
}

/** Whether a folder's rectangle has the name band (the same test as innerRect). */
export function hasHeader(r: Rect, options: TreemapOptions = DEFAULT_TREEMAP): boolean {
  return r.h > options.header * 3 && r.w > 48;
}

/** Lays out `sizes` (descending) in `r`: rows along the shorter side, each row kept while it makes the worst aspect ratio no worse. */
export function squarify(sizes: readonly number[], r: Rect): Rect[] {
  const total = sizes.reduce((a, b) => a + b, 0);
  const out: Rect[] = [];
  if (total <= 0 || r.w <= 0 || r.h <= 0) return sizes.map(() => ({ x: r.x, y: r.y, w: 0, h: 0 }));
  const scale = (r.w * r.h) / total;
  const areas = sizes.map((s) => s * scale);
  let { x, y, w, h } = r;
  let i = 0;
  while (i < areas.length) {
    const side = Math.min(w, h);
    let end = i + 1;
    let rowSum = areas[i];
    let worstSoFar = worst(areas[i], areas[i], rowSum, side);
    while (end < areas.length) {
      const nextSum = rowSum + areas[end];
      const next = worst(areas[i], areas[end], nextSum, side);
      if (next > worstSoFar) break;
      worstSoFar = next;
      rowSum = nextSum;
      end++;
    }
    const thickness = side > 0 ? rowSum / side : 0;
    let offset = 0;
    for (let k = i; k < end; k++) {
      const length = thickness > 0 ? areas[k] / thickness : 0;
      // the row runs along the shorter side of what is left
      out.push(w >= h ? { x, y: y + offset, w: thickness, h: length } : { x: x + offset, y, w: length, h: thickness });
      offset += length;
    }
    if (w >= h) {
      x += thickness;
      w -= thickness;
    } else {
      y += thickness;
      h -= thickness;
    }
    i = end;
  }
  return out;
}

/** The worst aspect ratio in a row of areas (largest `max`, smallest `min`, sum `sum`) laid along `side`. */
function worst(max: number, min: number, sum: number, side: number): number {
  const s2 = side * side;
  const sum2 = sum * sum;
  return Math.max((s2 * max) / sum2, sum2 / (s2 * min));
}

/** The innermost drawn cell under a point, or −1: cells nest inside their folder and siblings do not overlap, so in preorder the last hit is the deepest. */
export function cellAt(rects: readonly Rect[], x: number, y: number): number {
  let found = -1;
  for (let i = 0; i < rects.length; i++) {
    const r = rects[i];
    if (r.w > 0 && r.h > 0 && x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h) found = i;
  }
  return found;
}

/** The nearest drawn leaf from `from` in a direction (arrow keys), or `from` when there is none that way. */
export function neighbour(rects: readonly Rect[], leaves: readonly number[], from: number, direction: 'left' | 'right' | 'up' | 'down'): number {
  const a = rects[from];
  const ax = a.x + a.w / 2;
  const ay = a.y + a.h / 2;
  let best = from;
  let bestScore = Number.POSITIVE_INFINITY;
  for (const i of leaves) {
    if (i === from) continue;
    const b = rects[i];
    if (b.w <= 0 || b.h <= 0) continue;
    const dx = b.x + b.w / 2 - ax;
    const dy = b.y + b.h / 2 - ay;
    const along = direction === 'left' ? -dx : direction === 'right' ? dx : direction === 'up' ? -dy : dy;
    const across = direction === 'left' || direction === 'right' ? Math.abs(dy) : Math.abs(dx);
    if (along <= 0) continue;
    // straight ahead beats diagonal: what lies across counts double
    const score = along + 2 * across;
    if (score < bestScore) {
      bestScore = score;
      best = i;
    }
  }
  return best;
}
