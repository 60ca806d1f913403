// The `panorama` CLI as a real child process, on the fixture model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, copyFileSync, openSync, ftruncateSync, closeSync, statSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readNpy } from '../helpers/npy.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'panorama.js');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'panorama-cli-'));

function panorama(...args: string[]) {
  assert.ok(existsSync(path.join(ROOT, 'dist', 'panorama.js')), 'run `npm run build` first (npm test does)');
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
}

function writeJson(name: string, value: unknown): string {
  const file = path.join(tmp, name);
  writeFileSync(file, JSON.stringify(value));
  return file;
}

test('generate streams a greedy continuation and reports its cost', () => {
  const result = panorama('generate', '--model', FIXTURE, '--prompt', 'def main():', '--max-tokens', '8');
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stderr, /no tokenizer\.json; using the built-in byte-level fallback/);
  assert.match(result.stderr, /11 prompt tokens, 8 generated \(length\); prefill \d+ ms \(\d+ tok\/s\), decode [\d.]+ ms\/token on cpu/);
  const again = panorama('generate', '--model', FIXTURE, '--prompt', 'def main():', '--max-tokens', '8');
  assert.equal(again.stdout, result.stdout, 'greedy decoding is deterministic');
});

test('generate with sampling options and a seed is reproducible; bad options are usage errors', () => {
  const args = ['generate', '--model', FIXTURE, '--prompt', 'x = ', '--max-tokens', '6', '--temperature', '0.8', '--top-p', '0.9', '--seed', '7'];
  const a = panorama(...args);
  const b = panorama(...args);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
  const bad = panorama('generate', '--model', FIXTURE, '--prompt', 'x', '--top-p', '1.5');
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /topP must be in \(0, 1\]/);
  const badInt = panorama('generate', '--model', FIXTURE, '--prompt', 'x', '--max-tokens', 'ten');
  assert.equal(badInt.status, 2);
  assert.match(badInt.stderr, /--max-tokens must be an integer ≥ 0, got "ten"/);
});

test('logits: prefill K then decode reproduces the reference rows; the file is float32 little-endian', () => {
  const ids = Array.from(readNpy(path.join(FIXTURE, 'short_prompt_ids.npy')).data);
  const reference = readNpy(path.join(FIXTURE, 'short_logits.npy')).data;
  const out = path.join(tmp, 'logits.bin');
  const result = panorama('logits', '--model', FIXTURE, '--ids', writeJson('ids.json', ids), '--last', '10', '--prefill', '196', '--out', out);
  assert.equal(result.status, 0, result.stderr);
  const bytes = readFileSync(out);
  assert.equal(bytes.length, 10 * 512 * 4);
  const rows = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  let worst = 0;
  for (let i = 0; i < rows.length; i++) worst = Math.max(worst, Math.abs(rows[i] - reference[(203 - 10) * 512 + i]));
  assert.ok(worst <= 1e-5, `max diff ${worst}`);
});

test('tokenize round-trips text through ids', () => {
  const text = 'fn main() {\n\tprintln!("héllo 😀");\n}\n';
  const textFile = path.join(tmp, 'text.txt');
  writeFileSync(textFile, text);
  const encoded = panorama('tokenize', '--model', FIXTURE, '--text-file', textFile);
  assert.equal(encoded.status, 0, encoded.stderr);
  const ids: number[] = JSON.parse(encoded.stdout);
  assert.equal(ids.length, Buffer.byteLength(text));
  const decoded = panorama('tokenize', '--model', FIXTURE, '--decode', '--text-file', writeJson('tok.json', ids));
  assert.equal(decoded.status, 0, decoded.stderr);
  assert.equal(decoded.stdout, text);
});

test('--device webgpu without a usable adapter falls back to the CPU with the reason, no crash', () => {
  const result = panorama('generate', '--model', FIXTURE, '--prompt', 'a', '--max-tokens', '2', '--device', 'webgpu');
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stderr, /device (cpu \(webgpu unavailable|webgpu)/);
});

test('bad input gives a clear error and a non-zero exit', () => {
  const cases: [string[], number, RegExp][] = [
    [['generate', '--model', tmp, '--prompt', 'x'], 2, /is not a model directory: it has no config\.json/],
    [['generate', '--model', FIXTURE, '--prompt', ''], 2, /prompt is empty/],
    [['generate', '--model', FIXTURE], 2, /needs --prompt/],
    [['generate', '--model', FIXTURE, '--prompt', 'x', '--bogus'], 2, /Unknown option '--bogus'/],
    [
      ['logits', '--model', FIXTURE, '--ids', writeJson('oov.json', [1, 2, 9999]), '--out', path.join(tmp, 'x.bin')],
      1,
      /token id 9999 at index 2 is outside the vocabulary \[0, 512\)/,
    ],
    [['logits', '--model', FIXTURE, '--ids', writeJson('empty.json', []), '--out', path.join(tmp, 'x.bin')], 2, /holds no token ids/],
    [['logits', '--model', FIXTURE, '--ids', writeJson('notids.json', { a: 1 }), '--out', path.join(tmp, 'x.bin')], 2, /must hold a JSON array of integer token ids/],
    [['frobnicate'], 2, /unknown command "frobnicate"/],
    [['generate', '--model', FIXTURE, '--prompt', 'x', '--device', 'tpu'], 2, /--device must be cpu, webgpu, cuda or auto/],
  ];
  for (const [args, status, message] of cases) {
    const result = panorama(...args);
    assert.equal(result.status, status, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message);
    assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
  }
  assert.equal(existsSync(path.join(tmp, 'x.bin')), false, 'no partial output file');
});

test('truncated or mismatched weights are reported by name, not crashed on', () => {
  const broken = mkdtempSync(path.join(os.tmpdir(), 'panorama-broken-'));
  copyFileSync(path.join(FIXTURE, 'config.json'), path.join(broken, 'config.json'));
  copyFileSync(path.join(FIXTURE, 'model.safetensors'), path.join(broken, 'model.safetensors'));
  const fd = openSync(path.join(broken, 'model.safetensors'), 'r+');
  ftruncateSync(fd, statSync(path.join(FIXTURE, 'model.safetensors')).size - 1000);
  closeSync(fd);
  const truncated = panorama('generate', '--model', broken, '--prompt', 'x');
  assert.equal(truncated.status, 1);
  assert.match(truncated.stderr, /truncated/);

  const config = JSON.parse(readFileSync(path.join(FIXTURE, 'config.json'), 'utf8'));
  writeFileSync(path.join(broken, 'config.json'), JSON.stringify({ ...config, intermediate_size: 640 }));
  copyFileSync(path.join(FIXTURE, 'model.safetensors'), path.join(broken, 'model.safetensors'));
  const mismatched = panorama('generate', '--model', broken, '--prompt', 'x');
  assert.equal(mismatched.status, 1);
  assert.match(mismatched.stderr, /mlp\.(gate|up|down)_proj\.weight/);

  writeFileSync(path.join(broken, 'config.json'), JSON.stringify({ ...config, mixer_types: ['minicpm4', 'mamba', ...config.mixer_types.slice(2)] }));
  const unknownMixer = panorama('generate', '--model', broken, '--prompt', 'x');
  assert.equal(unknownMixer.status, 1);
  assert.match(unknownMixer.stderr, /mixer_types\[1\]/);
});

test('Ctrl-C stops generation within a token and exits 130', async () => {
  const child = spawn(process.execPath, [BIN, 'generate', '--model', FIXTURE, '--prompt', 'def f():', '--max-tokens', '100000']);
  let stdout = '';
  const firstOutput = new Promise<void>((resolve) =>
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      resolve();
    }),
  );
  await firstOutput;
  const interruptedAt = performance.now();
  child.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  assert.equal(code, 130);
  assert.ok(performance.now() - interruptedAt < 5000, 'stopped promptly');
  assert.ok(stdout.length > 0);
});
