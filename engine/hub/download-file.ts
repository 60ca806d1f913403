// One file from the Hub into `<dest>.part`, then renamed to `dest` once its size and sha256
// are right. A `.part` left by an interruption or a kill is resumed with `Range: bytes=N-`
// (206 appends; a server that ignores the range answers 200 and the file starts over; 416
// means the part already holds every byte). A wrong hash deletes the part and says so.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { hubError, hubRequest } from './hub-http.js';
import { HubError, type HubSettings } from './hub-endpoint.js';

export interface FileToDownload {
  repo: string;
  /** Path inside the repo (for messages). */
  path: string;
  url: string;
  dest: string;
  size: number;
  sha256?: string;
}

export interface DownloadCallbacks {
  signal?: AbortSignal;
  /** Bytes of this file already on disk when the download (re)starts. */
  onStart?: (resumedBytes: number) => void;
  /** Bytes received since the last call. */
  onBytes?: (bytes: number) => void;
}

export function partPath(dest: string): string {
  return `${dest}.part`;
}

async function sizeOf(file: string): Promise<number | undefined> {
  return (await stat(file).catch(() => undefined))?.size;
}

async function hashFile(file: string, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(file)) hash.update(chunk);
}

function contentRangeStart(header: string | undefined): number | undefined {
  const match = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header ?? '');
  return match ? Number(match[1]) : undefined;
}

/** Checks the finished part and moves it into place; a wrong sha256 deletes it. */
async function finish(file: FileToDownload, part: string, hash: Hash): Promise<void> {
  const size = await sizeOf(part);
  if (size !== file.size) throw new HubError(`${file.repo}: ${file.path} has ${size ?? 0} of ${file.size} bytes; run the pull again to resume`);
  if (file.sha256 !== undefined) {
    const got = hash.digest('hex');
    if (got !== file.sha256) {
      await rm(part, { force: true });
      throw new HubError(
        `${file.repo}: ${file.path} does not match the sha256 the Hub lists (got ${got.slice(0, 16)}…, expected ${file.sha256.slice(0, 16)}…): ` +
          'the download was corrupted or the server sent another file; the partial file was deleted, run the pull again to fetch it anew',
      );
    }
  }
  await rename(part, file.dest);
}

export async function downloadFile(settings: HubSettings, file: FileToDownload, callbacks: DownloadCallbacks = {}): Promise<void> {
  const part = partPath(file.dest);
  let offset = (await sizeOf(part)) ?? 0;
  if (offset > file.size) {
    await rm(part, { force: true });
    offset = 0;
  }
  const hash = createHash('sha256');
  if (offset > 0) await hashFile(part, hash);
  callbacks.onStart?.(offset);
  if (offset === file.size) return finish(file, part, hash);

  const { response } = await hubRequest(file.url, { token: settings.token, signal: callbacks.signal, headers: offset > 0 ? { range: `bytes=${offset}-` } : {} });
  const status = response.statusCode ?? 0;
  if (status === 416) {
    // The server has nothing past `offset`: the part is the whole file, or it is not this file.
    response.resume();
    if (offset !== file.size) {
      await rm(part, { force: true });
      throw new HubError(
        `${file.repo}: the server has no bytes of ${file.path} past ${offset} (HTTP 416) but the Hub lists ${file.size}; the partial file was deleted, run the pull again`,
      );
    }
    return finish(file, part, hash);
  }
  let restart = false;
  if (status === 206) {
    const start = contentRangeStart(response.headers['content-range']);
    if (start !== offset) {
      response.resume();
      throw new HubError(
        `${file.repo}: ${file.path}: asked for bytes from ${offset}, the server sent a range from ${start ?? 'an unknown start'}; delete ${part} and run the pull again`,
      );
    }
  } else if (status === 200) {
    restart = offset > 0; // the range was ignored: the body is the whole file
  } else {
    response.resume();
    throw hubError(response, { repo: file.repo, endpoint: settings.endpoint, tokenSent: settings.token !== undefined, what: `file ${file.path}` });
  }

  let hasher = hash;
  if (restart) {
    hasher = createHash('sha256');
    callbacks.onBytes?.(-offset);
  }
  const handle = await open(part, restart || offset === 0 ? 'w' : 'a');
  let received = 0;
  try {
    for await (const chunk of response) {
      const bytes: Buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      await handle.write(bytes);
      hasher.update(bytes);
      received += bytes.byteLength;
      callbacks.onBytes?.(bytes.byteLength);
    }
    await handle.sync();
  } catch (err) {
    if (callbacks.signal?.aborted) throw err;
    const reason = err instanceof Error ? err.message : String(err);
    throw new HubError(`${file.repo}: the connection broke while fetching ${file.path} (${reason}); what arrived is kept, run the pull again to resume`);
  } finally {
    await handle.close();
  }
  const expected = file.size - (restart ? 0 : offset);
  if (received < expected)
    throw new HubError(`${file.repo}: the connection closed after ${received} of ${expected} bytes of ${file.path}; what arrived is kept, run the pull again to resume`);
  return finish(file, part, hasher);
}
