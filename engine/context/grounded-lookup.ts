// Lookup questions answered with lines the workspace really holds. The default model
// answers "Where is `X` defined / used?" by copying a line (docs/workspace-questions.md),
// and a small model's copy slips: it writes the line it expects (`def X(self):`)
// instead of the one it read, or says X is absent when it is not. Here the answer is
// held, token by token, to the workspace's lines that contain X: the model still
// chooses the line (its own greedy choice among those), and its choice is a line that
// resolves to a place. A name that occurs nowhere leaves only the not-found sentence.
import type { TokenConstraint } from '../model/generation.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { tokenTexts } from '../model/token-healing.js';

export type LookupKind = 'defined' | 'used';

export interface LookupQuestion {
  name: string;
  kind: LookupKind;
}

/** Answer lines longer than this are not offered (training/data.py MAX_ANSWER_LINE). */
const MAX_LINE_CHARS = 160;
/** Nor shorter ones: too common to point anywhere (answer-locations.ts MIN_LINE_CHARS). */
const MIN_LINE_CHARS = 6;
/** Lines a "used" answer lists (docs/workspace-questions.md). */
const MAX_USE_LINES = 3;

const NAME = String.raw`[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*`;
const LOOKUP = new RegExp(String.raw`^\s*where\s+(?:is|are)\s+(?:the\s+)?(?:\x60(${NAME})\x60|(${NAME}))\s+(defined|declared|used|called|referenced)\s*\??\s*$`, 'i');

/** The lookup a question asks for, or undefined for any other question. */
export function parseLookup(question: string): LookupQuestion | undefined {
  const m = LOOKUP.exec(question);
  if (!m) return undefined;
  const verb = m[3].toLowerCase();
  return { name: m[1] ?? m[2], kind: verb === 'defined' || verb === 'declared' ? 'defined' : 'used' };
}

/** The question as the model was trained to read it. */
export const canonicalQuestion = (q: LookupQuestion) => `Where is \`${q.name}\` ${q.kind}?`;

/** The answer for a name that occurs nowhere (answer-locations.ts NOT_FOUND). */
export const notFoundAnswer = (name: string) => `\`${name}\` is not in the workspace.`;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const wordOf = (name: string) => new RegExp(String.raw`(?<![\w$])${escape(name)}(?![\w$])`);
/** A line that introduces the name (any of the usual languages): a use answer does not list it. */
const definitionOf = (name: string) =>
  new RegExp(String.raw`(?:^|[^\w$.])(?:def|class|function\*?|interface|enum|type|struct|trait|fn|func|const|let|var)\s+${escape(name)}(?![\w$])`);

/**
 * The answer lines a lookup may give: each distinct workspace line (trimmed) holding the
 * name as a whole word; for a use, not a line that defines it. Lines where the name is
 * only inside a string or a comment are left out while any line has it as code (a
 * message that mentions `retry` neither defines nor uses it). Sorted, for prefix search.
 */
export function candidateLines(files: Iterable<readonly string[]>, q: LookupQuestion): string[] {
  const word = wordOf(q.name);
  const defines = definitionOf(q.name);
  const asCode = new Set<string>();
  const mentioned = new Set<string>();
  for (const lines of files) {
    for (const raw of lines) {
      if (!raw.includes(q.name)) continue;
      const line = raw.trim();
      if (line.length < MIN_LINE_CHARS || line.length > MAX_LINE_CHARS || !word.test(line)) continue;
      if (q.kind === 'used' && defines.test(line)) continue;
      (inCode(line, q.name) ? asCode : mentioned).add(line);
    }
  }
  return [...(asCode.size > 0 ? asCode : mentioned)].sort();
}

/** A line that is a comment or a docstring's edge as a whole (`//`, `#`, ` * `, `/*`, `"""`); not `*rest = …`. */
const COMMENT_LINE = /^(?:\/\/|\/\*|\*(?:[\s/]|$)|#(?:\s|$)|"""|''')/;

/**
 * The name occurs as a whole word outside quotes and comments of its line. Line by line
 * only: a string or comment spanning lines is seen from its edges (COMMENT_LINE).
 */
export function inCode(line: string, name: string): boolean {
  if (COMMENT_LINE.test(line)) return false;
  const isWord = (ch: string | undefined) => ch !== undefined && /[\w$]/.test(ch);
  let quote = '';
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote) {
      if (ch === '\\') i++;
      else if (ch === quote) quote = '';
      continue;
    }
    if (ch === '"' || ch === "'" || ch === '`') quote = ch;
    // `#` starts a comment before a space (Python), not a private field (`#name`).
    else if ((ch === '/' && line[i + 1] === '/') || (ch === '#' && (i + 1 === line.length || /\s/.test(line[i + 1])))) return false;
    else if (line.startsWith(name, i) && !isWord(line[i - 1]) && !isWord(line[i + name.length])) return true;
  }
  return false;
}

/** First index in sorted `lines` whose line is ≥ `key`. */
function lowerBound(lines: readonly string[], key: string): number {
  let lo = 0;
  let hi = lines.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (lines[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Holds generation to a choice of whole lines from `candidates` (one, or up to
 * `maxLines` separated by newlines), then an end id. Where no token continues any
 * candidate (a line the tokenizer cannot spell token by token), only the end is left.
 */
export class LineChoice implements TokenConstraint {
  private readonly texts: string[];
  private readonly lines: readonly string[];
  private readonly set: Set<string>;
  /** Token ids by their text's first character. */
  private readonly byFirst = new Map<string, number[]>();

  constructor(
    candidates: readonly string[],
    tokenizer: Tokenizer,
    private readonly endIds: readonly number[],
    private readonly maxLines = 1,
  ) {
    this.lines = [...candidates].sort();
    this.set = new Set(this.lines);
    this.texts = tokenTexts(tokenizer);
    this.texts.forEach((text, id) => {
      if (!text) return;
      const list = this.byFirst.get(text[0]);
      if (list) list.push(id);
      else this.byFirst.set(text[0], [id]);
    });
  }

  /** Some candidate not yet given starts with `prefix`. */
  private continues(prefix: string, given: ReadonlySet<string>): boolean {
    for (let i = lowerBound(this.lines, prefix); i < this.lines.length && this.lines[i].startsWith(prefix); i++) if (!given.has(this.lines[i])) return true;
    return false;
  }

  /** `line` is a whole candidate not yet given. */
  private whole(line: string, given: ReadonlySet<string>): boolean {
    return line.length > 0 && this.set.has(line) && !given.has(line);
  }

  private fits(current: string, given: ReadonlySet<string>, token: string): boolean {
    const newline = token.indexOf('\n');
    if (newline < 0) return this.continues(current + token, given);
    const rest = token.slice(newline + 1);
    const line = current + token.slice(0, newline);
    return given.size + 1 < this.maxLines && this.whole(line, given) && !rest.includes('\n') && (rest === '' || this.continues(rest, new Set([...given, line])));
  }

  mask(logits: Float32Array, generated: readonly number[]): void {
    const text = generated.map((id) => this.texts[id] ?? '').join('');
    const lines = text.split('\n');
    const current = lines.pop() ?? '';
    // Lines already given are not given again.
    const given = new Set(lines);
    const allowed = new Set<number>();
    if (this.whole(current, given)) for (const id of this.endIds) allowed.add(id);
    // The characters that may come next: each candidate's next one, and a newline after a whole line.
    const next = new Set<string>();
    for (let i = lowerBound(this.lines, current); i < this.lines.length && this.lines[i].startsWith(current); i++) {
      if (this.lines[i].length > current.length && !given.has(this.lines[i])) next.add(this.lines[i][current.length]);
    }
    if (this.whole(current, given) && given.size + 1 < this.maxLines) next.add('\n');
    for (const ch of next) for (const id of this.byFirst.get(ch) ?? []) if (this.fits(current, given, this.texts[id])) allowed.add(id);
    if (allowed.size === 0) for (const id of this.endIds) allowed.add(id);
    for (let id = 0; id < logits.length; id++) if (!allowed.has(id)) logits[id] = -Infinity;
  }
}

/** The constraint for a lookup: its candidate lines, or the not-found sentence when there are none. */
export function lookupConstraint(q: LookupQuestion, candidates: readonly string[], tokenizer: Tokenizer, endIds: readonly number[]): LineChoice {
  if (candidates.length === 0) return new LineChoice([notFoundAnswer(q.name)], tokenizer, endIds, 1);
  return new LineChoice(candidates, tokenizer, endIds, q.kind === 'used' ? MAX_USE_LINES : 1);
}
