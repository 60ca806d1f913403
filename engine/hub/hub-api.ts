// The Hub's model API: a revision (branch, tag or commit) resolved to its commit, with every
// file of the repo at that commit (`siblings`: `rfilename`, `size`, and for LFS files
// `lfs.sha256` / `lfs.size`, which `?blobs=true` asks for).
import { hubError, hubRequest, readBody } from './hub-http.js';
import { HubError, revisionUrl, type HubSettings, type RepoRef } from './hub-endpoint.js';

export interface RepoFile {
  /** Path inside the repo, `/`-separated. */
  path: string;
  size: number;
  /** sha256 of the content, for LFS files (weights); small git files have none. */
  sha256?: string;
}

export interface RevisionInfo {
  repo: string;
  revision: string;
  commit: string;
  files: RepoFile[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseSibling(value: unknown): RepoFile | undefined {
  if (!isRecord(value) || typeof value.rfilename !== 'string') return undefined;
  const lfs = isRecord(value.lfs) ? value.lfs : undefined;
  const size = typeof lfs?.size === 'number' ? lfs.size : typeof value.size === 'number' ? value.size : undefined;
  if (size === undefined) return undefined;
  const sha256 = typeof lfs?.sha256 === 'string' && /^[0-9a-f]{64}$/.test(lfs.sha256) ? lfs.sha256 : undefined;
  return { path: value.rfilename, size, sha256 };
}

export async function fetchRevision(settings: HubSettings, ref: RepoRef, signal?: AbortSignal): Promise<RevisionInfo> {
  const { response } = await hubRequest(revisionUrl(settings, ref), { token: settings.token, signal, headers: { accept: 'application/json' } });
  const context = { repo: ref.repo, endpoint: settings.endpoint, tokenSent: settings.token !== undefined, what: `revision ${ref.revision}` };
  if (response.statusCode !== 200) {
    response.resume();
    throw hubError(response, context);
  }
  let info: unknown;
  try {
    info = JSON.parse(await readBody(response));
  } catch {
    throw new HubError(`${settings.endpoint} did not answer ${ref.repo}@${ref.revision} with JSON: is HF_ENDPOINT a Hugging Face Hub?`);
  }
  if (!isRecord(info) || typeof info.sha !== 'string' || !/^[0-9a-f]{40}$/.test(info.sha) || !Array.isArray(info.siblings)) {
    throw new HubError(`${settings.endpoint}'s answer for ${ref.repo}@${ref.revision} has no commit "sha" and "siblings": is HF_ENDPOINT a Hugging Face Hub?`);
  }
  const files = info.siblings.map(parseSibling).filter((f): f is RepoFile => f !== undefined);
  for (const file of files) {
    // Files land inside the model folder: no absolute paths, no way up.
    if (file.path.startsWith('/') || file.path.split('/').some((part) => part === '..' || part === '')) {
      throw new HubError(`${ref.repo} lists a file with an unsafe path "${file.path}"; refusing to download it`);
    }
  }
  return { repo: ref.repo, revision: ref.revision, commit: info.sha, files };
}
