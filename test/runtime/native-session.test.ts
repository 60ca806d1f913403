// The binding addon (native/panorama_ort.cc) on the CPU provider, where its "device"
// memory is host memory: the same code that keeps CUDA outputs on the GPU, run for
// real against onnxruntime-node's own libonnxruntime. npm run build compiles it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../../engine/runtime/graph-builder.js';
import { NativeSession, nativeAddon, nativeProblem } from '../../engine/runtime/native-session.js';

const root = path.resolve(__dirname, '..', '..');

function addSession(outputs: Record<string, ort.Tensor.DataLocation>): NativeSession {
  const g = new GraphBuilder('add');
  const x = g.input('x', 'float', ['n']);
  const y = g.input('y', 'float', ['n']);
  g.output(g.add(x, y), 'sum', 'float', ['n']);
  g.output(g.mul(x, y), 'product', 'float', ['n']);
  return NativeSession.create(g.toModel(), { cuda: false, threads: 1, logLevel: 4, config: {}, outputs });
}

const floats = (...values: number[]) => new ort.Tensor('float32', Float32Array.from(values), [values.length]);

test('the addon is built and opens the libonnxruntime onnxruntime-node loaded', () => {
  assert.ok(nativeAddon(), `not loaded: ${nativeProblem()}`);
  assert.equal(nativeProblem(), undefined);
});

test('an output left in provider memory feeds the next run as it is, and downloads to the same values', async () => {
  const session = addSession({ sum: 'gpu-buffer' });
  assert.deepEqual(session.inputNames, ['x', 'y']);
  const first = session.run({ x: floats(1, 2, 3), y: floats(10, 20, 30) });
  assert.equal(first.sum.location, 'gpu-buffer');
  assert.deepEqual(first.sum.dims, [3]);
  assert.equal(first.product.location, 'cpu');
  assert.deepEqual(Array.from(first.product.data as Float32Array), [10, 40, 90]);
  const second = session.run({ x: first.sum, y: floats(1, 1, 1) });
  assert.deepEqual(Array.from((await second.sum.getData()) as Float32Array), [12, 23, 34]);
  assert.deepEqual(Array.from(second.product.data as Float32Array), [11, 22, 33]);
  first.sum.dispose();
  session.release();
});

test('ScatterND written into its own input updates that tensor in place', async () => {
  const g = new GraphBuilder('scatter');
  const data = g.input('data', 'float', [4, 2]);
  const indices = g.input('indices', 'int64', ['n', 1]);
  const updates = g.input('updates', 'float', ['n', 2]);
  g.output(g.op('ScatterND', [data, indices, updates]), 'y', 'float', [4, 2]);
  const session = NativeSession.create(g.toModel(), { cuda: false, threads: 1, logLevel: 4, config: {}, outputs: { y: 'gpu-buffer' } });
  const upload = addSession({ sum: 'gpu-buffer' });
  const pool = upload.run({ x: new ort.Tensor('float32', new Float32Array(8).fill(1), [8]), y: new ort.Tensor('float32', new Float32Array(8), [8]) }).sum;
  const reshaped = NativeSession.create(
    (() => {
      const r = new GraphBuilder('shape');
      r.output(r.reshape(r.input('x', 'float', [8]), [4, 2]), 'y', 'float', [4, 2]);
      return r.toModel();
    })(),
    { cuda: false, threads: 1, logLevel: 4, config: {}, outputs: { y: 'gpu-buffer' } },
  ).run({ x: pool }).y;
  const out = session.run(
    { data: reshaped, indices: new ort.Tensor('int64', BigInt64Array.of(2n, 0n), [2, 1]), updates: new ort.Tensor('float32', Float32Array.of(5, 6, 7, 8), [2, 2]) },
    { y: reshaped },
  );
  assert.equal(out.y, reshaped, 'the result is the tensor it was written into');
  assert.deepEqual(Array.from((await reshaped.getData()) as Float32Array), [7, 8, 1, 1, 5, 6, 1, 1]);
  session.release();
  upload.release();
});

test('bad feeds are refused with the input named, and the session keeps running', () => {
  const session = addSession({ sum: 'gpu-buffer' });
  assert.throws(() => session.run({ x: floats(1) }), /missing input y/);
  const held = session.run({ x: floats(1), y: floats(2) }).sum;
  held.dispose();
  assert.throws(() => session.run({ x: held, y: floats(2) }), /x: the tensor was disposed/);
  assert.throws(() => session.run({ x: floats(1, 2), y: floats(1, 2, 3) }), /broadcast|dimension/i);
  assert.throws(() => session.run({ x: new ort.Tensor('string', ['a'], [1]), y: floats(1) }), /unsupported cpu tensor of type string/);
  assert.deepEqual(Array.from(session.run({ x: floats(2), y: floats(3) }).product.data as Float32Array), [6]);
  session.release();
  assert.throws(() => session.run({ x: floats(2), y: floats(3) }), /the session was released/);
});

test('a model that is not ONNX is a clear error', () => {
  assert.throws(() => NativeSession.create(new Uint8Array([1, 2, 3, 4]), { cuda: false, threads: 1, logLevel: 4, config: {} }), /protobuf parsing failed/);
});

test('generate() through the addon on the CPU provider (the CUDA path, host memory as its device) writes the host path’s tokens', () => {
  // Past the default model's dense_len, so sparse selection, the block pool and in-place pool writes all run.
  const prompt = ['engine/model/sequence.ts', 'engine/model/sampling.ts', 'engine/model/text-stream.ts', 'engine/runtime/device-tensors.ts']
    .map((file) => readFileSync(path.join(root, file), 'utf8'))
    .join('\n');
  const run = (env: Record<string, string>) => {
    const result = spawnSync(process.execPath, [path.join(root, 'dist', 'panorama.js'), 'generate', '--device', 'cpu', '--max-tokens', '24', '--prompt', prompt], {
      env: { ...process.env, ...env },
      encoding: 'utf8',
      timeout: 240_000,
    });
    assert.equal(result.status, 0, result.stderr);
    return result;
  };
  const host = run({});
  const native = run({ PANORAMA_NATIVE_CPU: '1', PANORAMA_PROFILE_RUNS: '1' });
  assert.match(native.stderr, /session lightning_step: /, 'decode steps ran the resident decoder');
  assert.match(native.stderr, /write_rows: /, 'missed blocks were copied into the block pool directly');
  // The CUDA-graph path's fixed buffers (captured-lightning.ts), without the capture the CPU provider lacks.
  const fixed = run({ PANORAMA_NATIVE_CPU: '1', PANORAMA_CUDA_GRAPH: '1', PANORAMA_PROFILE_RUNS: '1' });
  assert.match(fixed.stderr, /session lightning_captured: /);
  assert.equal(fixed.stdout, host.stdout);
  const promptTokens = Number(/(\d+) prompt tokens, 24 generated/.exec(host.stderr)?.[1]);
  assert.ok(promptTokens > 4096, `a prompt well past dense_len (2,048), got ${promptTokens} tokens`);
  assert.ok(host.stdout.length > 0);
  assert.equal(native.stdout, host.stdout);
});

test('indexing through the addon feeds files with the resident decoder and answers as the host path does', () => {
  const workspace = mkdtempSync(path.join(os.tmpdir(), 'panorama-native-index-'));
  try {
    cpSync(path.join(root, 'engine', 'kv'), path.join(workspace, 'kv'), { recursive: true });
    const ask = (env: Record<string, string>, store: string) => {
      const result = spawnSync(
        process.execPath,
        [
          path.join(root, 'dist', 'panorama.js'),
          'ask',
          workspace,
          'Where is `BlockPool` defined?',
          '--device',
          'cpu',
          '--store',
          path.join(workspace, store),
          '--max-tokens',
          '24',
        ],
        { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 240_000 },
      );
      assert.equal(result.status, 0, result.stderr);
      return result;
    };
    const host = ask({}, '.store-host');
    const native = ask({ PANORAMA_NATIVE_CPU: '1', PANORAMA_PROFILE_RUNS: '1' }, '.store-native');
    // The resident decoder's chunked attention ran (SalaModel.feed: test/model/device-feed.test.ts checks its state).
    assert.match(native.stderr, /session sparse_attend_rows: /);
    assert.match(host.stdout, /kv\/block-pool\.ts:\d+/);
    assert.equal(native.stdout, host.stdout);
  } finally {
    rmSync(workspace, { recursive: true, force: true });
  }
});
