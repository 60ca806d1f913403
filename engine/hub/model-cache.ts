// Where models live: `<home>/models/<org>--<name>/<commit>/` for Hub downloads, and a
// registry of local folders added by hand. home is PANORAMA_HOME, else the platform's cache
// folder. A download becomes a model only when its marker file is written, after every
// file was verified: a partial download is listed as such, never as usable.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const MARKER = '.panorama-model.json';

export interface CompleteMarker {
  repo: string;
  revision: string;
  commit: string;
  files: { path: string; size: number; sha256?: string }[];
  completedAt: string;
}

export interface ModelEntry {
  /** What `--model` takes: `org/name` for a download, the folder's name (or --name) for a local one. */
  name: string;
  kind: 'hub' | 'local';
  dir: string;
  repo?: string;
  commit?: string;
  revision?: string;
}

export interface PartialDownload {
  repo: string;
  commit: string;
  dir: string;
  bytes: number;
}

export class ModelCacheError extends Error {
  override readonly name = 'ModelCacheError';
}

/** PANORAMA_HOME, else ~/.cache/panorama (XDG), ~/Library/Caches/panorama (macOS), %LOCALAPPDATA%\panorama (Windows). */
export function panoramaHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PANORAMA_HOME?.trim()) return path.resolve(env.PANORAMA_HOME.trim());
  if (process.platform === 'win32') return path.join(env.LOCALAPPDATA ?? path.join(os.homedir(), 'AppData', 'Local'), 'panorama');
  if (process.platform === 'darwin') return path.join(os.homedir(), 'Library', 'Caches', 'panorama');
  return path.join(env.XDG_CACHE_HOME?.trim() || path.join(os.homedir(), '.cache'), 'panorama');
}

export function repoFolderName(repo: string): string {
  return repo.replace('/', '--');
}

export function downloadDir(home: string, repo: string, commit: string): string {
  return path.join(home, 'models', repoFolderName(repo), commit);
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isMarker(value: unknown): value is CompleteMarker {
  if (!isRecord(value)) return false;
  return (
    typeof value.repo === 'string' && typeof value.commit === 'string' && typeof value.revision === 'string' && Array.isArray(value.files) && typeof value.completedAt === 'string'
  );
}

export function readMarker(dir: string): CompleteMarker | undefined {
  const marker = readJson(path.join(dir, MARKER));
  return isMarker(marker) ? marker : undefined;
}

/** Written last, atomically: from this moment the folder is a usable model. */
export function writeMarker(dir: string, marker: CompleteMarker): void {
  const file = path.join(dir, MARKER);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(marker, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

function folderBytes(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((n, e) => n + (e.isFile() ? statSync(path.join(dir, e.name)).size : 0), 0);
}

/** Every download folder: complete (a marker whose files are all there at their size) or partial. */
function scanDownloads(home: string): { complete: (ModelEntry & { completedAt: string })[]; partial: PartialDownload[] } {
  const root = path.join(home, 'models');
  const complete: (ModelEntry & { completedAt: string })[] = [];
  const partial: PartialDownload[] = [];
  if (!existsSync(root)) return { complete, partial };
  for (const repoFolder of readdirSync(root).sort()) {
    const repoDir = path.join(root, repoFolder);
    if (!statSync(repoDir).isDirectory() || !repoFolder.includes('--')) continue;
    for (const commit of readdirSync(repoDir).sort()) {
      const dir = path.join(repoDir, commit);
      if (!statSync(dir).isDirectory()) continue;
      const marker = readMarker(dir);
      const intact = marker?.files.every((f) => statSync(path.join(dir, f.path), { throwIfNoEntry: false })?.size === f.size);
      if (marker && intact)
        complete.push({ name: marker.repo, kind: 'hub', dir, repo: marker.repo, commit: marker.commit, revision: marker.revision, completedAt: marker.completedAt });
      else partial.push({ repo: repoFolder.replace('--', '/'), commit, dir, bytes: folderBytes(dir) });
    }
  }
  return { complete, partial };
}

interface Registry {
  models: { name: string; dir: string }[];
}

function registryFile(home: string): string {
  return path.join(home, 'registry.json');
}

function readRegistry(home: string): Registry {
  const value = readJson(registryFile(home));
  const models: unknown[] = isRecord(value) && Array.isArray(value.models) ? value.models : [];
  return { models: models.flatMap((m) => (isRecord(m) && typeof m.name === 'string' && typeof m.dir === 'string' ? [{ name: m.name, dir: m.dir }] : [])) };
}

function writeRegistry(home: string, registry: Registry): void {
  mkdirSync(home, { recursive: true });
  writeFileSync(`${registryFile(home)}.tmp`, `${JSON.stringify(registry, null, 2)}\n`);
  renameSync(`${registryFile(home)}.tmp`, registryFile(home));
}

/** Usable models: downloads (the newest commit of a repo first) and registered folders. */
export function listModels(home: string): ModelEntry[] {
  const downloads = scanDownloads(home).complete.sort((a, b) => a.name.localeCompare(b.name) || b.completedAt.localeCompare(a.completedAt));
  const local = readRegistry(home).models.map((m): ModelEntry => ({ name: m.name, kind: 'local', dir: m.dir }));
  return [...downloads.map(({ completedAt: _c, ...entry }) => entry), ...local];
}

export function partialDownloads(home: string): PartialDownload[] {
  return scanDownloads(home).partial;
}

/** `org/name` (its newest download), `org/name@COMMIT-PREFIX`, or a registered name. */
export function findModel(home: string, name: string): ModelEntry | undefined {
  const models = listModels(home);
  const at = name.indexOf('@');
  if (at > 0) {
    const repo = name.slice(0, at);
    const commit = name.slice(at + 1);
    return models.find((m) => m.kind === 'hub' && m.repo === repo && (m.commit?.startsWith(commit) || m.revision === commit));
  }
  return models.find((m) => m.name === name);
}

export function registerModel(home: string, dir: string, name = path.basename(dir)): ModelEntry {
  const absolute = path.resolve(dir);
  if (!existsSync(path.join(absolute, 'config.json')))
    throw new ModelCacheError(`${absolute} is not a model folder: it has no config.json (a model folder holds config.json, *.safetensors and tokenizer.json)`);
  if (!/^[\w.@/-]+$/.test(name)) throw new ModelCacheError(`"${name}" cannot name a model: use letters, digits and . _ - /`);
  const taken = findModel(home, name);
  if (taken && path.resolve(taken.dir) !== absolute) throw new ModelCacheError(`the name "${name}" is taken by ${taken.dir}; pick another with --name`);
  const registry = readRegistry(home);
  registry.models = [...registry.models.filter((m) => m.name !== name), { name, dir: absolute }];
  writeRegistry(home, registry);
  return { name, kind: 'local', dir: absolute };
}

/** Removes a download's folder (every commit of the repo) or a registered folder's entry (its files are the user's and stay). */
export function removeModel(home: string, name: string): { removed: ModelEntry[]; deletedFiles: boolean } {
  const registry = readRegistry(home);
  const registered = registry.models.filter((m) => m.name === name);
  if (registered.length > 0) {
    writeRegistry(home, { models: registry.models.filter((m) => m.name !== name) });
    return { removed: registered.map((m) => ({ name: m.name, kind: 'local', dir: m.dir })), deletedFiles: false };
  }
  const repo = name.split('@')[0];
  const repoDir = path.join(home, 'models', repoFolderName(repo));
  const downloads = listModels(home).filter((m) => m.kind === 'hub' && m.repo === repo);
  const target = name.includes('@') ? findModel(home, name) : undefined;
  if (target) {
    rmSync(target.dir, { recursive: true, force: true });
    return { removed: [target], deletedFiles: true };
  }
  if (!name.includes('@') && existsSync(repoDir) && repo.includes('/')) {
    rmSync(repoDir, { recursive: true, force: true });
    return { removed: downloads, deletedFiles: true };
  }
  throw new ModelCacheError(`no model named "${name}"; panorama models list shows the names`);
}

/**
 * What `--model` means: a folder, else the name of a
 * downloaded or registered model. Unknown names are refused with the names there are.
 */
export function resolveModelArgument(value: string, home = panoramaHome()): string {
  const asDir = path.resolve(value);
  // An existing folder is the caller's to check (it says what a model folder must hold).
  if (statSync(asDir, { throwIfNoEntry: false })?.isDirectory()) return asDir;
  const found = findModel(home, value);
  if (found) return found.dir;
  const partial = partialDownloads(home).find((p) => p.repo === value.split('@')[0]);
  if (partial) throw new ModelCacheError(`${value} is only partly downloaded; run \`panorama models pull ${partial.repo}\` to finish it`);
  const names = listModels(home).map((m) => m.name);
  throw new ModelCacheError(
    `--model ${value}: not a model folder (no config.json there) and not a model name${names.length ? ` (known: ${names.join(', ')})` : ''}; ` +
      `\`panorama models pull ORG/NAME\` downloads one, \`panorama models add DIR\` registers a folder`,
  );
}
