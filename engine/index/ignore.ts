// Which workspace paths stay out of the context: `.git`, caller exclude globs (VS Code
// `files.exclude` style), every `.gitignore` (nested, gitignore semantics through the
// `ignore` package) and a root `.panoramaignore`.
//
// Paths are workspace-relative with '/' separators. Precedence, lowest to highest, as git
// applies it: `.git/info/exclude`, the root `.gitignore`, then deeper ones (a nested file's patterns are relative
// to its directory), then `.panoramaignore`, so it can re-include (`!pattern`) what git
// ignores. Exclude globs and `.git` win over everything: the caller asked for them.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import ignore, { type Ignore } from 'ignore';

type TestResult = ReturnType<Ignore['test']>;
import picomatch from 'picomatch';

export const GITIGNORE = '.gitignore';
export const PANORAMAIGNORE = '.panoramaignore';
/** The repository's own untracked ignore list: git applies it below every .gitignore. */
export const GIT_INFO_EXCLUDE = '.git/info/exclude';

// Git on Linux matches case-sensitively; Windows and macOS file systems usually do not.
const CASE_INSENSITIVE = process.platform === 'win32' || process.platform === 'darwin';

interface RuleFile {
  /** Where the rules came from, for skip details: ".gitignore", "src/.gitignore". */
  source: string;
  /** The directory its patterns are relative to ('' = workspace root). */
  directory: string;
  rules: Ignore;
  patterns: string[];
  /** Parent directory → the patterns that do not match it or its ancestors (see ownVerdict). */
  rulesBelowReincluded: Map<string, Ignore>;
}

interface ExcludeGlob {
  glob: string;
  matches: (relativePath: string) => boolean;
}

/** True for the files whose edits change the rules themselves. */
export function isIgnoreFile(relativePath: string): boolean {
  return relativePath === PANORAMAIGNORE || relativePath === GITIGNORE || relativePath.endsWith(`/${GITIGNORE}`);
}

export class IgnoreRules {
  private readonly root: string;
  private readonly excludeGlobs: ExcludeGlob[];
  /** Directory → its `.gitignore` (null: the directory has none). Filled lazily or by preload. */
  private readonly gitignoreByDirectory = new Map<string, RuleFile | null>();
  private panoramaignore: RuleFile | null | undefined;
  private infoExclude: RuleFile | null | undefined;

  constructor(root: string, exclude: readonly string[] = []) {
    this.root = root;
    this.excludeGlobs = exclude
      .map(normalizeGlob)
      .filter((glob) => glob !== '')
      .map((glob) => ({
        glob,
        matches: picomatch(glob, { dot: true, nocase: CASE_INSENSITIVE }),
      }));
  }

  /** Reads `directory/.gitignore` (and, at the root, `.panoramaignore`) ahead of matching, without blocking. */
  async preload(directory: string): Promise<void> {
    if (directory === '' && this.panoramaignore === undefined) {
      this.panoramaignore = parseRuleFile(PANORAMAIGNORE, '', await readTextOrNull(path.join(this.root, PANORAMAIGNORE)));
    }
    if (this.gitignoreByDirectory.has(directory)) return;
    const source = joinRelative(directory, GITIGNORE);
    this.gitignoreByDirectory.set(directory, parseRuleFile(source, directory, await readTextOrNull(path.join(this.root, source))));
  }

  /** Preloads the rule files of every directory above `relativePath`. */
  async preloadAncestors(relativePath: string): Promise<void> {
    for (const directory of ancestorDirectories(relativePath)) await this.preload(directory);
  }

  /** Forgets a rule file so that the next match reads it again (after it was edited, created or deleted). */
  invalidate(ignoreFilePath: string): void {
    if (ignoreFilePath === PANORAMAIGNORE) this.panoramaignore = undefined;
    else if (isIgnoreFile(ignoreFilePath)) this.gitignoreByDirectory.delete(path.posix.dirname(ignoreFilePath).replace(/^\.$/, ''));
  }

  /**
   * Why `relativePath` is ignored, or undefined when it is not. Checks only the entry itself:
   * a walk that never descends into ignored directories needs no more.
   */
  matchEntry(relativePath: string, isDirectory: boolean): string | undefined {
    const name = relativePath.slice(relativePath.lastIndexOf('/') + 1);
    if (name === '.git') return '.git is never indexed';
    for (const exclude of this.excludeGlobs) {
      if (exclude.matches(relativePath)) return `matched exclude glob "${exclude.glob}"`;
    }
    let reason: string | undefined;
    const apply = (file: RuleFile | null) => {
      if (!file) return;
      const pathInFile = file.directory === '' ? relativePath : relativePath.slice(file.directory.length + 1);
      const result = ownVerdict(file, pathInFile, isDirectory);
      if (result.ignored) reason = `matched "${result.rule?.pattern ?? '?'}" in ${file.source}`;
      else if (result.unignored) reason = undefined;
    };
    apply(this.infoExcludeFile());
    for (const directory of ancestorDirectories(relativePath)) apply(this.gitignoreFor(directory));
    apply(this.panoramaignoreFile());
    return reason;
  }

  /** Like matchEntry, but also true when a directory above the path is ignored (events, single-file reads). */
  match(relativePath: string, isDirectory: boolean): string | undefined {
    const parts = relativePath.split('/');
    for (let depth = 1; depth < parts.length; depth++) {
      const directory = parts.slice(0, depth).join('/');
      const reason = this.matchEntry(directory, true);
      if (reason) return `inside ignored directory ${directory}/ (${reason})`;
    }
    return this.matchEntry(relativePath, isDirectory);
  }

  // Lazy synchronous loading keeps matching correct for directories nobody preloaded (a
  // directory created while watching); the scan preloads, so it never blocks here.
  private gitignoreFor(directory: string): RuleFile | null {
    let file = this.gitignoreByDirectory.get(directory);
    if (file === undefined) {
      const source = joinRelative(directory, GITIGNORE);
      file = parseRuleFile(source, directory, readTextOrNullSync(path.join(this.root, source)));
      this.gitignoreByDirectory.set(directory, file);
    }
    return file;
  }

  private infoExcludeFile(): RuleFile | null {
    if (this.infoExclude === undefined) {
      this.infoExclude = parseRuleFile(GIT_INFO_EXCLUDE, '', readTextOrNullSync(path.join(this.root, GIT_INFO_EXCLUDE)));
    }
    return this.infoExclude;
  }

  private panoramaignoreFile(): RuleFile | null {
    if (this.panoramaignore === undefined) {
      this.panoramaignore = parseRuleFile(PANORAMAIGNORE, '', readTextOrNullSync(path.join(this.root, PANORAMAIGNORE)));
    }
    return this.panoramaignore;
  }
}

function parseRuleFile(source: string, directory: string, text: string | null): RuleFile | null {
  if (text === null) return null;
  return { source, directory, rules: createIgnore().add(text), patterns: text.split(/\r?\n/), rulesBelowReincluded: new Map() };
}

function createIgnore(): Ignore {
  return ignore({ ignorecase: CASE_INSENSITIVE });
}

/**
 * One rule file's verdict on a path. The `ignore` package passes a parent directory's
 * exclusion down to everything inside it, which is right within one file; but when a later
 * file re-included that directory (a deeper `.gitignore` with `!dir/`, or `.panoramaignore`),
 * what counts inside it is only this file's patterns that match the path itself.
 */
function ownVerdict(file: RuleFile, pathInFile: string, isDirectory: boolean): TestResult {
  const tested = isDirectory ? `${pathInFile}/` : pathInFile;
  const result = file.rules.test(tested);
  const slash = pathInFile.lastIndexOf('/');
  if (!result.ignored || slash === -1) return result;
  const parent = pathInFile.slice(0, slash);
  if (!file.rules.test(`${parent}/`).ignored) return result;
  let rules = file.rulesBelowReincluded.get(parent);
  if (!rules) {
    const ancestors = ancestorDirectories(`${parent}/`)
      .slice(1)
      .map((directory) => `${directory}/`);
    rules = createIgnore().add(
      file.patterns.filter((pattern) => {
        const single = createIgnore().add(pattern);
        return !ancestors.some((ancestor) => single.test(ancestor).ignored);
      }),
    );
    file.rulesBelowReincluded.set(parent, rules);
  }
  return rules.test(tested);
}

/** '' (the root), then each directory down to the path's parent: "a/b/c.ts" → '', 'a', 'a/b'. */
function ancestorDirectories(relativePath: string): string[] {
  const directories = [''];
  for (let slash = relativePath.indexOf('/'); slash !== -1; slash = relativePath.indexOf('/', slash + 1)) {
    directories.push(relativePath.slice(0, slash));
  }
  return directories;
}

function joinRelative(directory: string, name: string): string {
  return directory === '' ? name : `${directory}/${name}`;
}

// `files.exclude` keys may be written "./dist/" or "dist\\"; they match workspace-relative paths.
function normalizeGlob(glob: string): string {
  return glob.trim().replace(/\\/g, '/').replace(/^\.\//, '').replace(/\/+$/, '');
}

// A rule file that cannot be read counts as absent: a missing .gitignore is the common case,
// and an unreadable one must not stop the scan.
async function readTextOrNull(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return null;
  }
}

function readTextOrNullSync(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
