// Turning an answer into places and judging it.
// Places come from the engine's AskResult.locations where it gives them; otherwise the
// answer is resolved here the way the engine is specified to (each answer line that
// equals a live workspace line once trimmed; several occurrences: the one inside the
// sources the answer attended to, else the first in context order), after any
// `path:line` the answer spells out (the format of the first default model).
import type { Source } from '../../engine/context/workspace-context.js';
import type { Place } from './questions.js';

export interface Location extends Place {
  text?: string;
}

/** Lines within this many of a gold line count as right. */
export const LINE_TOLERANCE = 2;

/** Every line of the context's files, trimmed, to where it occurs (context order). */
export class LineIndex {
  private readonly lines = new Map<string, Location[]>();
  readonly paths: Set<string>;

  constructor(files: readonly { path: string; text: string }[]) {
    this.paths = new Set(files.map((f) => f.path));
    for (const f of files) {
      f.text.split('\n').forEach((raw, i) => {
        const key = raw.trim();
        if (!key) return;
        const list = this.lines.get(key) ?? [];
        list.push({ path: f.path, line: i + 1, text: key });
        this.lines.set(key, list);
      });
    }
  }

  find(line: string): Location[] {
    return this.lines.get(line.trim()) ?? [];
  }
}

const PATH_LINE = /([\w./@$+-]+):(\d+)/g;

/**
 * The places an answer names, best first: the engine's own `locations` when the result
 * has them, else resolved from the text against the workspace's lines.
 */
export function resolveLocations(result: { text: string; sources: readonly Source[]; locations?: readonly Location[] }, index: LineIndex): Location[] {
  if (Array.isArray(result.locations)) return result.locations.map((l) => ({ path: l.path, line: l.line, text: l.text }));
  const out: Location[] = [];
  for (const line of result.text.split('\n')) {
    const spelled = [...line.matchAll(PATH_LINE)].filter((m) => index.paths.has(m[1]));
    if (spelled.length > 0) {
      for (const m of spelled) out.push({ path: m[1], line: Number(m[2]) });
      continue;
    }
    const found = index.find(line);
    if (found.length === 0) continue;
    const attended = found.find((f) => result.sources.some((s) => s.path === f.path && s.startLine <= f.line && f.line <= s.endLine));
    out.push(attended ?? found[0]);
  }
  return out;
}

/** The first place is on a gold path within LINE_TOLERANCE lines of a gold line. */
export function lookupCorrect(locations: readonly Place[], gold: readonly Place[]): boolean {
  const first = locations[0];
  return first !== undefined && gold.some((g) => g.path === first.path && Math.abs(g.line - first.line) <= LINE_TOLERANCE);
}

/** The first source covers the definition line. */
export function attributionCorrect(sources: readonly Source[], definition: Place): boolean {
  const first = sources[0];
  return first !== undefined && first.path === definition.path && first.startLine <= definition.line && definition.line <= first.endLine;
}

const NOT_FOUND = /\bnot (?:in the workspace|found|defined|present|exist)|\bno (?:such|definition|match)|\bdoes(?: not|n't) (?:exist|appear|occur)|\bnowhere\b/i;

/** The answer says the name is not there. */
export function saysNotFound(text: string): boolean {
  return NOT_FOUND.test(text);
}

/** A completion matches when its first line is the expected rest of the line (trailing whitespace aside). */
export function completionExact(text: string, expected: string): boolean {
  return text.split('\n')[0].trimEnd() === expected.trimEnd();
}

/** A share and the count it is of. */
export interface Rate {
  rate: number;
  correct: number;
  n: number;
}

export function rate(hits: readonly boolean[]): Rate {
  const correct = hits.filter(Boolean).length;
  return { rate: hits.length ? correct / hits.length : 0, correct, n: hits.length };
}
