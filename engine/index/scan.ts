// Lists the workspace files that belong in the context and reads them as text.
// Every file that stays out gets a reason and a log line; no single file's problem is fatal.
import { createHash } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import { close as fsClose, constants as fsConstants, fstat as fsFstat, open as fsOpen, read as fsRead, type Dirent, type Stats } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { IgnoreRules } from './ignore.js';

export type SkipReason = 'ignored' | 'binary' | 'too-large' | 'generated' | 'minified' | 'symlink-loop' | 'outside-workspace' | 'unreadable';

export interface SkippedFile {
  path: string;
  reason: SkipReason;
  /** Human-readable, e.g. "3.2 MB > limit 1 MB". */
  detail: string;
}

export interface WorkspaceFile {
  /** Workspace-relative, '/' separators. */
  path: string;
  size: number;
  mtimeMs: number;
  /** sha256 hex of the bytes. */
  contentHash: string;
  text: string;
  /** The bytes were not valid UTF-8; `text` holds U+FFFD where they failed. */
  invalidUtf8: boolean;
}

export interface ScanProgress {
  filesSeen: number;
  filesIncluded: number;
  bytes: number;
}

export interface ScanOptions {
  /** Globs in VS Code `files.exclude` style, e.g. `**\/node_modules`. */
  exclude?: readonly string[];
  /** Default 1 MiB. */
  maxFileBytes?: number;
  signal?: AbortSignal;
  onProgress?: (progress: ScanProgress) => void;
  log?: (message: string) => void;
}

export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;
/** Files read at once: enough to keep the thread pool busy, few enough to bound memory and descriptors. */
const READ_CONCURRENCY = 32;
/** How much of a file's head decides "binary", as git does. */
const BINARY_SNIFF_BYTES = 8 * 1024;
/** Share of control bytes (other than tab, newline, CR, FF, VT, ESC) above which a NUL-free file is binary. */
const MAX_CONTROL_BYTE_SHARE = 0.1;
/** How many leading lines may carry a "generated" marker. */
const GENERATED_MARKER_LINES = 5;
/** Minified-bundle heuristics apply to files above this size: a short one-line file is just short. */
const MINIFIED_MIN_BYTES = 2 * 1024;
const MINIFIED_MAX_AVERAGE_LINE = 300;
const MINIFIED_MAX_LINE = 5000;
const PROGRESS_INTERVAL_MS = 100;
// Not fatal: invalid sequences become U+FFFD and the file is flagged instead.
const utf8Decoder = new TextDecoder('utf-8');

// Lockfiles and their kin: machine-written, large, and no help to a model reading the code.
const GENERATED_FILE_NAMES = new Set([
  'package-lock.json',
  'npm-shrinkwrap.json',
  'yarn.lock',
  'pnpm-lock.yaml',
  'bun.lock',
  'bun.lockb',
  'Cargo.lock',
  'poetry.lock',
  'Pipfile.lock',
  'uv.lock',
  'pdm.lock',
  'composer.lock',
  'Gemfile.lock',
  'go.sum',
  'flake.lock',
  'Podfile.lock',
  'pubspec.lock',
  'mix.lock',
  'packages.lock.json',
]);
const MINIFIED_NAME = /\.min\.(?:js|mjs|cjs|css)$/i;
// A marker counts only in a comment near the top, so prose that merely mentions one is kept.
const COMMENT_LEADER = /^(?:\/\/|\/\*|\*|#|<!--|--|;|%|"""|'''|\(\*|\{-)/;
const GENERATED_MARKER_EXACT = /@generated\b|\bDO NOT EDIT\b/;
const GENERATED_MARKER_ANY_CASE = /\bauto-?generated\b|\bautomatically generated\b/i;

/** Everything one scan shares: the root, its real path (for symlink checks) and the rules. */
export interface ScanContext {
  root: string;
  realRoot: string;
  rules: IgnoreRules;
  maxFileBytes: number;
  log: (message: string) => void;
}

/** A file the walk found, to be read. */
export interface Candidate {
  path: string;
  absolutePath: string;
}

/** What reading one file gave; `vanished` is kept apart because the watcher reports it as a deletion. */
export type FileOutcome = { kind: 'file'; file: WorkspaceFile } | { kind: 'skipped'; skipped: SkippedFile } | { kind: 'vanished'; path: string };

export function isSkipped(x: WorkspaceFile | SkippedFile): x is SkippedFile {
  return 'reason' in x;
}

/** Workspace-relative '/' path of an absolute path under root. */
export function toWorkspacePath(root: string, absolutePath: string): string {
  return path.relative(root, absolutePath).split(path.sep).join('/');
}

export async function createScanContext(root: string, options: ScanOptions = {}): Promise<ScanContext> {
  const absoluteRoot = path.resolve(root);
  let realRoot: string;
  let rootStats: Stats;
  try {
    realRoot = await realpath(absoluteRoot);
    rootStats = await stat(realRoot);
  } catch (error) {
    throw new Error(`Cannot scan workspace ${absoluteRoot}: ${describeError(error)}. Check that the folder exists and is readable.`, { cause: error });
  }
  if (!rootStats.isDirectory()) throw new Error(`Cannot scan workspace ${absoluteRoot}: it is not a directory.`);
  const maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  if (!Number.isFinite(maxFileBytes) || maxFileBytes < 0) throw new RangeError(`maxFileBytes must be a non-negative number, got ${maxFileBytes}`);
  return { root: absoluteRoot, realRoot, rules: new IgnoreRules(absoluteRoot, options.exclude), maxFileBytes, log: options.log ?? (() => {}) };
}

export async function scanWorkspace(root: string, options: ScanOptions = {}): Promise<{ files: WorkspaceFile[]; skipped: SkippedFile[] }> {
  const context = await createScanContext(root, options);
  const { candidates, skipped } = await walkWorkspace(context, options.signal);
  const files: WorkspaceFile[] = [];
  const progress: ScanProgress = { filesSeen: skipped.length, filesIncluded: 0, bytes: 0 };
  let lastProgressAt = 0;
  const reportProgress = (force: boolean) => {
    const now = Date.now();
    if (!options.onProgress || (!force && now - lastProgressAt < PROGRESS_INTERVAL_MS)) return;
    lastProgressAt = now;
    options.onProgress({ ...progress });
  };

  await forEachConcurrently(candidates, READ_CONCURRENCY, options.signal, async (candidate) => {
    const outcome = await guardOutcome(context, candidate.path, () => readCandidate(context, candidate.path, candidate.absolutePath));
    progress.filesSeen++;
    if (outcome.kind === 'file') {
      files.push(outcome.file);
      progress.filesIncluded++;
      progress.bytes += outcome.file.size;
    } else {
      // A file deleted between listing and reading is a race, not an error.
      skipped.push(outcome.kind === 'skipped' ? outcome.skipped : logSkip(context, outcome.path, 'unreadable', 'vanished between listing and reading'));
    }
    reportProgress(false);
  });
  reportProgress(true);
  files.sort(byPath);
  skipped.sort(byPath);
  return { files, skipped };
}

/** Reads one file under the same rules as a scan (used on change events). */
export async function readWorkspaceFile(root: string, relativePath: string, options: ScanOptions = {}): Promise<WorkspaceFile | SkippedFile> {
  const context = await createScanContext(root, options);
  const outcome = await inspectWorkspacePath(context, relativePath);
  if (outcome.kind === 'file') return outcome.file;
  if (outcome.kind === 'skipped') return outcome.skipped;
  return logSkip(context, outcome.path, 'unreadable', 'no longer exists (deleted before it could be read)');
}

/**
 * Checks one path against everything the walk would have checked (rules including parent
 * directories, symlinks) and reads it. Used for single files, where no walk came first.
 */
export async function inspectWorkspacePath(context: ScanContext, relativePath: string): Promise<FileOutcome> {
  const workspacePath = normalizeWorkspacePath(relativePath);
  if (workspacePath === undefined) return { kind: 'skipped', skipped: logSkip(context, relativePath, 'outside-workspace', 'the path leads outside the workspace root') };
  await context.rules.preloadAncestors(workspacePath);
  const ignoredBecause = context.rules.match(workspacePath, false);
  if (ignoredBecause) return { kind: 'skipped', skipped: logSkip(context, workspacePath, 'ignored', ignoredBecause) };
  const absolutePath = path.join(context.root, ...workspacePath.split('/'));
  let realPath: string;
  try {
    realPath = await realpath(absolutePath);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT') return { kind: 'vanished', path: workspacePath };
    if (code === 'ELOOP') return { kind: 'skipped', skipped: logSkip(context, workspacePath, 'symlink-loop', 'symbolic links resolve in a loop') };
    return { kind: 'skipped', skipped: logSkip(context, workspacePath, 'unreadable', describeError(error)) };
  }
  if (!isInside(context.realRoot, realPath)) {
    return { kind: 'skipped', skipped: logSkip(context, workspacePath, 'outside-workspace', `symbolic link to ${realPath}, outside the workspace`) };
  }
  return readCandidate(context, workspacePath, absolutePath);
}

/**
 * Lists every file the rules let in, depth first, without reading any: ignored entries are
 * recorded once (an ignored directory is not entered), symlinks are resolved and checked.
 */
export async function walkWorkspace(context: ScanContext, signal?: AbortSignal): Promise<{ candidates: Candidate[]; skipped: SkippedFile[] }> {
  const candidates: Candidate[] = [];
  const skipped: SkippedFile[] = [];
  // realChain: the real paths of the directories from the root down to this one; a symlink
  // to any of them would make the walk go round forever.
  const stack: { path: string; absolutePath: string; realChain: string[] }[] = [{ path: '', absolutePath: context.root, realChain: [context.realRoot] }];
  while (stack.length > 0) {
    signal?.throwIfAborted();
    const directory = stack.pop();
    if (!directory) break;
    await context.rules.preload(directory.path);
    let entries: Dirent[];
    try {
      entries = await readdir(directory.absolutePath, { withFileTypes: true });
    } catch (error) {
      // The root was checked up front; a subdirectory may vanish or be unreadable.
      if (directory.path !== '') skipped.push(logSkip(context, directory.path, 'unreadable', `directory could not be listed: ${describeError(error)}`));
      continue;
    }
    const directoryReal = directory.realChain[directory.realChain.length - 1];
    for (const entry of entries) {
      const entryPath = directory.path === '' ? entry.name : `${directory.path}/${entry.name}`;
      const absolutePath = path.join(directory.absolutePath, entry.name);
      let isDirectory = entry.isDirectory();
      let isFile = entry.isFile();
      let realPath = path.join(directoryReal, entry.name);
      if (entry.isSymbolicLink()) {
        const target = await resolveSymlink(context, entryPath, absolutePath);
        if ('reason' in target) {
          skipped.push(target);
          continue;
        }
        realPath = target.realPath;
        isDirectory = target.stats.isDirectory();
        isFile = target.stats.isFile();
        if (isDirectory && directory.realChain.some((ancestor) => isInside(realPath, ancestor))) {
          skipped.push(logSkip(context, entryPath, 'symlink-loop', `symbolic link to ${toWorkspacePath(context.realRoot, realPath) || '.'}/, a directory that contains it`));
          continue;
        }
      }
      const ignoredBecause = context.rules.matchEntry(entryPath, isDirectory);
      if (ignoredBecause) {
        skipped.push(logSkip(context, entryPath, 'ignored', ignoredBecause));
      } else if (isDirectory) {
        stack.push({ path: entryPath, absolutePath, realChain: [...directory.realChain, realPath] });
      } else if (isFile) {
        candidates.push({ path: entryPath, absolutePath });
      } else {
        // Reading a FIFO or a device could block forever or never end.
        skipped.push(logSkip(context, entryPath, 'unreadable', 'not a regular file (socket, FIFO or device)'));
      }
    }
  }
  candidates.sort(byPath);
  return { candidates, skipped };
}

async function resolveSymlink(context: ScanContext, entryPath: string, absolutePath: string): Promise<{ realPath: string; stats: Stats } | SkippedFile> {
  let realPath: string;
  try {
    realPath = await realpath(absolutePath);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ELOOP') return logSkip(context, entryPath, 'symlink-loop', 'symbolic links resolve in a loop');
    if (code === 'ENOENT') return logSkip(context, entryPath, 'unreadable', 'broken symbolic link (its target does not exist)');
    return logSkip(context, entryPath, 'unreadable', `symbolic link could not be resolved: ${describeError(error)}`);
  }
  if (!isInside(context.realRoot, realPath)) return logSkip(context, entryPath, 'outside-workspace', `symbolic link to ${realPath}, outside the workspace`);
  try {
    return { realPath, stats: await stat(realPath) };
  } catch (error) {
    return logSkip(context, entryPath, 'unreadable', describeError(error));
  }
}

/**
 * Reads one listed file: name checks, then size from fstat (a file over the limit is never
 * read), then content checks. Never throws for the file's own problems.
 */
export async function readCandidate(context: ScanContext, workspacePath: string, absolutePath: string): Promise<FileOutcome> {
  const skip = (reason: SkipReason, detail: string): FileOutcome => ({ kind: 'skipped', skipped: logSkip(context, workspacePath, reason, detail) });
  const name = workspacePath.slice(workspacePath.lastIndexOf('/') + 1);
  if (GENERATED_FILE_NAMES.has(name)) return skip('generated', 'lockfile (written by a package manager)');
  if (MINIFIED_NAME.test(name)) return skip('minified', 'minified bundle (.min name)');

  let read: BoundedRead;
  try {
    read = await readBounded(absolutePath, context.maxFileBytes);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT') return { kind: 'vanished', path: workspacePath };
    if (code === 'EACCES' || code === 'EPERM') return skip('unreadable', 'permission denied');
    return skip('unreadable', describeError(error));
  }
  if (read.kind === 'not-a-file') return skip('unreadable', 'not a regular file');
  if (read.kind === 'too-large') return skip('too-large', `${formatBytes(read.size)} > limit ${formatBytes(context.maxFileBytes)}`);
  const { bytes, stats } = read;

  const binaryBecause = binaryReason(bytes);
  if (binaryBecause) return skip('binary', binaryBecause);
  const invalidUtf8 = !isUtf8(bytes);
  const text = utf8Decoder.decode(bytes);
  const generatedBecause = generatedMarker(text);
  if (generatedBecause) return skip('generated', generatedBecause);
  if (bytes.length > MINIFIED_MIN_BYTES) {
    const minifiedBecause = minifiedReason(text);
    if (minifiedBecause) return skip('minified', minifiedBecause);
  }
  return {
    kind: 'file',
    file: {
      path: workspacePath,
      size: bytes.length,
      mtimeMs: stats.mtimeMs,
      contentHash: createHash('sha256').update(bytes).digest('hex'),
      text,
      invalidUtf8,
    },
  };
}

type BoundedRead = { kind: 'read'; bytes: Buffer; stats: Stats } | { kind: 'too-large'; size: number } | { kind: 'not-a-file' };

// O_NONBLOCK: opening a FIFO that sits where a file was listed must not block a thread-pool
// thread; it has no effect on regular files. (0 where the platform has no such flag.)
const OPEN_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0);

/**
 * open → fstat → read → close. The size check uses fstat of the open descriptor, so a file
 * over the limit is never read, and the stats belong to the bytes read. Callback fs rather
 * than fs/promises: for thousands of small files FileHandle costs about twice the time.
 */
function readBounded(absolutePath: string, limit: number): Promise<BoundedRead> {
  return new Promise((resolve, reject) => {
    fsOpen(absolutePath, OPEN_FLAGS, (openError, fd) => {
      if (openError) return reject(openError);
      const finish = (error: Error | null, result?: BoundedRead) => {
        fsClose(fd, () => (error || !result ? reject(error) : resolve(result)));
      };
      fsFstat(fd, (statError, stats) => {
        if (statError) return finish(statError);
        if (!stats.isFile()) return finish(null, { kind: 'not-a-file' });
        if (stats.size > limit) return finish(null, { kind: 'too-large', size: stats.size });
        // One byte more than fstat said, to notice a file that grew meanwhile; then keep reading it, up to the limit.
        let buffer = Buffer.allocUnsafe(Math.min(stats.size, limit) + 1);
        let filled = 0;
        const readMore = () => {
          const requested = buffer.length - filled;
          fsRead(fd, buffer, filled, requested, filled, (readError, bytesRead) => {
            if (readError) return finish(readError);
            filled += bytesRead;
            if (filled > limit) return finish(null, { kind: 'too-large', size: filled });
            // A regular file reads short only at its end.
            if (bytesRead < requested) return finish(null, { kind: 'read', bytes: buffer.subarray(0, filled), stats });
            if (filled === buffer.length) {
              const larger = Buffer.allocUnsafe(Math.min(buffer.length * 2, limit + 1));
              buffer.copy(larger, 0, 0, filled);
              buffer = larger;
            }
            readMore();
          });
        };
        readMore();
      });
    });
  });
}

function binaryReason(bytes: Buffer): string | undefined {
  const sniffLength = Math.min(bytes.length, BINARY_SNIFF_BYTES);
  const nul = bytes.subarray(0, sniffLength).indexOf(0);
  if (nul !== -1) return `NUL byte at offset ${nul}`;
  let controlBytes = 0;
  for (let i = 0; i < sniffLength; i++) {
    const byte = bytes[i];
    const isTextControl = byte === 0x09 || byte === 0x0a || byte === 0x0b || byte === 0x0c || byte === 0x0d || byte === 0x1b;
    if ((byte < 0x20 && !isTextControl) || byte === 0x7f) controlBytes++;
  }
  if (sniffLength > 0 && controlBytes / sniffLength > MAX_CONTROL_BYTE_SHARE) {
    return `${Math.round((100 * controlBytes) / sniffLength)}% control bytes in the first ${formatBytes(sniffLength)}`;
  }
  return undefined;
}

function generatedMarker(text: string): string | undefined {
  let lineStart = 0;
  for (let line = 1; line <= GENERATED_MARKER_LINES && lineStart < text.length; line++) {
    let lineEnd = text.indexOf('\n', lineStart);
    if (lineEnd === -1) lineEnd = text.length;
    const content = text.slice(lineStart, Math.min(lineEnd, lineStart + 1000)).trimStart();
    if (COMMENT_LEADER.test(content)) {
      const marker = GENERATED_MARKER_EXACT.exec(content) ?? GENERATED_MARKER_ANY_CASE.exec(content);
      if (marker) return `line ${line} says "${marker[0]}"`;
    }
    lineStart = lineEnd + 1;
  }
  return undefined;
}

function minifiedReason(text: string): string | undefined {
  let newlines = 0;
  let longestLine = 0;
  for (let lineStart = 0; lineStart < text.length;) {
    let lineEnd = text.indexOf('\n', lineStart);
    if (lineEnd === -1) lineEnd = text.length;
    else newlines++;
    longestLine = Math.max(longestLine, lineEnd - lineStart);
    lineStart = lineEnd + 1;
  }
  if (longestLine > MINIFIED_MAX_LINE) return `a line of ${longestLine.toLocaleString('en-US')} chars > ${MINIFIED_MAX_LINE.toLocaleString('en-US')}`;
  // A final newline ends the last line; it does not start an empty one.
  const lines = Math.max(1, newlines + (text.endsWith('\n') ? 0 : 1));
  const averageLine = (text.length - newlines) / lines;
  if (averageLine > MINIFIED_MAX_AVERAGE_LINE) return `average line of ${Math.round(averageLine)} chars > ${MINIFIED_MAX_AVERAGE_LINE}`;
  return undefined;
}

/** Runs one file's check; an unexpected exception becomes that file's skip, never the scan's failure. */
export async function guardOutcome(context: ScanContext, workspacePath: string, inspect: () => Promise<FileOutcome>): Promise<FileOutcome> {
  try {
    return await inspect();
  } catch (error) {
    return { kind: 'skipped', skipped: logSkip(context, workspacePath, 'unreadable', `unexpected error: ${describeError(error)}`) };
  }
}

function logSkip(context: ScanContext, workspacePath: string, reason: SkipReason, detail: string): SkippedFile {
  context.log(`skipped ${workspacePath}: ${reason} (${detail})`);
  return { path: workspacePath, reason, detail };
}

/** Runs `work` on every item with at most `limit` in flight; rejects with the abort reason when aborted. */
async function forEachConcurrently<T>(items: readonly T[], limit: number, signal: AbortSignal | undefined, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      signal?.throwIfAborted();
      await work(items[next++]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** "a/./b" → "a/b"; undefined for paths that leave the root. Accepts '\' from Windows callers. */
function normalizeWorkspacePath(relativePath: string): string | undefined {
  const normalized = path.posix.normalize(relativePath.replace(/\\/g, '/')).replace(/^\/+|\/+$/g, '');
  if (normalized === '' || normalized === '.' || normalized === '..' || normalized.startsWith('../') || path.isAbsolute(relativePath)) return undefined;
  return normalized;
}

/** True when `candidate` is `directory` or lies below it (both absolute). */
export function isInside(directory: string, candidate: string): boolean {
  return candidate === directory || candidate.startsWith(directory.endsWith(path.sep) ? directory : directory + path.sep);
}

export function formatBytes(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${trimNumber(bytes / (1024 * 1024))} MB`;
  if (bytes >= 1024) return `${trimNumber(bytes / 1024)} KB`;
  return `${bytes} B`;
}

function trimNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function byPath(a: { path: string }, b: { path: string }): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function describeError(error: unknown): string {
  const code = errorCode(error);
  const message = error instanceof Error ? error.message : String(error);
  return code && !message.startsWith(code) ? `${code}: ${message}` : message;
}
