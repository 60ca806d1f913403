// Which files an answer drew on: the blocks of the workspace part the sparse layers
// selected most while reading the question and writing the answer (beyond the forced
// sink and local blocks), mapped back to files and line ranges.
import type { SelectionRecord } from '../model/sala-model.js';
import type { ContextCore } from './context-core.js';
import type { Source } from '../vocabulary.js';
import { lineOf, piecesOf } from './file-span.js';

/** Counts, per block of the workspace part, how often a query picked it beyond the forced ones. */
export function countHits(core: ContextCore, record: SelectionRecord, contextLength: number, hits: Map<number, number>): void {
  const { blockSize, initBlocks } = core.model.config.sparse;
  const { localBlocks } = core.model.sizes;
  for (let row = 0; row < record.selected.length / record.k; row++) {
    const position = record.firstPosition + (row % record.queries);
    const localFrom = Math.floor(position / blockSize) - localBlocks;
    for (let j = 0; j < record.k; j++) {
      const block = record.selected[row * record.k + j];
      // Forced blocks (the sink and the local window) and the question's own blocks say nothing about sources.
      if (block < initBlocks || block >= localFrom || (block + 1) * blockSize > contextLength) continue;
      hits.set(block, (hits.get(block) ?? 0) + 1);
    }
  }
}

/** Maps the most-selected blocks back to files and line ranges. */
export function sourcesOf(core: ContextCore, hits: Map<number, number>, limit = 5): Source[] {
  const { blockSize } = core.model.config.sparse;
  const total = [...hits.values()].reduce((a, b) => a + b, 0);
  if (total === 0) return [];
  const spans = core.layout();
  const byFileLine = new Map<string, Source>();
  for (const [block, count] of [...hits].sort((a, b) => b[1] - a[1])) {
    const from = block * blockSize;
    const to = from + blockSize;
    for (const span of spans) {
      if (span.end <= from || span.start >= to) continue;
      // Through the file's pieces: a patch's lines are reported where they are in the file now.
      for (const piece of piecesOf(span)) {
        const a = Math.max(from, piece.at);
        const b = Math.min(to, piece.at + piece.length);
        if (a >= b) continue;
        const startLine = lineOf(span, piece.from + a - piece.at);
        const endLine = lineOf(span, piece.from + b - 1 - piece.at);
        const key = `${span.path}:${startLine}`;
        const entry = byFileLine.get(key) ?? { path: span.path, startLine, endLine, weight: 0 };
        entry.weight += count / total;
        byFileLine.set(key, entry);
      }
    }
  }
  return mergeAdjacent([...byFileLine.values()]).sort((a, b) => b.weight - a.weight).slice(0, limit);
}

/** Joins ranges of one file that touch or overlap. */
export function mergeAdjacent(ranges: Source[]): Source[] {
  const byPath = new Map<string, Source[]>();
  for (const r of ranges) byPath.set(r.path, [...(byPath.get(r.path) ?? []), r]);
  const merged: Source[] = [];
  for (const list of byPath.values()) {
    list.sort((a, b) => a.startLine - b.startLine);
    for (const r of list) {
      const last = merged[merged.length - 1];
      if (last && last.path === r.path && r.startLine <= last.endLine + 1) {
        last.endLine = Math.max(last.endLine, r.endLine);
        last.weight += r.weight;
      } else merged.push({ ...r });
    }
  }
  return merged;
}
