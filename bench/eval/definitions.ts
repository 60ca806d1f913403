// Definitions and uses of names, with the regexes of training/data.py (PY_DEF, JS_DEF),
// so a question the engine's evaluation asks is one the training data could have asked.
import { langOf } from './sources.js';

export const PY_DEF = /^[ \t]*(?:async[ \t]+def|def|class)[ \t]+([A-Za-z_]\w*)/;
export const JS_DEF =
  /^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:declare[ \t]+)?(?:abstract[ \t]+)?(?:async[ \t]+)?(?:function\*?|class|interface|enum|type|const|let|var)[ \t]+([A-Za-z_$][\w$]*)/;
/** An import line (data.py PY_IMP; for JS/TS any import/export-from/require line): a name there is not a use. */
const PY_IMPORT = /^[ \t]*(?:from[ \t]+[\w.]+[ \t]+import|import[ \t]+)/;
const JS_IMPORT = /^[ \t]*(?:import\b|export[ \t]+(?:\*|\{[^}]*\}|type[ \t]+\{[^}]*\})[ \t]*from\b)|\brequire\(/;

export interface Definition {
  name: string;
  path: string;
  /** 1-based. */
  line: number;
  text: string;
}

/** data.definitions: every line a definition regex matches, with the name it defines. */
export function definitions(path: string, text: string): Definition[] {
  const lang = langOf(path);
  if (lang === 'other') return [];
  const rx = lang === 'python' ? PY_DEF : JS_DEF;
  const out: Definition[] = [];
  text.split('\n').forEach((line, i) => {
    const m = rx.exec(line);
    if (m) out.push({ name: m[1], path, line: i + 1, text: line });
  });
  return out;
}

/** Every definition of every name over files, in file order. */
export function definitionIndex(files: readonly { path: string; text: string }[]): Map<string, Definition[]> {
  const index = new Map<string, Definition[]>();
  for (const file of files) {
    for (const d of definitions(file.path, file.text)) {
      const list = index.get(d.name) ?? [];
      list.push(d);
      index.set(d.name, list);
    }
  }
  return index;
}

/** A name worth asking about (make_questions' rule): defined exactly once, ≥ 4 characters, not a dunder. */
export function askable(name: string, defs: readonly Definition[] | undefined): boolean {
  return defs?.length === 1 && name.length >= 4 && !name.startsWith('__');
}

function escape(name: string): string {
  return name.replace(/[$]/g, '\\$');
}

/** Matches `name` as a whole identifier (a `$` counts as an identifier character, as in JS). */
export function wordPattern(name: string): RegExp {
  return new RegExp(`(?<![\\w$])${escape(name)}(?![\\w$])`, 'g');
}

export function isImportLine(path: string, line: string): boolean {
  return (langOf(path) === 'python' ? PY_IMPORT : JS_IMPORT).test(line);
}

/** Lines (1-based) where `name` occurs as a whole identifier, with the column of each occurrence. */
export function occurrences(text: string, name: string): { line: number; column: number; text: string }[] {
  const out: { line: number; column: number; text: string }[] = [];
  if (!text.includes(name)) return out;
  const rx = wordPattern(name);
  text.split('\n').forEach((line, i) => {
    if (!line.includes(name)) return;
    for (const m of line.matchAll(rx)) out.push({ line: i + 1, column: m.index ?? 0, text: line });
  });
  return out;
}

/** The identifiers of a text (for made-up names and cross-file sites). */
export function identifiers(text: string): Set<string> {
  return new Set(text.match(/[A-Za-z_$][\w$]*/g) ?? []);
}

/** The first line of an import list that goes on over more lines, and what closes it. */
const IMPORT_BLOCK = { python: [/^\s*from\s+\S+\s+import\s*\([^)]*$/, ')'], js: [/^\s*(?:import|export)\s+(?:type\s+)?(?:[\w$]+\s*,\s*)?\{[^}]*$/, '}'] } as const;

/**
 * Per line (0-based), whether it is code: not a comment line, not inside a block comment
 * (JS/TS) or a triple-quoted string (Python), not part of an import list spread over
 * lines. A heuristic for picking completion sites.
 */
export function codeLines(path: string, text: string): boolean[] {
  const python = langOf(path) === 'python';
  const [importStart, importEnd] = IMPORT_BLOCK[python ? 'python' : 'js'];
  let open = false;
  let importing = false;
  return text.split('\n').map((line) => {
    const trimmed = line.trim();
    if (importing || importStart.test(line)) {
      importing = !(importing && line.includes(importEnd));
      return false;
    }
    const wasOpen = open;
    if (python) {
      const quotes = (line.match(/"""|'''/g) ?? []).length;
      if (quotes % 2 === 1) open = !open;
      return !wasOpen && quotes === 0 && !trimmed.startsWith('#');
    }
    if (!open && trimmed.includes('/*') && !trimmed.includes('*/')) open = true;
    else if (open && trimmed.includes('*/')) open = false;
    return !wasOpen && !open && !/^(\/\/|\/\*|\*)/.test(trimmed);
  });
}

/** Whether a column of a line sits inside a string literal or after a line comment (counted naively). */
export function inStringOrComment(line: string, column: number): boolean {
  const before = line.slice(0, column);
  if (/(^|\s)(#|\/\/)/.test(before)) return true;
  return ['"', "'", '`'].some((q) => (before.split(q).length - 1) % 2 === 1);
}
