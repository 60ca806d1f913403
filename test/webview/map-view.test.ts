// The workspace map view's pure parts: message validation both ways, the squarified
// nested layout (areas, nesting, bounds), heat on aggregated files, and the SVG export.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildAnswerOverlay, buildWorkspaceMap, type MapInput } from '../../engine/context/workspace-map.js';
import type { FileSpan } from '../../engine/context/workspace-context.js';
import { heatOf } from '../../webview/map/heat.js';
import { fallbackPalette, parseMapHostMessage, parseMapViewMessage } from '../../webview/map/protocol.js';
import { mapSvg } from '../../webview/map/map-svg.js';
import { cellAt, layoutTreemap, neighbour, squarify } from '../../webview/map/treemap-layout.js';

function span(filePath: string, start: number, lines: number): FileSpan {
  return {
    path: filePath,
    start,
    end: start + 4 + lines * 10,
    headerTokens: 4,
    contentHash: filePath,
    mtimeMs: 0,
    editCount: 0,
    lineStarts: Array.from({ length: lines }, (_, i) => 4 + i * 10),
  };
}

function mapOf(spans: FileSpan[], extra: Partial<MapInput> = {}, maxCells?: number) {
  return buildWorkspaceMap({ spans, overBudget: new Map(), skipped: [], queued: [], deadRanges: [], deadTokens: 0, budget: 1_000_000, phase: 'ready', ...extra }, maxCells);
}

function workspace(files: number): FileSpan[] {
  const spans: FileSpan[] = [];
  let at = 0;
  for (let i = 0; i < files; i++) {
    const s = span(`src/m${i % 7}/f${i}.ts`, at, 1 + (i % 13));
    spans.push(s);
    at = s.end;
  }
  return spans;
}

test('a map from the engine passes the view’s validation unchanged; a broken one is refused', () => {
  const map = mapOf(workspace(300), { skipped: [{ path: 'logo.png', reason: 'binary', detail: 'NUL bytes' }] });
  const status = { label: 'Panorama: ready', available: true };
  assert.deepEqual(parseMapHostMessage({ type: 'map', map, status }), { type: 'map', map, status });
  const broken = [
    { ...map, cells: [] },
    { ...map, cells: map.cells.map((c, i) => (i === 3 ? { ...c, parent: 7 } : c)) },
    { ...map, cells: map.cells.map((c, i) => (i === 3 ? { ...c, path: '../etc/passwd' } : c)) },
    { ...map, cells: map.cells.map((c, i) => (i === 3 ? { ...c, state: 'haunted' } : c)) },
    { ...map, cells: map.cells.map((c, i) => (i === 3 ? { ...c, size: -1 } : c)) },
    { ...map, totals: { ...map.totals, filesByState: [1, 2] } },
    { ...map, phase: 'later' },
  ];
  for (const bad of broken) assert.equal(parseMapHostMessage({ type: 'map', map: bad, status }), undefined);
  const overlay = buildAnswerOverlay(
    'r1',
    workspace(30),
    [
      [3, 2],
      [9, 1],
    ],
    64,
  );
  assert.deepEqual(parseMapHostMessage({ type: 'overlay', overlay, question: 'why?' }), { type: 'overlay', overlay, question: 'why?' });
  assert.equal(parseMapHostMessage({ type: 'overlay', overlay: { ...overlay, places: [{ path: 'a', startLine: 5, endLine: 2, weight: 0.1 }] }, question: '' }), undefined);
  assert.equal(parseMapHostMessage({ type: 'eval' }), undefined);
});

test('the view’s requests are validated: paths stay in the workspace, lines are lines, an SVG is shapes and text only', () => {
  assert.deepEqual(parseMapViewMessage({ type: 'open', path: 'src/a.ts', startLine: 3, endLine: 9 }), { type: 'open', path: 'src/a.ts', startLine: 3, endLine: 9 });
  for (const bad of [
    { type: 'open', path: '../x', startLine: 1, endLine: 1 },
    { type: 'open', path: 'a.ts', startLine: 0, endLine: 1 },
    { type: 'open', path: 'a.ts', startLine: 5, endLine: 4 },
    { type: 'rendered', ms: -1, cells: 1 },
    { type: 'exportSvg' },
  ]) {
    assert.equal(parseMapViewMessage(bad), undefined, JSON.stringify(bad));
  }
  // a path and a theme colour that would break out of the markup are escaped: the export still passes
  const map = mapOf([span('<script>alert(1)</script>.ts', 0, 20), span('b.ts', 204, 10)]);
  const svg = mapSvg(map, undefined, { ...fallbackPalette(), heat: '"/><script>alert(2)</script>' }, 400, 300);
  assert.deepEqual(parseMapViewMessage({ type: 'exportSvg', svg }), { type: 'exportSvg', svg });
  for (const injected of [
    '<script>alert(1)</script>',
    '<rect onload="alert(1)"/>',
    '<a href="https://example.com">x</a>',
    '<image href="x.png"/>',
    '<rect fill="url(https://x/y)"/>',
    '<foreignObject></foreignObject>',
  ]) {
    assert.equal(parseMapViewMessage({ type: 'exportSvg', svg: svg.replace('</svg>', `${injected}</svg>`) }), undefined, injected);
  }
  assert.equal(parseMapViewMessage({ type: 'exportSvg', svg: '<html></html>' }), undefined);
});

test('squarify: areas proportional to sizes, inside the rectangle, no overlaps, near-square', () => {
  const sizes = [500, 300, 120, 80, 80, 40, 10, 5];
  const r = { x: 10, y: 20, w: 400, h: 300 };
  const rects = squarify(sizes, r);
  const total = sizes.reduce((a, b) => a + b, 0);
  rects.forEach((q, i) => {
    assert.ok(Math.abs(q.w * q.h - (sizes[i] / total) * r.w * r.h) < 1e-6, `area of ${i}`);
    assert.ok(q.x >= r.x - 1e-9 && q.y >= r.y - 1e-9 && q.x + q.w <= r.x + r.w + 1e-6 && q.y + q.h <= r.y + r.h + 1e-6, `inside: ${JSON.stringify(q)}`);
    for (let j = 0; j < i; j++) {
      const o = rects[j];
      const overlap = Math.max(0, Math.min(q.x + q.w, o.x + o.w) - Math.max(q.x, o.x)) * Math.max(0, Math.min(q.y + q.h, o.y + o.h) - Math.max(q.y, o.y));
      assert.ok(overlap < 1e-6, `${i} and ${j} overlap`);
    }
  });
  assert.ok(Math.max(rects[0].w / rects[0].h, rects[0].h / rects[0].w) < 2.5, 'the largest cell is near-square');
});

test('the nested layout keeps every cell inside its folder; hit-testing finds the deepest; arrows move between neighbours', () => {
  const map = mapOf(workspace(2000), {}, 600);
  const rects = layoutTreemap(map.cells, { x: 0, y: 0, w: 1200, h: 800 });
  map.cells.forEach((cell, i) => {
    if (i === 0) return;
    const r = rects[i];
    const p = rects[cell.parent];
    if (r.w === 0) return;
    assert.ok(r.x >= p.x - 1e-6 && r.y >= p.y - 1e-6 && r.x + r.w <= p.x + p.w + 1e-6 && r.y + r.h <= p.y + p.h + 1e-6, `${cell.path} inside ${map.cells[cell.parent].path}`);
  });
  const leaf = map.cells.findIndex((c) => c.kind === 'file');
  const r = rects[leaf];
  assert.equal(cellAt(rects, r.x + r.w / 2, r.y + r.h / 2), leaf);
  const leaves = map.cells.map((c, i) => (c.kind !== 'folder' && rects[i].w > 0 ? i : -1)).filter((i) => i > 0);
  const right = neighbour(rects, leaves, leaf, 'right');
  if (right !== leaf) assert.ok(rects[right].x + rects[right].w / 2 > r.x + r.w / 2);
  const left = neighbour(rects, leaves, leaf, 'left');
  if (left !== leaf) assert.ok(rects[left].x + rects[left].w / 2 < r.x + r.w / 2);
});

test('heat goes to the file’s cell, or to its folder’s aggregate; the SVG export escapes paths and carries the heat', () => {
  const spans = [span('a/big.ts', 0, 400), ...Array.from({ length: 40 }, (_, i) => span(`a/small${i}.ts`, 4004 + i * 100, 1))];
  spans.push(span('a/<odd>&"name".ts', 9000, 300));
  const map = mapOf(spans, {}, 16);
  const overlay = buildAnswerOverlay(
    'r',
    spans,
    [
      [2, 3],
      [Math.floor(4104 / 64), 1],
      [Math.floor(9000 / 64) + 2, 2],
    ],
    64,
  );
  const heat = heatOf(map.cells, overlay);
  const big = map.cells.findIndex((c) => c.path === 'a/big.ts');
  const rest = map.cells.findIndex((c) => c.kind === 'rest' && c.path === 'a');
  assert.ok(big > 0 && rest > 0);
  assert.ok(heat.weight[big] > 0);
  assert.ok(heat.weight[rest] > 0, 'a small file’s heat lands on its aggregate');
  const svg = mapSvg(map, overlay, fallbackPalette(), 640, 400);
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg" width="640" height="400"/);
  assert.ok(!svg.includes('<odd>'), 'paths are escaped');
  assert.match(svg, /&lt;odd&gt;&amp;&quot;name&quot;/);
  assert.match(svg, new RegExp(`fill="${fallbackPalette().heat}"`));
  assert.ok(svg.endsWith('</svg>'));
});
