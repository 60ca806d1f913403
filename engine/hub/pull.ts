// `pull`: a Hub revision into the model cache. The revision is resolved to a commit first
// (so every file comes from the same commit), the config and shard index are fetched
// before the weights (so fit and disk space are checked before the big bytes), each file
// is verified, and the folder's completion marker is written last.
import { mkdir, readFile, statfs, stat } from 'node:fs/promises';
import path from 'node:path';
import { fetchRevision, type RepoFile, type RevisionInfo } from './hub-api.js';
import { downloadFile, partPath } from './download-file.js';
import { ProgressMeter, formatBytes, type PullProgress } from './download-progress.js';
import { HubError, resolveUrl, type HubSettings, type RepoRef } from './hub-endpoint.js';
import { downloadDir, readMarker, writeMarker, type ModelEntry } from './model-cache.js';
import { lockDownload } from './pull-lock.js';

/** Small files the engine reads beside the weights, fetched when the repo has them. */
const SIDE_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];
const INDEX_FILE = 'model.safetensors.index.json';
/** Room left on the disk after the download (the engine's converted form, the index store). */
const DISK_MARGIN_BYTES = 1 << 30;

export interface PullOptions {
  settings: HubSettings;
  home: string;
  signal?: AbortSignal;
  onProgress?: (progress: PullProgress) => void;
  /** Called with the parsed config.json and the weights' total bytes before they are fetched; throws to refuse. */
  checkFit?: (config: unknown, weightBytes: number) => void | Promise<void>;
  log?: (message: string) => void;
}

export interface PullResult {
  model: ModelEntry;
  alreadyThere: boolean;
  bytesFetched: number;
}

function required(info: RevisionInfo, name: string): RepoFile {
  const file = info.files.find((f) => f.path === name);
  if (!file) throw new HubError(`${info.repo}@${info.revision} has no ${name}: it is not a model repo the engine can run (it needs config.json and safetensors weights)`);
  return file;
}

/** The shard files an index names, each of which the revision must list. */
async function shardsOf(info: RevisionInfo, indexPath: string): Promise<RepoFile[]> {
  let weightMap: unknown;
  try {
    const parsed: unknown = JSON.parse(await readFile(indexPath, 'utf8'));
    weightMap = typeof parsed === 'object' && parsed !== null && 'weight_map' in parsed ? parsed.weight_map : undefined;
  } catch (err) {
    throw new HubError(`${info.repo}: ${INDEX_FILE} is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof weightMap !== 'object' || weightMap === null) throw new HubError(`${info.repo}: ${INDEX_FILE} has no "weight_map"`);
  const names = [...new Set(Object.values(weightMap))].sort();
  return names.map((name) => {
    if (typeof name !== 'string') throw new HubError(`${info.repo}: ${INDEX_FILE} maps a tensor to ${JSON.stringify(name)}, not a file name`);
    const file = info.files.find((f) => f.path === name);
    if (!file) throw new HubError(`${info.repo}: ${INDEX_FILE} names the shard ${name}, which the repo does not have at ${info.commit.slice(0, 12)}`);
    return file;
  });
}

async function bytesOnDisk(file: string): Promise<number> {
  return (await stat(file).catch(() => undefined))?.size ?? 0;
}

export async function checkDiskSpace(dir: string, needed: number): Promise<void> {
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  if (needed + DISK_MARGIN_BYTES > free) {
    throw new HubError(
      `not enough disk space: the download needs ${formatBytes(needed)} more (plus ${formatBytes(DISK_MARGIN_BYTES)} to spare) and ${dir} has ${formatBytes(free)} free; ` +
        'free some space, or set PANORAMA_HOME to a folder on a larger disk',
    );
  }
}

export async function pullModel(ref: RepoRef, options: PullOptions): Promise<PullResult> {
  const { settings, home, signal } = options;
  const info = await fetchRevision(settings, ref, signal);
  const dir = downloadDir(home, info.repo, info.commit);
  const entry: ModelEntry = { name: info.repo, kind: 'hub', dir, repo: info.repo, commit: info.commit, revision: ref.revision };
  if (readMarker(dir)) return { model: entry, alreadyThere: true, bytesFetched: 0 };
  await mkdir(dir, { recursive: true });
  const unlock = lockDownload(dir, `${info.repo}@${info.commit.slice(0, 12)}`);
  try {
    return await pullCommit(info, ref, dir, entry, options);
  } finally {
    unlock();
  }
}

async function pullCommit(info: RevisionInfo, ref: RepoRef, dir: string, entry: ModelEntry, options: PullOptions): Promise<PullResult> {
  const { settings, signal } = options;
  options.log?.(`${info.repo}@${ref.revision} is commit ${info.commit}`);

  let bytesFetched = 0;
  const fetchOne = async (file: RepoFile, meter?: ProgressMeter, index = 0, count = 1): Promise<void> => {
    const dest = path.join(dir, ...file.path.split('/'));
    if ((await bytesOnDisk(dest)) === file.size) {
      meter?.skip(file.size);
      return;
    }
    await mkdir(path.dirname(dest), { recursive: true });
    const report = () =>
      meter &&
      options.onProgress?.({
        file: file.path,
        fileIndex: index,
        files: count,
        bytesDone: meter.bytesDone,
        bytesTotal: meter.total,
        bytesPerSecond: meter.bytesPerSecond,
        etaSeconds: meter.etaSeconds,
      });
    await downloadFile(
      settings,
      { repo: info.repo, path: file.path, url: resolveUrl(settings, info.repo, info.commit, file.path), dest, size: file.size, sha256: file.sha256 },
      {
        signal,
        onStart: (resumed) => {
          meter?.skip(resumed);
          report();
        },
        onBytes: (bytes) => {
          bytesFetched += bytes;
          if (bytes < 0) meter?.skip(bytes);
          else meter?.add(bytes);
          report();
        },
      },
    );
  };

  // The small files first: what the fit check and the shard list are read from.
  const config = required(info, 'config.json');
  await fetchOne(config);
  const index = info.files.find((f) => f.path === INDEX_FILE);
  if (index) await fetchOne(index);
  const weights = index ? await shardsOf(info, path.join(dir, INDEX_FILE)) : info.files.filter((f) => f.path === 'model.safetensors');
  if (weights.length === 0) throw new HubError(`${info.repo}@${ref.revision} has no safetensors weights (model.safetensors or ${INDEX_FILE}); the engine reads safetensors only`);
  const side = info.files.filter((f) => SIDE_FILES.includes(f.path));
  if (!side.some((f) => f.path === 'tokenizer.json')) options.log?.(`${info.repo} has no tokenizer.json; the engine will fall back to bytes`);

  let parsedConfig: unknown;
  try {
    parsedConfig = JSON.parse(await readFile(path.join(dir, 'config.json'), 'utf8'));
  } catch (err) {
    throw new HubError(`${info.repo}: config.json is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  const weightBytes = weights.reduce((n, f) => n + f.size, 0);
  await options.checkFit?.(parsedConfig, weightBytes);

  const rest = [...side, ...weights];
  let missing = 0;
  for (const file of rest) {
    const dest = path.join(dir, file.path);
    missing += (await bytesOnDisk(dest)) === file.size ? 0 : file.size - (await bytesOnDisk(partPath(dest)));
  }
  await checkDiskSpace(dir, missing);

  const meter = new ProgressMeter(rest.reduce((n, f) => n + f.size, 0));
  for (const [i, file] of rest.entries()) await fetchOne(file, meter, i, rest.length);

  const files = [config, ...(index ? [index] : []), ...rest].map((f) => ({ path: f.path, size: f.size, sha256: f.sha256 }));
  writeMarker(dir, { repo: info.repo, revision: ref.revision, commit: info.commit, files, completedAt: new Date().toISOString() });
  return { model: entry, alreadyThere: false, bytesFetched };
}
