// Workspaces of a given size in tokens, made of held-out files, and the engine's
// WorkspaceContext over them. Files are taken much as training/evaluate.py needle_context
// takes them: the repositories in a random order, the first from a random file on (and
// round to its start), each repository's files in path order. Unlike there, a file that
// would overflow the budget is passed over and the repository's smaller files after it
// still go in, so a workspace is as much of one repository as fits (uses of names defined
// in another file of it are what cross-file completion needs).
import { createHash } from 'node:crypto';
import type { SalaModel } from '../../engine/model/sala-model.js';
import type { Tokenizer } from '../../engine/model/tokenizer.js';
import { WorkspaceContext, type ContextFile } from '../../engine/context/workspace-context.js';
import type { PromptFormat } from '../../engine/context/prompt-format.js';
import type { Random } from './random.js';
import type { Repo } from './sources.js';
import type { PlacedFile } from './questions.js';

/** A budget left smaller than this takes no more files. */
const MIN_FILE_TOKENS = 32;
/** After this many files in a row too big for what is left, the next repository. */
const MAX_MISSES = 20;
/** Far more characters a token than any code file has (a lower bound on a file's tokens from its length). */
const MAX_CHARS_PER_TOKEN = 12;

/** Tokens of a file as it sits in the context (header included), encoded once per path. */
export class FileTokens {
  private readonly cache = new Map<string, { ids: number[]; headerTokens: number }>();

  constructor(private readonly format: PromptFormat) {}

  encoded(path: string, text: string): { ids: number[]; headerTokens: number } {
    const key = `${path}\0${text.length}`;
    let hit = this.cache.get(key);
    if (!hit) this.cache.set(key, (hit = this.format.file(path, text)));
    return hit;
  }

  count(path: string, text: string): number {
    return this.encoded(path, text).ids.length;
  }
}

export interface Workspace {
  /** Target size in tokens. */
  size: number;
  files: PlacedFile[];
  tokens: number;
  repos: string[];
}

/** Picks files up to `size` tokens. */
export function pickWorkspace(repos: readonly Repo[], size: number, tokens: FileTokens, rng: Random): Workspace {
  const order = rng.shuffle(repos.map((_, i) => i));
  const files: PlacedFile[] = [];
  const used = new Set<string>();
  let total = 0;
  for (let k = 0; k < order.length && total < size; k++) {
    const repo = repos[order[k]];
    const from = k === 0 ? rng.int(repo.files.length) : 0;
    // The first repository wraps round to its start, so a late random start still fills the budget.
    const run = k === 0 ? [...repo.files.slice(from), ...repo.files.slice(0, from)] : repo.files;
    let misses = 0;
    for (const [path, text] of run) {
      if (size - total < MIN_FILE_TOKENS || misses >= MAX_MISSES) break;
      // A file too long to fit whatever its tokens is not tokenized to find out.
      if (text.length / MAX_CHARS_PER_TOKEN > size - total) continue;
      const n = tokens.count(path, text);
      if (total + n > size) {
        misses++;
        continue;
      }
      misses = 0;
      files.push({ path, text, start: total, end: total + n });
      used.add(repo.name);
      total += n;
    }
  }
  return { size, files, tokens: total, repos: repos.filter((r) => used.has(r.name)).map((r) => r.name) };
}

export function contextFile(path: string, text: string, tokens?: FileTokens): ContextFile {
  return { path, text, contentHash: createHash('sha256').update(text).digest('hex'), mtimeMs: 0, encoded: tokens?.encoded(path, text) };
}

/**
 * A WorkspaceContext holding `files` in this order (nothing left out for the budget;
 * no background compaction, so timings are of the requests alone). Returns the files
 * placed where the context put them.
 */
export async function buildContext(
  model: SalaModel,
  tokenizer: Tokenizer,
  files: readonly { path: string; text: string }[],
  tokens?: FileTokens,
  onFile?: (path: string, n: number) => void,
): Promise<{ context: WorkspaceContext; placed: PlacedFile[] }> {
  const total = files.reduce((n, f) => n + (tokens?.count(f.path, f.text) ?? f.text.length), 0);
  const context = new WorkspaceContext(model, tokenizer, { budget: Math.max(4096, total * 2), compactAt: 1 });
  await context.update(
    files.map((f) => contextFile(f.path, f.text, tokens)),
    [],
    { onFile },
  );
  const text = new Map(files.map((f) => [f.path, f.text]));
  const placed = context.layout().map((s) => ({ path: s.path, text: text.get(s.path) ?? '', start: s.start, end: s.end }));
  return { context, placed };
}
