// The items the evaluation asks, from the files of one context (pure: no model):
//   lookup       "Where is `X` defined?" / "Where is `X` used?" for names defined exactly
//                once in the context, their definitions spread over the context's depth
//   absent       names made of real identifier pieces of code outside the context, checked
//                to occur nowhere in it
//   cross-file   uses of a name defined in another file of the context, the line cut just
//                before the name (the rest of the line is the answer)
//   fill-in      single-line fill-in-the-middle sites, as training/data.py fim_doc(single_line)
// The question strings are the ones the model is trained on (training/data.py).
import { askable, codeLines, definitionIndex, identifiers, inStringOrComment, isImportLine, occurrences, type Definition } from './definitions.js';
import type { Random } from './random.js';

/** A file where it sits in the context: token positions [start, end). */
export interface PlacedFile {
  path: string;
  text: string;
  start: number;
  end: number;
}

export interface Place {
  path: string;
  line: number;
}

export interface LookupQuestion {
  kind: 'defined' | 'used';
  name: string;
  question: string;
  /** The definition. */
  definition: Place & { text: string };
  /** Correct places: the definition line ('defined'), or every line using the name other than it ('used'). */
  gold: Place[];
  /** Where the definition sits in the context, 0–1. */
  depth: number;
}

export interface AbsentQuestion {
  kind: 'absent';
  name: string;
  question: string;
}

export interface CompletionSite {
  path: string;
  /** 1-based line of the cut. */
  line: number;
  prefix: string;
  /** What the completion should write: the rest of the line. */
  middle: string;
  suffix: string;
  /** Cross-file sites: the name that starts the middle, and where it is defined. */
  name?: string;
  definedIn?: Place;
}

export const definedQuestion = (name: string) => `Where is \`${name}\` defined?`;
export const usedQuestion = (name: string) => `Where is \`${name}\` used?`;

/** Most lines a name may be used on to be asked about (a name used everywhere says little about lookup). */
const MAX_USE_LINES = 50;

/**
 * `count` questions of one kind, spread over the context's depth: for each of `count`
 * depths (one in each equal slice, at a random point of it) the unasked askable name
 * whose definition sits nearest it (a definition's depth: its file's place in the
 * context, plus its line's share of the file).
 */
export function lookupQuestions(files: readonly PlacedFile[], kind: 'defined' | 'used', count: number, rng: Random): LookupQuestion[] {
  const index = definitionIndex(files);
  const total = Math.max(
    1,
    files.reduce((n, f) => Math.max(n, f.end), 0),
  );
  const byPath = new Map(files.map((f) => [f.path, f]));
  const candidates: { d: Definition; at: number; uses: Place[] }[] = [];
  for (const [name, defs] of index) {
    if (!askable(name, defs)) continue;
    const d = defs[0];
    const uses = kind === 'used' ? usesOf(files, d) : [];
    if (kind === 'used' && uses.length === 0) continue;
    const file = byPath.get(d.path)!;
    const lines = file.text.split('\n').length;
    candidates.push({ d, at: file.start + ((file.end - file.start) * (d.line - 1)) / lines, uses });
  }
  const out: LookupQuestion[] = [];
  for (let i = 0; i < count && candidates.length > 0; i++) {
    const target = ((i + rng.next()) / count) * total;
    let best = 0;
    candidates.forEach((c, j) => {
      if (Math.abs(c.at - target) < Math.abs(candidates[best].at - target)) best = j;
    });
    const [{ d, at, uses }] = candidates.splice(best, 1);
    const definition = { path: d.path, line: d.line, text: d.text };
    const gold = kind === 'defined' ? [{ path: d.path, line: d.line }] : uses;
    out.push({ kind, name: d.name, question: kind === 'defined' ? definedQuestion(d.name) : usedQuestion(d.name), definition, gold, depth: at / total });
  }
  return out;
}

/** Lines where a uniquely defined name occurs other than its definition line, in context order; none when it is used too widely. */
export function usesOf(files: readonly PlacedFile[], d: Definition): Place[] {
  const lines: Place[] = [];
  for (const f of files) {
    const seen = new Set<number>();
    for (const o of occurrences(f.text, d.name)) {
      if ((f.path === d.path && o.line === d.line) || seen.has(o.line)) continue;
      seen.add(o.line);
      lines.push({ path: f.path, line: o.line });
    }
  }
  return lines.length > MAX_USE_LINES ? [] : lines;
}

/** Splits an identifier into its words: parseHeaderMap → parse, Header, Map; max_retry_count → max, retry, count. */
export function namePieces(name: string): string[] {
  return name.split(/_+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])/).filter((p) => /^[A-Za-z]{3,10}$/.test(p));
}

/**
 * `count` names that occur nowhere in the context's text, each made of two or three
 * pieces of real identifiers from `elsewhere` (code outside the context), in the
 * context's naming style (snake_case for Python, camelCase otherwise).
 */
export function absentQuestions(files: readonly PlacedFile[], elsewhere: readonly string[], count: number, rng: Random): AbsentQuestion[] {
  const pieces = [...new Set(elsewhere.flatMap((text) => [...identifiers(text)].flatMap(namePieces).map((p) => p.toLowerCase())))].sort();
  if (pieces.length < 3) return [];
  const python = files.filter((f) => f.path.endsWith('.py')).length * 2 > files.length;
  const text = files.map((f) => f.text).join('\n');
  const out: AbsentQuestion[] = [];
  const made = new Set<string>();
  for (let tries = 0; out.length < count && tries < count * 50; tries++) {
    const words = Array.from({ length: 2 + rng.int(2) }, () => rng.pick(pieces));
    const name = python
      ? words.join('_')
      : words[0] +
        words
          .slice(1)
          .map((w) => w[0].toUpperCase() + w.slice(1))
          .join('');
    // Absent as a substring (case-insensitively), not only as a whole word: no near miss either.
    if (name.length < 8 || made.has(name) || text.toLowerCase().includes(name.toLowerCase())) continue;
    made.add(name);
    out.push({ kind: 'absent', name, question: definedQuestion(name) });
  }
  return out;
}

/** The text cut at (line, column): prefix up to it, the rest of that line, and the text after the line. */
export function cutLine(text: string, line: number, column: number): { prefix: string; middle: string; suffix: string } {
  const lines = text.split('\n');
  const before = lines.slice(0, line - 1).join('\n') + (line > 1 ? '\n' : '');
  const current = lines[line - 1];
  const after = line < lines.length ? `\n${lines.slice(line).join('\n')}` : '';
  return { prefix: before + current.slice(0, column), middle: current.slice(column), suffix: after };
}

/**
 * `count` cross-file completion sites: an occurrence of a name defined exactly once in
 * the context, at the top level of its file (what another file can import), in code of
 * another file of the same repository (the first path component) that does not define it (not a comment, a string
 * or an import line); the rest of the line (from the name) is 6–100 characters. At most
 * two sites a file; files of more than `maxFileTokens` (their token span) are passed over.
 */
export function crossFileSites(files: readonly PlacedFile[], count: number, rng: Random, maxFileTokens = Infinity): CompletionSite[] {
  const index = definitionIndex(files);
  const all: CompletionSite[] = [];
  for (const file of files) {
    if (file.end - file.start > maxFileTokens) continue;
    const sites: CompletionSite[] = [];
    const lines = file.text.split('\n');
    const code = codeLines(file.path, file.text);
    const definedHere = new Set(definitionIndexOf(file).keys());
    for (const name of identifiers(file.text)) {
      const defs = index.get(name);
      if (!askable(name, defs) || /^\s/.test(defs![0].text) || defs![0].path === file.path || repoOf(defs![0].path) !== repoOf(file.path) || definedHere.has(name)) continue;
      for (const o of occurrences(file.text, name)) {
        const rest = lines[o.line - 1].slice(o.column);
        if (rest.trim().length < 6 || rest.length > 100 || !code[o.line - 1] || isImportLine(file.path, o.text) || inStringOrComment(o.text, o.column)) continue;
        const cut = cutLine(file.text, o.line, o.column);
        sites.push({ path: file.path, line: o.line, ...cut, name, definedIn: { path: defs![0].path, line: defs![0].line } });
      }
    }
    rng.shuffle(sites);
    all.push(...sites.slice(0, 2));
  }
  return rng.shuffle(all).slice(0, count);
}

const repoOf = (file: string) => file.split('/')[0];

function definitionIndexOf(file: PlacedFile): Map<string, Definition[]> {
  return definitionIndex([file]);
}

/**
 * `count` single-line fill-in-the-middle sites over `files` (data.fim_doc with
 * single_line: a random line of 6–100 characters once stripped, the whole line the
 * middle), the prefix cut to its last 3,000 characters and the suffix to its first
 * 1,000 (training/evaluate.py fim).
 */
export function fillInSites(files: readonly { path: string; text: string }[], count: number, rng: Random, prefixChars = 3000, suffixChars = 1000): CompletionSite[] {
  const out: CompletionSite[] = [];
  for (let tries = 0; out.length < count && tries < count * 20 && files.length > 0; tries++) {
    const file = rng.pick(files);
    const lines = file.text.split('\n');
    const candidates = lines.flatMap((l, i) => (l.trim().length >= 6 && l.trim().length <= 100 ? [i] : []));
    if (candidates.length === 0) continue;
    const i = rng.pick(candidates);
    const prefix = lines.slice(0, i).join('\n') + (i > 0 ? '\n' : '');
    const suffix = i + 1 < lines.length ? `\n${lines.slice(i + 1).join('\n')}` : '';
    out.push({ path: file.path, line: i + 1, prefix: prefix.slice(-prefixChars), middle: lines[i], suffix: suffix.slice(0, suffixChars) });
  }
  return out;
}
