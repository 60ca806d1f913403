// `panorama models` as a real child process against a Hub on 127.0.0.1: pull, a kill and
// a resume, a refusal, a gated repo; then the pulled model runs by name.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FakeHub } from '../hub/fake-hub.js';
import { writeSalaCheckpoint } from '../hub/sala-checkpoint.js';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'panorama.js');
const REPO = 'openbmb/MiniCPM-SALA';
const temps: string[] = [];
let hub: FakeHub;
let source: string;

function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

function env(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { HF_TOKEN: _t, HUGGING_FACE_HUB_TOKEN: _h, ...rest } = process.env;
  return { ...rest, PANORAMA_HOME: home, HF_ENDPOINT: hub.endpoint, ...extra };
}

/** Runs the CLI without blocking this process (the Hub answers from it). */
function panorama(home: string, args: string[], extra: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  assert.ok(existsSync(path.join(ROOT, 'dist', 'panorama.js')), 'run `npm run build` first (npm test does)');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: env(home, extra) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

before(async () => {
  source = tempDir('panorama-cli-hub-src-');
  const names = await writeSalaCheckpoint(source);
  hub = await new FakeHub().start();
  hub.addRepo(REPO, source, names);
  hub.addRepo('gated/SALA', source, names, { gatedToken: 'hf_secret' });
});
after(async () => {
  await hub.close();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

test('pull, killed with SIGKILL mid-file, resumes with Range and does not fetch the same bytes again', async () => {
  const home = tempDir('panorama-home-');
  const shard = 'model-00001-of-00002.safetensors';
  const size = statSync(path.join(source, shard)).size;
  hub.log.length = 0;
  hub.faults.bytesPerSecond = 400_000;
  const child = spawn(process.execPath, [BIN, 'models', 'pull', REPO, '--device', 'cpu', '--memory-gb', '64'], { env: env(home) });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((r) => child.on('close', r));
  const started = Date.now();
  while (!hub.storageRequests(shard).some((r) => r.bytes > size / 4)) {
    assert.ok(Date.now() - started < 60_000, `the download never got going: ${stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  await exited;
  hub.faults.bytesPerSecond = undefined;

  const dir = readdirSync(path.join(home, 'models', 'openbmb--MiniCPM-SALA')).map((c) => path.join(home, 'models', 'openbmb--MiniCPM-SALA', c))[0];
  const kept = statSync(path.join(dir, `${shard}.part`)).size;
  assert.ok(kept > 0 && kept < size, `part holds ${kept} of ${size}`);
  const listed = await panorama(home, ['models', 'list']);
  assert.match(listed.stdout, /openbmb\/MiniCPM-SALA\s+partial .*not usable: panorama models pull openbmb\/MiniCPM-SALA resumes it/);

  hub.log.length = 0;
  const resumed = await panorama(home, ['models', 'pull', REPO, '--device', 'cpu', '--memory-gb', '64']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, /downloaded: openbmb\/MiniCPM-SALA \(commit [0-9a-f]{12}\) in .*\nuse it with --model openbmb\/MiniCPM-SALA/);
  const requests = hub.storageRequests(shard);
  assert.deepEqual(
    requests.map((r) => [r.range, r.status, r.bytes]),
    [[`bytes=${kept}-`, 206, size - kept]],
    'only the bytes after the part were sent',
  );
  assert.deepEqual(readFileSync(path.join(dir, shard)), readFileSync(path.join(source, shard)));
  assert.match(resumed.stderr, /2\.\dM parameters; on the CPU in fp32 at 1,048,576 tokens: [\d.]+ GB of memory to load/);
});

test('the pulled model is listed with its precision and runs by name in generate and ask', async () => {
  const home = tempDir('panorama-home-');
  const pulled = await panorama(home, ['models', 'pull', REPO, '--device', 'cpu', '--memory-gb', '64']);
  assert.equal(pulled.status, 0, pulled.stderr);

  const list = await panorama(home, ['models', 'list']);
  assert.equal(list.status, 0, list.stderr);
  assert.match(list.stdout, /panorama-code-13m\s+default\s+13\.\dM parameters, I8 \+ F32/);
  assert.match(list.stdout, /openbmb\/MiniCPM-SALA\s+hub\s+2\.\dM parameters, BF16, 5\.\d MiB/);
  const json = JSON.parse((await panorama(home, ['models', 'list', '--json'])).stdout);
  assert.deepEqual(
    json.models.map((m: { name: string; kind: string }) => [m.name, m.kind]),
    [
      ['panorama-code-13m', 'default'],
      [REPO, 'hub'],
    ],
  );

  const info = await panorama(home, ['models', 'info', REPO, '--memory-gb', '16', '--gpu-memory-gb', '8']);
  assert.equal(info.status, 0, info.stderr);
  assert.match(info.stdout, /4 layers: sparse \(minicpm4\) 0, 3; the other 2 Lightning/);
  assert.match(info.stdout, /model-00001-of-00002\.safetensors/);
  assert.match(info.stdout, /cpu\s+fp32 .* fits/);

  const generated = await panorama(home, ['generate', '--model', REPO, '--prompt', 'def main():', '--max-tokens', '6']);
  assert.equal(generated.status, 0, generated.stderr);
  assert.match(generated.stderr, /6 generated \(length\)/);

  // int4: the first load converts and keeps the form beside the download, the next reads it
  const converting = await panorama(home, ['generate', '--model', REPO, '--precision', 'int4', '--prompt', 'x = ', '--max-tokens', '2']);
  assert.equal(converting.status, 0, converting.stderr);
  assert.match(converting.stderr, /wrote the int4 form \([\d.]+ \w+\) to .*openbmb--MiniCPM-SALA.*\.panorama\/int4\.safetensors; later loads read it/);
  const converted = await panorama(home, ['generate', '--model', REPO, '--precision', 'int4', '--prompt', 'x = ', '--max-tokens', '2']);
  assert.match(converted.stderr, /int4 form read from /);
  assert.equal(converted.stdout, converting.stdout);
  assert.match(
    (await panorama(home, ['models', 'list'])).stdout,
    /openbmb\/MiniCPM-SALA\s+hub\s+2\.\dM parameters, BF16/,
    'the converted form is not listed as a model or counted as its weights',
  );

  const workspace = tempDir('panorama-ws-');
  writeFileSync(path.join(workspace, 'a.py'), 'def add(a, b):\n    return a + b\n');
  const asked = await panorama(home, ['ask', workspace, 'what does add do?', '--model', REPO, '--max-tokens', '4', '--store', path.join(workspace, '.store')]);
  assert.equal(asked.status, 0, asked.stderr);
  assert.ok(asked.stdout.trim().length > 0, 'an answer');

  const unknown = await panorama(home, ['generate', '--model', 'nobody/nothing', '--prompt', 'x']);
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /--model nobody\/nothing: not a model folder .* \(known: openbmb\/MiniCPM-SALA\); `panorama models pull ORG\/NAME` downloads one/);
});

test('pull refuses a model that does not fit this machine before fetching its weights; --force pulls it', async () => {
  const home = tempDir('panorama-home-');
  hub.log.length = 0;
  const refused = await panorama(home, ['models', 'pull', REPO, '--device', 'cpu', '--memory-gb', '0.5']);
  assert.equal(refused.status, 1);
  assert.match(
    refused.stderr,
    /openbmb\/MiniCPM-SALA needs [\d.]+ GB of memory in fp32 on the CPU .*this machine has 0\.5\. Nothing was downloaded but its config; --force pulls it anyway/,
  );
  assert.equal(hub.log.filter((r) => r.server === 'storage').length, 0);

  const gpu = await panorama(home, ['models', 'pull', REPO, '--device', 'gpu', '--precision', 'fp32', '--memory-gb', '64', '--gpu-memory-gb', '0.5']);
  assert.equal(gpu.status, 1);
  assert.match(gpu.stderr, /needs [\d.]+ GB of GPU memory in fp32, this GPU has 0\.5: use the CPU \(fp32/);

  const forced = await panorama(home, ['models', 'pull', REPO, '--device', 'cpu', '--memory-gb', '0.5', '--force']);
  assert.equal(forced.status, 0, forced.stderr);
  assert.match(forced.stderr, /warning: needs .* \(pulling anyway: --force\)/);
});

test('a gated repo without HF_TOKEN says what to do; with it the pull works', async () => {
  const home = tempDir('panorama-home-');
  const denied = await panorama(home, ['models', 'pull', 'gated/SALA', '--device', 'cpu', '--memory-gb', '64']);
  assert.equal(denied.status, 1);
  assert.match(denied.stderr, /gated\/SALA is gated or private \(HTTP 401 for revision main\): accept its licence at http:\/\/127\.0\.0\.1:\d+\/gated\/SALA, then set HF_TOKEN/);
  const allowed = await panorama(home, ['models', 'pull', 'gated/SALA', '--device', 'cpu', '--memory-gb', '64'], { HF_TOKEN: 'hf_secret' });
  assert.equal(allowed.status, 0, allowed.stderr);
});

test('add registers a folder under a name, rm forgets it and keeps its files; rm of a download deletes it', async () => {
  const home = tempDir('panorama-home-');
  const added = await panorama(home, ['models', 'add', source, '--name', 'my-sala']);
  assert.equal(added.status, 0, added.stderr);
  assert.match((await panorama(home, ['models', 'list'])).stdout, /my-sala\s+local\s+2\.\dM parameters, BF16/);
  const bad = mkdirSync(path.join(tempDir('panorama-bad-'), 'empty'), { recursive: true }) ?? '';
  const refused = await panorama(home, ['models', 'add', bad]);
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /config\.json/);
  const removed = await panorama(home, ['models', 'rm', 'my-sala']);
  assert.match(removed.stdout, /forgot my-sala: .* \(its files stay\)/);
  assert.ok(existsSync(path.join(source, 'config.json')));

  await panorama(home, ['models', 'pull', REPO, '--device', 'cpu', '--memory-gb', '64']);
  const gone = await panorama(home, ['models', 'rm', REPO]);
  assert.match(gone.stdout, /removed openbmb\/MiniCPM-SALA/);
  assert.ok(!existsSync(path.join(home, 'models', 'openbmb--MiniCPM-SALA')));
});
