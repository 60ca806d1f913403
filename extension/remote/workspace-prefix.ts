// The workspace as a text prefix for a remote OpenAI-compatible server: every file
// the local engine would index (same scan, same ignore rules), in the engine's
// context order (rarely-edited first, recently-edited last: engine/index/layout.ts)
// and with the engine's plain-text path header, cut to a character budget.
//
// The prefix must stay byte-identical while the files do not change, so that the
// server's prefix cache (vLLM's automatic prefix caching, SGLang's radix cache)
// reuses its KV instead of prefilling the whole workspace per request. So the order
// depends on content changes only: a file keeps the time its content was first seen
// (a touch or a checkout that rewrites the same bytes does not move it) and an edit
// moves it to the tail. No vscode import: test/extension/remote-*.test.ts drives it.

import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { planLayout } from '../../engine/index/layout.js';
import { createScanContext, readCandidate, walkWorkspace, type ScanContext } from '../../engine/index/scan.js';
import { FILE_HEADER } from '../../engine/vocabulary.js';

/** A file as it sits in the context: header, path, content ending in a newline. */
export function formatFile(path: string, content: string): string {
  return `${FILE_HEADER}${path}\n${content.endsWith('\n') ? content : `${content}\n`}`;
}

/** What the order and the budget need to know of a file. */
export interface PrefixFile {
  path: string;
  text: string;
  /** Content changes seen since this prefix was created. */
  editCount: number;
  /** When this content was first seen (the file's mtime then). */
  firstSeenMs: number;
}

export interface PrefixPlan {
  /** The files, formatted and concatenated in context order. */
  text: string;
  /** Included paths in context order. */
  files: string[];
  /** Files left out because the budget was spent on fresher ones. */
  excluded: { path: string; chars: number }[];
  /** sha256 of `text`, short: what the log and the status show to tell prefixes apart. */
  hash: string;
  budgetChars: number;
}

/** Orders and cuts the files: the engine's layout rule with characters for tokens. */
export function planPrefix(files: readonly PrefixFile[], budgetChars: number): PrefixPlan {
  const byPath = new Map(files.map((file) => [file.path, file]));
  const plan = planLayout(
    files.map((file) => ({ path: file.path, tokens: formatFile(file.path, file.text).length, editCount: file.editCount, mtimeMs: file.firstSeenMs })),
    budgetChars,
  );
  const text = plan.included.map(({ path }) => formatFile(path, byPath.get(path)?.text ?? '')).join('');
  return {
    text,
    files: plan.included.map(({ path }) => path),
    excluded: plan.excluded.map(({ path, tokens }) => ({ path, chars: tokens })),
    hash: createHash('sha256').update(text).digest('hex').slice(0, 12),
    budgetChars,
  };
}

export interface WorkspacePrefixOptions {
  budgetChars: number;
  /** VS Code files.exclude-style globs, as the engine gets them. */
  exclude?: readonly string[];
  log?: (message: string) => void;
}

interface KnownFile extends PrefixFile {
  contentHash: string;
  size: number;
  mtimeMs: number;
}

/**
 * Keeps the workspace's files and the current prefix. The first `current()` scans the
 * workspace; later ones reuse the plan until `markDirty()` (a file watcher calls it),
 * then re-list the files and re-read only those whose size or mtime changed.
 */
export class WorkspacePrefix {
  private readonly known = new Map<string, KnownFile>();
  private plan: PrefixPlan | undefined;
  private dirty = true;
  private building: Promise<PrefixPlan> | undefined;

  constructor(
    readonly root: string,
    private readonly options: WorkspacePrefixOptions,
  ) {}

  /** Something in the workspace changed: the next current() looks again. */
  markDirty(): void {
    this.dirty = true;
  }

  /** The prefix for the workspace as it is now (cached while nothing changed). */
  current(): Promise<PrefixPlan> {
    // a budget of 0: the server holds the workspace itself (another Panorama engine), send none
    if (this.options.budgetChars === 0) return Promise.resolve((this.plan ??= planPrefix([], 0)));
    if (!this.dirty && this.plan !== undefined) return Promise.resolve(this.plan);
    // one rescan at a time; a change during it marks dirty again for the next caller
    this.building ??= this.rebuild().finally(() => (this.building = undefined));
    return this.building;
  }

  private async rebuild(): Promise<PrefixPlan> {
    this.dirty = false;
    const started = Date.now();
    const context = await createScanContext(this.root, { exclude: this.options.exclude, maxFileBytes: Math.min(1024 * 1024, this.options.budgetChars) });
    const { candidates } = await walkWorkspace(context);
    const seen = new Set<string>();
    let reread = 0;
    for (const candidate of candidates) {
      seen.add(candidate.path);
      if (await this.refresh(context, candidate.path, candidate.absolutePath)) reread++;
    }
    for (const path of [...this.known.keys()]) if (!seen.has(path)) this.known.delete(path);
    const plan = planPrefix([...this.known.values()], this.options.budgetChars);
    if (plan.hash !== this.plan?.hash) {
      this.options.log?.(
        `remote context: ${plan.files.length} files, ${plan.text.length.toLocaleString('en')} of ${plan.budgetChars.toLocaleString('en')} chars` +
          (plan.excluded.length > 0 ? `, ${plan.excluded.length} files left out for the budget` : '') +
          ` (prefix ${plan.hash}; ${reread} files read in ${Date.now() - started} ms)`,
      );
    }
    this.plan = plan;
    return plan;
  }

  /** Re-reads one file if its size or mtime changed; true when it was read. */
  private async refresh(context: ScanContext, path: string, absolutePath: string): Promise<boolean> {
    const before = this.known.get(path);
    if (before !== undefined) {
      const stats = await stat(absolutePath).catch(() => undefined);
      if (stats !== undefined && stats.size === before.size && stats.mtimeMs === before.mtimeMs) return false;
    }
    const outcome = await readCandidate(context, path, absolutePath);
    if (outcome.kind !== 'file') {
      this.known.delete(path);
      return true;
    }
    const { file } = outcome;
    if (before !== undefined && before.contentHash === file.contentHash) {
      // same bytes (a touch, a checkout): keep its place in the order
      this.known.set(path, { ...before, size: file.size, mtimeMs: file.mtimeMs });
    } else {
      this.known.set(path, {
        path,
        text: file.text,
        contentHash: file.contentHash,
        size: file.size,
        mtimeMs: file.mtimeMs,
        editCount: before === undefined ? 0 : before.editCount + 1,
        firstSeenMs: file.mtimeMs,
      });
    }
    return true;
  }
}
