// A Hugging Face Hub on 127.0.0.1 for the tests, speaking the endpoints the engine uses:
//   GET /api/models/{org}/{name}/revision/{rev}?blobs=true → { sha, siblings: [{ rfilename, size, lfs? }] }
//   GET /{org}/{name}/resolve/{rev}/{file} → small files inline; LFS files 302 to a second
//     server (another port: another host), as the Hub redirects to its storage host
// The storage server honours `Range: bytes=N-` (206, 416 past the end) and can corrupt a
// file, cut the connection after some bytes, or trickle bytes so a client can be killed
// mid-file. Every request is logged with its Range and whether it carried a token.
import http from 'node:http';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface HubRequestLog {
  server: 'hub' | 'storage';
  method: string;
  path: string;
  range?: string;
  authorized: boolean;
  status: number;
  /** Body bytes sent. */
  bytes: number;
}

interface RepoFile {
  data: Buffer;
  lfs: boolean;
  sha256: string;
}

interface Repo {
  commit: string;
  files: Map<string, RepoFile>;
  /** When set, the repo answers 401 (GatedRepo) unless this token is sent. */
  gatedToken?: string;
}

export interface StorageFaults {
  /** Files served with one byte flipped. */
  corrupt?: Set<string>;
  /** Files whose connection is destroyed after this many body bytes (once each). */
  cutAfter?: Map<string, number>;
  /** Bytes per second for LFS bodies (a slow link, to kill a client mid-file). */
  bytesPerSecond?: number;
}

const LFS = (name: string) => name.endsWith('.safetensors');

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

export class FakeHub {
  readonly log: HubRequestLog[] = [];
  readonly faults: StorageFaults = {};
  private readonly repos = new Map<string, Repo>();
  /** Old repo id → new one: answered with a relative 307, as the Hub does for a renamed repo. */
  readonly renames = new Map<string, string>();
  private readonly blobs = new Map<string, { repo: string; file: string }>();
  private hub = http.createServer((req, res) => this.serveHub(req, res));
  private storage = http.createServer((req, res) => void this.serveStorage(req, res));
  hubPort = 0;
  storagePort = 0;

  async start(): Promise<this> {
    this.hubPort = await listen(this.hub);
    this.storagePort = await listen(this.storage);
    return this;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.hubPort}`;
  }

  async close(): Promise<void> {
    this.hub.closeAllConnections();
    this.storage.closeAllConnections();
    await Promise.all([new Promise((r) => this.hub.close(r)), new Promise((r) => this.storage.close(r))]);
  }

  /** Publishes a folder's files as `repo` at a fixed fake commit. */
  addRepo(repo: string, dir: string, names: string[], options: { gatedToken?: string } = {}): string {
    const commit = createHash('sha1').update(repo).digest('hex');
    const files = new Map<string, RepoFile>();
    for (const name of names) {
      const data = readFileSync(path.join(dir, name));
      const sha256 = createHash('sha256').update(data).digest('hex');
      files.set(name, { data, lfs: LFS(name), sha256 });
      this.blobs.set(sha256, { repo, file: name });
    }
    this.repos.set(repo, { commit, files, gatedToken: options.gatedToken });
    return commit;
  }

  /** Storage requests for one file, in order. */
  storageRequests(file: string): HubRequestLog[] {
    return this.log.filter((r) => r.server === 'storage' && this.blobs.get(r.path.split('/')[2]?.split('?')[0] ?? '')?.file === file);
  }

  private record(entry: HubRequestLog): void {
    this.log.push(entry);
  }

  private serveHub(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', this.endpoint);
    const entry: HubRequestLog = { server: 'hub', method: req.method ?? 'GET', path: url.pathname, authorized: req.headers.authorization !== undefined, status: 200, bytes: 0 };
    const send = (status: number, body: string | Buffer, headers: Record<string, string> = {}) => {
      entry.status = status;
      entry.bytes = req.method === 'HEAD' ? 0 : Buffer.byteLength(body);
      this.record(entry);
      res.writeHead(status, { 'content-length': String(Buffer.byteLength(body)), ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const match = api ?? resolve;
    const renamed = match ? this.renames.get(match[1]) : undefined;
    if (renamed !== undefined) {
      entry.status = 307;
      this.record(entry);
      res.writeHead(307, { location: `${url.pathname.replace(`/${match?.[1]}/`, `/${renamed}/`)}${url.search}`, 'content-length': '0' });
      res.end();
      return;
    }
    const repo = match ? this.repos.get(match[1]) : undefined;
    if (!match || !repo) return send(404, JSON.stringify({ error: 'Repository not found' }), { 'x-error-code': 'RepoNotFound' });
    if (repo.gatedToken !== undefined && req.headers.authorization !== `Bearer ${repo.gatedToken}`) {
      return send(401, JSON.stringify({ error: `Access to model ${match[1]} is restricted. You must have access to it and be authenticated to access it. Please log in.` }), {
        'x-error-code': 'GatedRepo',
        'x-error-message': 'Access to this model is restricted',
      });
    }
    const revision = decodeURIComponent(match[2]);
    if (revision !== 'main' && revision !== repo.commit) return send(404, JSON.stringify({ error: `Invalid rev id: ${revision}` }), { 'x-error-code': 'RevisionNotFound' });
    if (api) {
      const siblings = [...repo.files].map(([rfilename, f]) => ({
        rfilename,
        size: f.data.byteLength,
        blobId: createHash('sha1').update(`blob ${f.data.byteLength}\0`).update(f.data).digest('hex'),
        ...(f.lfs ? { lfs: { sha256: f.sha256, size: f.data.byteLength, pointerSize: 134 } } : {}),
      }));
      return send(200, JSON.stringify({ _id: 'x', id: match[1], modelId: match[1], sha: repo.commit, siblings }), { 'content-type': 'application/json' });
    }
    const name = decodeURIComponent(match[3]);
    const file = repo.files.get(name);
    if (!file) return send(404, JSON.stringify({ error: 'Entry not found' }), { 'x-error-code': 'EntryNotFound', 'x-repo-commit': repo.commit });
    if (!file.lfs) return send(200, file.data, { 'x-repo-commit': repo.commit, etag: `"${createHash('sha1').update(file.data).digest('hex')}"` });
    entry.status = 302;
    this.record(entry);
    res.writeHead(302, {
      location: `http://127.0.0.1:${this.storagePort}/blobs/${file.sha256}?X-Amz-Signature=test`,
      'x-repo-commit': repo.commit,
      'x-linked-etag': `"${file.sha256}"`,
      'x-linked-size': String(file.data.byteLength),
      'content-length': '0',
    });
    res.end();
  }

  private async serveStorage(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${this.storagePort}`);
    const range = req.headers.range;
    const entry: HubRequestLog = {
      server: 'storage',
      method: req.method ?? 'GET',
      path: `${url.pathname}${url.search}`,
      range,
      authorized: req.headers.authorization !== undefined,
      status: 200,
      bytes: 0,
    };
    this.record(entry);
    const blob = this.blobs.get(url.pathname.split('/')[2] ?? '');
    const file = blob ? this.repos.get(blob.repo)?.files.get(blob.file) : undefined;
    if (!blob || !file) {
      entry.status = 404;
      res.writeHead(404).end();
      return;
    }
    let data = file.data;
    if (this.faults.corrupt?.has(blob.file)) {
      data = Buffer.from(data);
      data[data.length >> 1] ^= 0xff;
    }
    let start = 0;
    const ranged = range !== undefined ? /^bytes=(\d+)-$/.exec(range) : null;
    if (ranged) {
      start = Number(ranged[1]);
      if (start >= data.length) {
        entry.status = 416;
        res.writeHead(416, { 'content-range': `bytes */${data.length}`, 'content-length': '0' }).end();
        return;
      }
      entry.status = 206;
      res.writeHead(206, { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}`, 'content-length': String(data.length - start), 'accept-ranges': 'bytes' });
    } else {
      res.writeHead(200, { 'content-length': String(data.length), 'accept-ranges': 'bytes' });
    }
    const cut = this.faults.cutAfter?.get(blob.file);
    if (cut !== undefined) this.faults.cutAfter?.delete(blob.file);
    const body = data.subarray(start);
    const rate = this.faults.bytesPerSecond;
    const step = rate !== undefined ? Math.max(1024, Math.floor(rate / 20)) : 64 * 1024;
    for (let at = 0; at < body.length; at += step) {
      if (res.destroyed) return;
      let piece = body.subarray(at, Math.min(body.length, at + step));
      if (cut !== undefined && entry.bytes + piece.length > cut) {
        piece = piece.subarray(0, cut - entry.bytes);
        await new Promise<void>((r) => res.write(piece, () => r()));
        entry.bytes += piece.length;
        res.destroy();
        return;
      }
      const drained = res.write(piece);
      entry.bytes += piece.length;
      if (!drained) await new Promise((r) => res.once('drain', r));
      if (rate !== undefined) await new Promise((r) => setTimeout(r, 50));
    }
    res.end();
  }
}
