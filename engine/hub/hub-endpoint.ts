// Where the Hugging Face Hub is and who we are to it, by the Hub's own conventions:
// HF_ENDPOINT (default https://huggingface.co) and HF_TOKEN (sent as `Authorization: Bearer`).
// Repo ids are `org/name`, optionally `@revision` (a branch, tag or commit; default `main`).

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';

export interface HubSettings {
  endpoint: string;
  token?: string;
}

/** A Hub problem a user can act on: the message says what happened and what to do. */
export class HubError extends Error {
  override readonly name = 'HubError';
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export function hubSettings(env: NodeJS.ProcessEnv = process.env): HubSettings {
  const endpoint = (env.HF_ENDPOINT?.trim() || DEFAULT_ENDPOINT).replace(/\/+$/, '');
  if (!/^https?:\/\//.test(endpoint)) throw new HubError(`HF_ENDPOINT must be an http(s) URL, got "${endpoint}"`);
  // HUGGING_FACE_HUB_TOKEN is the older name huggingface_hub still reads.
  const token = env.HF_TOKEN?.trim() || env.HUGGING_FACE_HUB_TOKEN?.trim() || undefined;
  return { endpoint, token };
}

export interface RepoRef {
  repo: string;
  revision: string;
}

const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Parses `org/name[@revision]`; a bad id is refused with the form it must take. */
export function parseRepoRef(text: string): RepoRef {
  const at = text.indexOf('@');
  const repo = at < 0 ? text : text.slice(0, at);
  const revision = at < 0 ? DEFAULT_REVISION : text.slice(at + 1);
  const parts = repo.split('/');
  if (parts.length !== 2 || !parts.every((p) => REPO_PART.test(p) && !p.includes('..'))) {
    throw new HubError(`"${text}" is not a Hub model id: expected ORG/NAME or ORG/NAME@REVISION, e.g. openbmb/MiniCPM-SALA`);
  }
  if (revision === '') throw new HubError(`"${text}" has an empty revision after "@"`);
  return { repo, revision };
}

/** `GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true`: the commit and every file with its LFS sha256. */
export function revisionUrl(settings: HubSettings, ref: RepoRef): string {
  return `${settings.endpoint}/api/models/${ref.repo}/revision/${encodeURIComponent(ref.revision)}?blobs=true`;
}

/** `{endpoint}/{repo}/resolve/{commit}/{file}`: the file's bytes, usually by a redirect to the storage host. */
export function resolveUrl(settings: HubSettings, repo: string, commit: string, file: string): string {
  return `${settings.endpoint}/${repo}/resolve/${encodeURIComponent(commit)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}
