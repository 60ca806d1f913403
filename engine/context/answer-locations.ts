// From an answer to places in the workspace. The default model answers "where is X
// defined / used?" by copying the line it means (docs/workspace-questions.md); this
// finds that line among the workspace's live lines. Where it occurs more than once,
// the occurrence the sparse layers attended to most while answering wins: the model
// copied it from somewhere it read.

import type { AnswerLocation } from '../vocabulary.js';

export type { AnswerLocation };

/** The workspace as the resolver sees it: each live file's lines, and how much the answer attended to a line. */
export interface LocationSearch {
  /** Live files, in context order. */
  paths(): Iterable<string>;
  /** The file's current lines (without newlines). */
  lines(path: string): readonly string[];
  /** Attention weight of the block holding this line (0 when none of its blocks was selected). */
  weight(path: string, line: number): number;
}

/** The sentence the model answers with for a name that is nowhere in the workspace. */
export const NOT_FOUND = /`[^`]+` is not in the workspace\./;
/** Shorter answer lines are too common to point anywhere (`}`, `else:`, `return x`). */
const MIN_LINE_CHARS = 6;
/** An answer line that only shares its start with workspace lines (the model stopped early, or slipped
 * after copying the start) points to the line sharing the longest start, when that is this long and covers
 * this share of the answer line (so `function isValidStatusCode(` is not taken for `function isValidUTF8(`). */
const MIN_PREFIX_CHARS = 12;
const MIN_PREFIX_SHARE = 0.6;
/** At most this many places per answer (the model lists up to three uses). */
const MAX_LOCATIONS = 5;

/** The places an answer points to, best first; none for a not-found answer or one that copies no line. */
export function resolveLocations(answer: string, search: LocationSearch): AnswerLocation[] {
  if (NOT_FOUND.test(answer)) return [];
  const wanted = answer
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length >= MIN_LINE_CHARS);
  if (wanted.length === 0) return [];
  const exact = new Map<string, Candidate[]>(wanted.map((line) => [line, []]));
  const starting = new Map<string, { shared: number; list: Candidate[] }>(
    wanted.filter((line) => line.length >= MIN_PREFIX_CHARS).map((line) => [line, { shared: Math.max(MIN_PREFIX_CHARS, Math.ceil(MIN_PREFIX_SHARE * line.length)) - 1, list: [] }]),
  );
  for (const path of search.paths()) {
    search.lines(path).forEach((raw, index) => {
      const text = raw.trim();
      if (text.length < MIN_LINE_CHARS) return;
      exact.get(text)?.push({ path, line: index + 1, text });
      for (const [answerLine, best] of starting) {
        const shared = sharedStart(answerLine, text);
        if (shared < best.shared) continue;
        if (shared > best.shared) {
          best.shared = shared;
          best.list = [];
        }
        best.list.push({ path, line: index + 1, text });
      }
    });
  }
  const found: AnswerLocation[] = [];
  const seen = new Set<string>();
  for (const line of wanted) {
    const candidates = exact.get(line)?.length ? exact.get(line) : uniqueOrAttended(starting.get(line)?.list ?? [], search);
    const best = mostAttended(candidates ?? [], search);
    if (!best) continue;
    const key = `${best.path}:${best.line}`;
    if (seen.has(key)) continue;
    seen.add(key);
    found.push(best);
    if (found.length === MAX_LOCATIONS) break;
  }
  return found;
}

/** Length of the common start of two strings. */
function sharedStart(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

interface Candidate {
  path: string;
  line: number;
  text: string;
}

/** A line that only starts workspace lines points somewhere when one of them is the one, or the answer attended to some. */
function uniqueOrAttended(candidates: Candidate[], search: LocationSearch): Candidate[] {
  if (candidates.length <= 1) return candidates;
  return candidates.filter((c) => search.weight(c.path, c.line) > 0);
}

/** The candidate in the most-attended block; the first in context order among equals. */
function mostAttended(candidates: readonly Candidate[], search: LocationSearch): Candidate | undefined {
  let best: Candidate | undefined;
  let bestWeight = -1;
  for (const candidate of candidates) {
    const weight = search.weight(candidate.path, candidate.line);
    if (weight > bestWeight) {
      best = candidate;
      bestWeight = weight;
    }
  }
  return best;
}
