// Running out of memory on a GPU, on purpose: the engine must report it with what to
// change and keep working — never crash, never compute on a buffer that does not exist.
// GPU only (the CPU provider's allocation failures are in test/model/resident-decoder.test.ts):
//
//   npm run bench:device-memory -- --device webgpu [--out docs/benchmarks/device-memory-webgpu.json]
//
// 1. Zeros made on the device: time and host memory for 1 and 16 GiB.
// 2. Ballast: 2 GiB device tensors until an allocation fails (DeviceMemoryError).
// 3. With the device nearly full, loading the 9B-shaped random model fails with a
//    DeviceMemoryError that names int4 and the CPU; with the ballast freed, it loads.
// 4. A KV pool budget past the largest device tensor is refused up front; on a device
//    within 2 GiB of full a 48 GiB budget is refused when its pools fail to allocate (ResidentMemoryError);
//    then the model still decodes, token for token as a decoder made before the failures.
// 5. Observed (not checked): whether memory freed after filling the device to within
//    32 MiB comes back to a new allocation.
import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { SalaModel } from '../engine/model/sala-model.js';
import { argmax } from '../engine/model/sampling.js';
import { ResidentMemoryError } from '../engine/model/resident-decoder.js';
import { DeviceTensors, release } from '../engine/runtime/device-tensors.js';
import { DeviceMemoryError, GraphSession } from '../engine/runtime/session.js';
import { GraphBuilder } from '../engine/runtime/graph-builder.js';
import { isDeviceRequest, type DeviceKind } from '../engine/runtime/device.js';
import { SALA_9B_SHAPE, sharedLayerRandomModel } from './random-model.js';

interface Check {
  name: string;
  passed: boolean;
  detail: string;
}

const GIB = 2 ** 30;

/** The process's resident host memory, GiB. */
function hostRssGiB(): number {
  const line = readFileSync('/proc/self/status', 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('VmRSS:'));
  return Number(/(\d+) kB/.exec(line ?? '')?.[1] ?? 0) / 2 ** 20;
}

/** A [heads, slots, 64, 128] fp32 tensor of `bytes` (the KV pools' layout). */
function poolDims(bytes: number): number[] {
  return [2, bytes / (2 * 64 * 128 * 4), 64, 128];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { device: { type: 'string', default: 'webgpu' }, out: { type: 'string' } } });
  if (!isDeviceRequest(values.device!) || values.device === 'cpu' || values.device === 'auto') throw new Error(`--device must be webgpu or cuda, got ${values.device}`);
  const device = values.device as DeviceKind;
  const checks: Check[] = [];
  const observations: string[] = [];
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const check = (name: string, passed: boolean, detail: string) => {
    checks.push({ name, passed, detail });
    log(`${passed ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
  };
  const tensors = new DeviceTensors(device);

  // 1. Zeros made on the device.
  for (const gib of [1, 16]) {
    const before = hostRssGiB();
    const started = performance.now();
    const zeros = await tensors.zeros(poolDims(gib * GIB));
    const read = await firstPlusNonce(device, zeros, 5);
    const ms = performance.now() - started;
    const after = hostRssGiB();
    check(`zeros ${gib} GiB on the device`, read === 5 && after - before < 0.5, `${ms.toFixed(0)} ms, read back ${read}, host RSS ${before.toFixed(2)} → ${after.toFixed(2)} GiB`);
    release(zeros);
  }

  // 2. Ballast until the device is full (to within 2 GiB).
  let ballast = await fill(device, tensors, [2 * GIB]);
  check(
    'filling the device ends in a DeviceMemoryError',
    ballast.failure instanceof DeviceMemoryError,
    `${(ballast.bytes / GIB).toFixed(2)} GiB held; ${String(ballast.failure).slice(0, 300)}`,
  );

  // 3. A model that does not fit.
  const { config, weights } = sharedLayerRandomModel(SALA_9B_SHAPE);
  try {
    const model = await SalaModel.create(config, weights, { device, precision: 'fp16' });
    await model.release();
    check('loading the 9B shape onto a full device is refused', false, 'it loaded');
  } catch (err) {
    check('loading the 9B shape onto a full device is refused', err instanceof DeviceMemoryError && /--precision int4/.test(err.message), String(err).slice(0, 400));
  }
  ballast.tensors.forEach(release);
  const model = await loadAfterRelease(device, tensors, () => SalaModel.create(config, weights, { device, precision: 'fp16' }), check);

  // 4. A KV pool larger than the device, then decoding as before.
  const prompt = Array.from({ length: 200 }, (_, i) => 1 + ((i * 7919) % 70000));
  const before = await stepIds(model, prompt);
  try {
    const decoder = await model.residentDecoder(model.newSequence(), { placement: 'offload', poolBytes: 400 * GIB, maxTokens: 1024 });
    await decoder.close();
    check('a 400 GiB KV pool budget is refused before anything is allocated', false, 'it was allocated');
  } catch (err) {
    check(
      'a 400 GiB KV pool budget is refused before anything is allocated',
      err instanceof ResidentMemoryError && /--gpu-kv-mb, at most \d+ here/.test(err.message),
      String(err).slice(0, 400),
    );
  }
  // Within 2 GiB of full, a pool budget under the per-tensor cap but past what is left.
  ballast = await fill(device, tensors, [2 * GIB]);
  try {
    const sequence = model.newSequence();
    await model.forward(sequence, prompt);
    const decoder = await model.residentDecoder(sequence, { placement: 'offload', poolBytes: 48 * GIB, maxTokens: prompt.length + 8 });
    await decoder.close();
    check('on a full device, a 48 GiB KV pool budget is refused', false, `it was allocated (${(ballast.bytes / GIB).toFixed(2)} GiB of ballast)`);
  } catch (err) {
    check(
      'on a full device, a 48 GiB KV pool budget is refused',
      err instanceof ResidentMemoryError && /could not allocate webgpu memory/.test(err.message),
      `${(ballast.bytes / GIB).toFixed(2)} GiB of ballast; ${String(err).slice(0, 400)}`,
    );
  }
  ballast.tensors.forEach(release);
  const after = await stepIds(model, prompt);
  check('decoding after the refusal gives the same tokens', before.join() === after.join(), `${before.join(' ')} / ${after.join(' ')}`);
  await model.release();

  // 5. An observation, not a check: filled to within 32 MiB with smaller tensors too, does
  // freed memory come back to a new 1 GiB allocation?
  ballast = await fill(device, tensors, [2 * GIB, 256 * 2 ** 20, 32 * 2 ** 20]);
  ballast.tensors.forEach(release);
  const tries: string[] = [];
  for (let attempt = 1; attempt <= 4; attempt++) {
    try {
      const t = await tensors.zeros(poolDims(GIB));
      tries.push(`try ${attempt}: ${(await firstPlusNonce(device, t, 3)) === 3 ? 'allocated' : 'wrong value'}`);
      release(t);
      break;
    } catch (err) {
      tries.push(`try ${attempt}: ${String(err).slice(0, 120)}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  observations.push(`filled to within 32 MiB (${(ballast.bytes / GIB).toFixed(2)} GiB in 2 GiB, 256 MiB and 32 MiB tensors), all freed, then 1 GiB: ${tries.join('; ')}`);
  log(`observed: ${observations.at(-1)}`);
  const summary = { device, date: new Date().toISOString(), checks, observations };
  if (values.out) writeFileSync(values.out, JSON.stringify(summary, null, 2));
  process.exitCode = checks.every((c) => c.passed) ? 0 : 1;
}

/** Loads once the released ballast is back: up to four tries, a second apart, each after a device round trip. */
async function loadAfterRelease(
  device: DeviceKind,
  tensors: DeviceTensors,
  load: () => Promise<SalaModel>,
  check: (name: string, passed: boolean, detail: string) => void,
): Promise<SalaModel> {
  const errors: string[] = [];
  for (let attempt = 1; attempt <= 4; attempt++) {
    try {
      const model = await load();
      check(
        'with the ballast freed it loads',
        true,
        `${model.device.kind}, ${model.precision.kind}, on try ${attempt}${errors.length > 0 ? ` (before: ${errors.join(' | ')})` : ''}`,
      );
      return model;
    } catch (err) {
      errors.push(String(err).slice(0, 160));
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const probe = await tensors.zeros([1, 1, 1, 1]).catch(() => undefined);
      if (probe) await firstPlusNonce(device, probe, 1).catch(() => 0);
      release(probe);
    }
  }
  check('with the ballast freed it loads', false, errors.join(' | '));
  throw new Error('the device did not give the freed memory back');
}

/** Device tensors of each size in turn (largest first), until that size fails. */
async function fill(device: DeviceKind, tensors: DeviceTensors, sizes: number[]): Promise<{ tensors: ort.Tensor[]; bytes: number; failure: unknown }> {
  const held: ort.Tensor[] = [];
  let bytes = 0;
  let failure: unknown;
  for (const size of sizes) {
    for (let i = 0; i < 4096; i++) {
      try {
        const t = await tensors.zeros(poolDims(size));
        held.push(t);
        // Read back through a run: a buffer that could not be created cannot pass unnoticed.
        const nonce = 1 + (held.length % 1000);
        const got = await firstPlusNonce(device, t, nonce);
        if (got !== nonce) throw new Error(`ballast read back ${got}, not ${nonce}`);
        bytes += size;
      } catch (err) {
        failure = err;
        break;
      }
    }
  }
  return { tensors: held, bytes, failure };
}

let reader: GraphSession | undefined;

/** Sum of slot 0 of a [heads, slots, 64, 128] tensor plus a nonce, computed on the device and read back. */
async function firstPlusNonce(device: DeviceKind, tensor: ort.Tensor, nonce: number): Promise<number> {
  if (!reader) {
    const g = new GraphBuilder('first_plus_nonce');
    const x = g.input('x', 'float', ['h', 's', 'b', 'd']);
    const first = g.op('ReduceSum', [g.op('Gather', [x, g.int64s([0])], { axis: 1 })], { keepdims: 0 });
    g.output(g.op('Add', [g.op('Reshape', [first, g.int64s([1])]), g.input('nonce', 'float', [1])]), 'y', 'float', [1]);
    reader = await GraphSession.create('first_plus_nonce', g.toModel(), { device, threads: 1, outputs: { y: 'cpu' } });
  }
  const out = await reader.run({ x: tensor, nonce: new ort.Tensor('float32', Float32Array.of(nonce), [1]) });
  return (out.y.data as Float32Array)[0];
}

/** Greedy ids of four resident decode steps after a host prefill of the prompt. */
async function stepIds(model: SalaModel, prompt: number[]): Promise<number[]> {
  const sequence = model.newSequence();
  await model.forward(sequence, prompt);
  const decoder = await model.residentDecoder(sequence, { placement: 'offload', maxTokens: prompt.length + 8 });
  const ids: number[] = [];
  let logits = await decoder.step(7);
  for (let i = 0; i < 4; i++) {
    ids.push(argmax(logits));
    logits = await decoder.step(ids[i]);
  }
  await decoder.close();
  return ids;
}

main().catch((err) => {
  process.stderr.write(`bench:device-memory failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
