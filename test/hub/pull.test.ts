// pullModel against a real HTTP Hub on 127.0.0.1 (two servers: the Hub and its storage host).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync, copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FakeHub } from './fake-hub.js';
import { writeSalaCheckpoint } from './sala-checkpoint.js';
import { checkDiskSpace, pullModel } from '../../engine/hub/pull.js';
import { lockDownload } from '../../engine/hub/pull-lock.js';
import { hubSettings } from '../../engine/hub/hub-endpoint.js';
import { downloadFile } from '../../engine/hub/download-file.js';
import { parseRepoRef, type HubSettings } from '../../engine/hub/hub-endpoint.js';
import { listModels, partialDownloads, MARKER, resolveModelArgument } from '../../engine/hub/model-cache.js';

const temps: string[] = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

let hub: FakeHub;
let source: string;
let names: string[];
const SHARD = 'model-00002-of-00002.safetensors';

before(async () => {
  source = tempDir('panorama-hub-src-');
  names = await writeSalaCheckpoint(source);
  hub = await new FakeHub().start();
  hub.addRepo('openbmb/MiniCPM-SALA', source, names);
  hub.addRepo('gated/SALA', source, names, { gatedToken: 'hf_secret' });
});
after(async () => {
  await hub.close();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

const settings = (token?: string): HubSettings => ({ endpoint: hub.endpoint, token });

test('pull resolves the revision to a commit, follows the storage redirect without the token, and lists the model once verified', async () => {
  const home = tempDir('panorama-home-');
  hub.log.length = 0;
  const seen: number[] = [];
  const result = await pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings('hf_any'), home, onProgress: (p) => seen.push(p.bytesDone) });
  assert.equal(result.alreadyThere, false);
  assert.match(result.model.commit ?? '', /^[0-9a-f]{40}$/);
  assert.ok(result.model.dir.endsWith(path.join('models', 'openbmb--MiniCPM-SALA', result.model.commit ?? '')));
  for (const name of names.filter((n) => n !== 'README.md')) assert.deepEqual(readFileSync(path.join(result.model.dir, name)), readFileSync(path.join(source, name)), name);
  assert.ok(!existsSync(path.join(result.model.dir, 'README.md')), 'files the engine does not read are not fetched');
  assert.ok(existsSync(path.join(result.model.dir, MARKER)));
  assert.ok(seen.length > 0 && seen.every((v, i) => i === 0 || v >= seen[i - 1]), 'progress only grows');

  const storage = hub.log.filter((r) => r.server === 'storage');
  assert.ok(storage.length >= 2, 'the shards come from the storage host');
  assert.ok(
    storage.every((r) => !r.authorized),
    'the token is not sent to another host',
  );
  assert.ok(
    hub.log.filter((r) => r.server === 'hub').every((r) => r.authorized),
    'the token is sent to the Hub',
  );
  assert.ok(hub.log.some((r) => r.path === '/api/models/openbmb/MiniCPM-SALA/revision/main'));

  assert.deepEqual(
    listModels(home).map((m) => m.name),
    ['openbmb/MiniCPM-SALA'],
  );
  assert.equal(resolveModelArgument('openbmb/MiniCPM-SALA', home), result.model.dir);
  assert.equal(resolveModelArgument(`openbmb/MiniCPM-SALA@${result.model.commit?.slice(0, 8)}`, home), result.model.dir);

  hub.log.length = 0;
  const again = await pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings(), home });
  assert.equal(again.alreadyThere, true);
  assert.equal(hub.log.filter((r) => r.server === 'storage').length, 0, 'a complete model is not fetched again');
});

test('a connection cut mid-file keeps what arrived; the next pull asks for the rest with Range and is not listed before', async () => {
  const home = tempDir('panorama-home-');
  hub.faults.cutAfter = new Map([[SHARD, 100_000]]);
  await assert.rejects(pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings(), home }), /connection (broke|closed).*run the pull again to resume/);
  assert.deepEqual(listModels(home), [], 'a partial download is never a usable model');
  assert.equal(partialDownloads(home).length, 1);
  assert.throws(() => resolveModelArgument('openbmb/MiniCPM-SALA', home), /only partly downloaded; run `panorama models pull openbmb\/MiniCPM-SALA`/);

  hub.log.length = 0;
  const result = await pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings(), home });
  const requests = hub.storageRequests(SHARD);
  assert.equal(requests.length, 1);
  // what arrived before the cut (the server wrote 100,000 bytes; some may still have been in flight)
  const kept = Number(/^bytes=(\d+)-$/.exec(requests[0].range ?? '')?.[1]);
  assert.ok(kept > 0 && kept <= 100_000, `resumed from ${requests[0].range}`);
  assert.equal(requests[0].status, 206);
  assert.equal(requests[0].bytes, readFileSync(path.join(source, SHARD)).length - kept, 'only the missing bytes were sent');
  assert.deepEqual(readFileSync(path.join(result.model.dir, SHARD)), readFileSync(path.join(source, SHARD)));
  assert.equal(listModels(home).length, 1);
});

test('a part that holds the whole file is verified without a request; one a byte short asks for that byte', async () => {
  const home = tempDir('panorama-home-');
  const first = await pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings(), home });
  rmSync(path.join(first.model.dir, MARKER));
  const shard = path.join(first.model.dir, SHARD);
  copyFileSync(shard, `${shard}.part`);
  rmSync(shard);
  hub.log.length = 0;
  // A full .part is verified locally: no request at all for it.
  await pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings(), home });
  assert.equal(hub.storageRequests(SHARD).length, 0);
  assert.ok(existsSync(shard) && !existsSync(`${shard}.part`));

  // One byte short: the Range asks for the last byte (206).
  rmSync(path.join(first.model.dir, MARKER));
  const bytes = readFileSync(shard);
  rmSync(shard);
  writeFileSync(`${shard}.part`, bytes.subarray(0, bytes.length - 1));
  hub.log.length = 0;
  await pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings(), home });
  assert.deepEqual(
    hub.storageRequests(SHARD).map((r) => [r.range, r.status, r.bytes]),
    [[`bytes=${bytes.length - 1}-`, 206, 1]],
  );
  assert.deepEqual(readFileSync(shard), bytes);
});

test('a file whose sha256 is wrong is deleted and reported; the model is not listed', async () => {
  const home = tempDir('panorama-home-');
  hub.faults.corrupt = new Set([SHARD]);
  try {
    await assert.rejects(
      pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings(), home }),
      /model-00002-of-00002\.safetensors does not match the sha256 the Hub lists .*the partial file was deleted/,
    );
  } finally {
    hub.faults.corrupt = undefined;
  }
  const dir = partialDownloads(home)[0].dir;
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.includes(SHARD)),
    [],
    'neither the part nor the file is left',
  );
  assert.deepEqual(listModels(home), []);
  await pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), { settings: settings(), home });
  assert.equal(listModels(home).length, 1, 'the next pull fetches it anew');
});

test('a gated repo without a token says to accept the licence and set HF_TOKEN; with the token it pulls', async () => {
  const home = tempDir('panorama-home-');
  await assert.rejects(
    pullModel(parseRepoRef('gated/SALA'), { settings: settings(), home }),
    (err: Error) =>
      /gated\/SALA is gated or private \(HTTP 401/.test(err.message) &&
      /accept its licence at http:\/\/127\.0\.0\.1:\d+\/gated\/SALA/.test(err.message) &&
      /set HF_TOKEN/.test(err.message),
  );
  await assert.rejects(pullModel(parseRepoRef('gated/SALA'), { settings: settings('hf_wrong'), home }), /the token in HF_TOKEN cannot read it/);
  const result = await pullModel(parseRepoRef('gated/SALA'), { settings: settings('hf_secret'), home });
  assert.ok(existsSync(path.join(result.model.dir, MARKER)));
});

test('an unknown revision or repo is a clear error', async () => {
  const home = tempDir('panorama-home-');
  await assert.rejects(pullModel(parseRepoRef('openbmb/MiniCPM-SALA@v9'), { settings: settings(), home }), /has no revision v9 .*check the branch, tag or commit/);
  await assert.rejects(pullModel(parseRepoRef('nobody/nothing'), { settings: settings(), home }), /no model nobody\/nothing on http:\/\/127\.0\.0\.1:\d+ \(HTTP 404/);
  assert.throws(() => parseRepoRef('just-a-name'), /expected ORG\/NAME or ORG\/NAME@REVISION/);
});

test('the fit check runs on the config before any weight is fetched, and can refuse', async () => {
  const home = tempDir('panorama-home-');
  hub.log.length = 0;
  await assert.rejects(
    pullModel(parseRepoRef('openbmb/MiniCPM-SALA'), {
      settings: settings(),
      home,
      checkFit: (config) => {
        assert.equal((config as { hidden_size: number }).hidden_size, 128);
        throw new Error('refused: does not fit');
      },
    }),
    /refused: does not fit/,
  );
  assert.equal(hub.log.filter((r) => r.server === 'storage').length, 0, 'no weight bytes before the fit check');
});

test('416 for a part the Hub says is shorter than the file deletes the part and says so', async () => {
  const dir = tempDir('panorama-416-');
  const bytes = readFileSync(path.join(source, SHARD));
  const dest = path.join(dir, SHARD);
  writeFileSync(`${dest}.part`, bytes);
  const { createHash } = await import('node:crypto');
  const sha = createHash('sha256').update(bytes).digest('hex');
  hub.log.length = 0;
  await assert.rejects(
    downloadFile(settings(), { repo: 'openbmb/MiniCPM-SALA', path: SHARD, url: `http://127.0.0.1:${hub.storagePort}/blobs/${sha}`, dest, size: bytes.length + 10, sha256: sha }),
    /no bytes of model-00002-of-00002\.safetensors past \d+ \(HTTP 416\).*the partial file was deleted/,
  );
  assert.equal(hub.log[0].status, 416);
  assert.ok(!existsSync(`${dest}.part`));
});

test('a renamed repo redirects on the same host: the token goes along; the storage host still gets none', async () => {
  const home = tempDir('panorama-home-');
  hub.renames.set('old/SALA', 'openbmb/MiniCPM-SALA');
  try {
    hub.log.length = 0;
    await pullModel(parseRepoRef('old/SALA'), { settings: settings('hf_any'), home });
  } finally {
    hub.renames.clear();
  }
  const hubRequests = hub.log.filter((r) => r.server === 'hub');
  assert.ok(hubRequests.some((r) => r.status === 307 && r.path.startsWith('/api/models/old/SALA/')));
  assert.ok(
    hubRequests.some((r) => r.path.startsWith('/api/models/openbmb/MiniCPM-SALA/') && r.authorized),
    'the token follows a same-host redirect',
  );
  assert.ok(hub.log.filter((r) => r.server === 'storage').every((r) => !r.authorized));
});

test('free disk space is checked before the weights: a download larger than the disk is refused with what to do', async () => {
  const dir = tempDir('panorama-disk-');
  await assert.rejects(
    checkDiskSpace(dir, 1e18),
    /not enough disk space: the download needs .* and .* has .* free; free some space, or set PANORAMA_HOME to a folder on a larger disk/,
  );
  await checkDiskSpace(dir, 1000);
});

test('one pull of a commit at a time; a lock left by a killed process is taken over', async () => {
  const dir = tempDir('panorama-lock-');
  const release = lockDownload(dir, 'org/model');
  // this process holds it: a second pull (another process, pid of a live one) is refused
  writeFileSync(path.join(dir, '.pull.lock'), String(process.ppid));
  assert.throws(() => lockDownload(dir, 'org/model'), /another pull of org\/model is running \(process \d+\)/);
  // a dead owner's lock is stale
  writeFileSync(path.join(dir, '.pull.lock'), '999999999');
  const again = lockDownload(dir, 'org/model');
  again();
  release();
  assert.ok(!existsSync(path.join(dir, '.pull.lock')));
});

test('HF_ENDPOINT and HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN) are read as huggingface_hub reads them', () => {
  assert.deepEqual(hubSettings({}), { endpoint: 'https://huggingface.co', token: undefined });
  assert.deepEqual(hubSettings({ HF_ENDPOINT: 'https://hf-mirror.example/', HF_TOKEN: ' hf_x ' }), { endpoint: 'https://hf-mirror.example', token: 'hf_x' });
  assert.equal(hubSettings({ HUGGING_FACE_HUB_TOKEN: 'hf_old' }).token, 'hf_old');
  assert.throws(() => hubSettings({ HF_ENDPOINT: 'hf.co' }), /HF_ENDPOINT must be an http\(s\) URL/);
});
