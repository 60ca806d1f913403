// Which files an answer drew on: the blocks of the workspace part the sparse layers
// selected most while reading the question and writing the answer (beyond the forced
// sink and local blocks), mapped back to files and line ranges.
import type { SelectionRecord } from '../model/sala-model.js';
import type { ContextCore } from './context-core.js';
import type { Source } from '../vocabulary.js';
import type { FileSpan } from './context-types.js';
import type { AnswerLocation, LocationSearch } from './answer-locations.js';
import { idsOf, lineOf, piecesOf } from './file-span.js';

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

/**
 * Maps the most-selected blocks back to files and line ranges. The place the answer
 * resolved to (`first`) leads when the sparse layers selected its block: the model
 * copied it from there.
 */
export function sourcesOf(core: ContextCore, hits: Map<number, number>, limit = 5, first?: AnswerLocation): Source[] {
  const ranked = rankedSources(core, hits);
  if (!first) return ranked.slice(0, limit);
  const weight = blockWeight(core, hits, first.path, first.line);
  if (weight === 0) return ranked.slice(0, limit);
  const lead: Source = { path: first.path, startLine: first.line, endLine: first.line, weight };
  return [lead, ...ranked.filter((s) => s.path !== lead.path || s.endLine < lead.startLine || s.startLine > lead.endLine)].slice(0, limit);
}

/** The answer's view of the workspace for resolving a copied line: live files, their lines, the attention on each. */
export function locationSearch(core: ContextCore, hits: Map<number, number>): LocationSearch {
  return {
    paths: () => core.layout().map((span) => span.path),
    lines: (path) => {
      const span = core.spans.get(path);
      return span ? linesOf(core, span) : [];
    },
    weight: (path, line) => blockWeight(core, hits, path, line),
  };
}

/** Share of the answer's selections that went to the block holding the first token of `line`. */
function blockWeight(core: ContextCore, hits: Map<number, number>, path: string, line: number): number {
  const span = core.spans.get(path);
  if (!span || line < 1 || line > span.lineStarts.length) return 0;
  const offset = span.lineStarts[line - 1];
  const piece = piecesOf(span).find((p) => offset >= p.from && offset < p.from + p.length);
  if (!piece) return 0;
  const block = Math.floor((piece.at + offset - piece.from) / core.model.config.sparse.blockSize);
  let total = 0;
  for (const count of hits.values()) total += count;
  return total === 0 ? 0 : (hits.get(block) ?? 0) / total;
}

/** A file's current lines, decoded from its ids once per content (the context keeps ids, not text). */
const decodedLines = new WeakMap<ContextCore, Map<string, { contentHash: string; lines: string[] }>>();
function linesOf(core: ContextCore, span: FileSpan): string[] {
  let cache = decodedLines.get(core);
  if (!cache) decodedLines.set(core, (cache = new Map()));
  const hit = cache.get(span.path);
  if (hit?.contentHash === span.contentHash) return hit.lines;
  const ids = idsOf(span, core.sequence.tokens).slice(span.headerTokens);
  const lines = core.tokenizer.decode(ids).split('\n');
  cache.set(span.path, { contentHash: span.contentHash, lines });
  return lines;
}

function rankedSources(core: ContextCore, hits: Map<number, number>): Source[] {
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
  return mergeAdjacent([...byFileLine.values()]).sort((a, b) => b.weight - a.weight);
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
