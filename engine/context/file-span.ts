// Where a file's tokens are in the sequence: one slice [start, end), or — once an
// edit was patched in — pieces in file order, each after its patch header. These
// helpers map between the file's own ids (header, then content), its lines and the
// sequence positions, without touching the model.
import type { PromptFormat } from './prompt-format.js';
import type { FilePiece, FileSpan } from './context-types.js';

/** The file's pieces in order of `from` (an unpatched file is one piece). */
export function piecesOf(span: FileSpan): FilePiece[] {
  return span.pieces ?? [{ at: span.start, from: 0, length: span.end - span.start, header: 0 }];
}

/** The sequence ranges a file holds (patch headers included). */
export function rangesOf(span: FileSpan): [number, number][] {
  return piecesOf(span).map((p) => [p.at - p.header, p.at + p.length]);
}

/** The file's own tokens (what the budget counts): its ids, without patch headers. */
export function fileTokens(span: FileSpan): number {
  return span.pieces ? span.pieces.reduce((n, p) => n + p.length, 0) : span.end - span.start;
}

/** Live tokens a file holds (patch headers included). */
export function spanTokens(span: FileSpan): number {
  return piecesOf(span).reduce((n, p) => n + p.header + p.length, 0);
}

/** The file's ids, in order, from the sequence's tokens. */
export function idsOf(span: FileSpan, tokens: readonly number[]): number[] {
  if (!span.pieces) return tokens.slice(span.start, span.end);
  const ids: number[] = [];
  for (const piece of span.pieces) for (let i = 0; i < piece.length; i++) ids.push(tokens[piece.at + i]);
  return ids;
}

/** The line (1-based) holding a token offset into the file's ids. */
export function lineOf(span: FileSpan, offset: number): number {
  let lo = 0;
  let hi = span.lineStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (span.lineStarts[mid] <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo + 1;
}

/** The file and line (1-based) a sequence position belongs to; undefined for a tombstone or a patch header. */
export function locateIn(spans: Iterable<FileSpan>, position: number): { path: string; line: number } | undefined {
  for (const span of spans) {
    if (position < span.start || position >= span.end) continue;
    for (const piece of piecesOf(span)) {
      if (position >= piece.at && position < piece.at + piece.length) return { path: span.path, line: lineOf(span, piece.from + position - piece.at) };
    }
  }
  return undefined;
}

/** Token offsets of each line's first token in a file's ids (header, then content). */
export function lineStartsOf(format: PromptFormat, ids: readonly number[], headerTokens: number): number[] {
  const newlines = format.newlinesPerToken(ids.slice(headerTokens));
  const lineStarts = [headerTokens];
  newlines.forEach((n, i) => {
    for (let k = 0; k < n; k++) lineStarts.push(headerTokens + i + 1);
  });
  lineStarts.pop(); // the file's final newline starts no line
  return lineStarts;
}

/** What a span records about the file besides where it is. */
export interface FileMeta {
  contentHash: string;
  mtimeMs: number;
  size?: number;
  editCount: number;
}

/** The span of a file fed whole (one piece) from `start`. */
export function wholeFileSpan(format: PromptFormat, path: string, start: number, ids: readonly number[], headerTokens: number, meta: FileMeta): FileSpan {
  const { contentHash, mtimeMs, size, editCount } = meta;
  return { path, start, end: start + ids.length, headerTokens, lineStarts: lineStartsOf(format, ids, headerTokens), contentHash, mtimeMs, size, editCount };
}
