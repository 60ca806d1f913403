// Device tensors through the binding addon on the CPU provider (PANORAMA_NATIVE_CPU=1:
// the CUDA path's code with host memory as its device): host rows written into a pool
// by the addon's direct copies, against the same rows through a ScatterND run.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { DeviceTensors } from '../../engine/runtime/device-tensors.js';
import { isNativeTensor } from '../../engine/runtime/native-session.js';
import { setEnv } from '../helpers/env.js';

let restoreEnv: () => void;
before(() => (restoreEnv = setEnv({ PANORAMA_NATIVE_CPU: '1' })));
after(() => restoreEnv());

/** A [2, 3, 2, 2] pool (heads, slots, block, head dim) numbered 0..23, on the "device". */
async function pool(tensors: DeviceTensors): Promise<ort.Tensor> {
  const data = Float32Array.from({ length: 24 }, (_, i) => i);
  return tensors.upload(new ort.Tensor('float32', data, [2, 3, 2, 2]));
}

const pairs = (...values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [values.length / 2, 2]);
const rows = (n: number, first: number) =>
  new ort.Tensor(
    'float32',
    Float32Array.from({ length: n * 4 }, (_, i) => first + i),
    [n, 2, 2],
  );
// Through a download run: getData() would move the tensor itself to host memory.
const read = async (tensors: DeviceTensors, tensor: ort.Tensor) => Array.from((await tensors.download(tensor)).data as Float32Array);

test('host rows scattered into an addon tensor are copied in place, as ScatterND writes them', async () => {
  const tensors = new DeviceTensors('cpu');
  assert.ok(tensors.onDevice, 'the addon keeps tensors on its "device"');
  const direct = await pool(tensors);
  assert.ok(isNativeTensor(direct));
  // (head 1, slot 2), (head 0, slot 0), (head 0, slot 1): the last two are consecutive rows, one copy.
  const out = await tensors.scatter(direct, pairs(1, 2, 0, 0, 0, 1), rows(3, 100));
  assert.equal(out, direct, 'written into the tensor itself');
  assert.equal(tensors.uploadedBytes, 24 * 4 + 3 * 4 * 4, 'the rows count as uploaded');

  const restore = setEnv({ PANORAMA_BLOCK_UPLOAD: 'scatter' });
  try {
    const scattered = await tensors.scatter(await pool(tensors), pairs(1, 2, 0, 0, 0, 1), rows(3, 100));
    assert.deepEqual(await read(tensors, direct), await read(tensors, scattered));
  } finally {
    restore();
  }
  assert.deepEqual(await read(tensors, direct), [104, 105, 106, 107, 108, 109, 110, 111, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 100, 101, 102, 103]);
  await tensors.release();
});

test('a row outside the pool, or rows of the wrong size, are refused and nothing is written', async () => {
  const tensors = new DeviceTensors('cpu');
  const target = await pool(tensors);
  const before = await read(tensors, target);
  await assert.rejects(tensors.scatter(target, pairs(0, 1, 2, 0), rows(2, 50)), /index 2 is outside axis 0 of \[2, 3, 2, 2\]/);
  await assert.rejects(tensors.scatter(target, pairs(0, 1, 0, 3), rows(2, 50)), /index 3 is outside axis 1/);
  await assert.rejects(tensors.scatter(target, pairs(0, 1, 1, 1), rows(1, 50)), /16 bytes of rows for 2 destinations of 16 bytes/);
  assert.deepEqual(await read(tensors, target), before);
  // Negative indices count from the end, as in ScatterND.
  await tensors.scatter(target, pairs(-1, -1), rows(1, 7));
  assert.deepEqual((await read(tensors, target)).slice(20), [7, 8, 9, 10]);
  await tensors.release();
});

test('copyRows gathers rows of a host store into pool rows, checking both sides first', async () => {
  const tensors = new DeviceTensors('cpu');
  const target = await pool(tensors);
  assert.ok(tensors.copiesRowsInto(target));
  // A store of 4 rows of 4 floats: rows 3 and 0 go to pool rows 5 and 1.
  const store = Float32Array.from({ length: 16 }, (_, i) => 100 + i);
  tensors.copyRows(target, store, 4, Int32Array.of(3, 0), Int32Array.of(5, 1));
  const after = await read(tensors, target);
  assert.deepEqual(after.slice(20), [112, 113, 114, 115]);
  assert.deepEqual(after.slice(4, 8), [100, 101, 102, 103]);
  assert.throws(() => tensors.copyRows(target, store, 4, Int32Array.of(4), Int32Array.of(0)), /source row 4 is outside the source's 4/);
  assert.throws(() => tensors.copyRows(target, store, 4, Int32Array.of(0, 1), Int32Array.of(0)), /from and at differ in length/);
  assert.deepEqual(await read(tensors, target), after, 'nothing written by the refused calls');
  // No CUDA runtime in this process: nothing to page-lock, and copies need none.
  assert.equal(tensors.pinHost(store), false);
  await tensors.release();
});

test('host tensors of every kind copied into addon tensors in place, and read back, with no session run', async () => {
  const tensors = new DeviceTensors('cpu');
  try {
    const cases = [
      new ort.Tensor('int64', BigInt64Array.from([3n, -1n, 7n, 1n << 40n]), [2, 2]),
      new ort.Tensor('bool', Uint8Array.from([1, 0, 0, 1, 1, 0]), [2, 3]),
      new ort.Tensor('float32', Float32Array.from([0.5, -2, 1e-3]), [3]),
    ];
    for (const host of cases) {
      const zeros = new ort.Tensor(host.type, new (host.data.constructor as new (n: number) => typeof host.data)(host.size), host.dims);
      const target = await tensors.upload(zeros);
      const uploaded = tensors.uploadedBytes;
      await tensors.copyInto(host, target);
      assert.equal(tensors.uploadedBytes - uploaded, (host.data as { byteLength: number }).byteLength);
      const back = await tensors.download(target);
      assert.equal(back.location, 'cpu');
      assert.deepEqual(back.dims, host.dims);
      assert.deepEqual(Array.from(back.data as ArrayLike<unknown>), Array.from(host.data as ArrayLike<unknown>), host.type);
    }
    // A device tensor into another still goes through an Identity run, in place.
    const source = await tensors.upload(cases[2]);
    const target = await tensors.upload(new ort.Tensor('float32', new Float32Array(3), [3]));
    await tensors.copyInto(source, target);
    assert.deepEqual(Array.from((await tensors.download(target)).data as Float32Array), Array.from(cases[2].data as Float32Array));
    // The Identity graphs made: uploads of the zeros and the device-to-device copy only, no download.
    const made = [...(tensors as unknown as { sessions: Map<string, unknown> }).sessions.keys()].sort();
    assert.deepEqual(made, ['upload_bool_2', 'upload_float_1', 'upload_int64_2']);
  } finally {
    await tensors.release();
  }
});
