// GraphSession's error paths with a real onnxruntime session: an allocation that
// cannot be made is a DeviceMemoryError (what callers turn into advice), and the
// session keeps working after it; any other failure stays a plain Error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../../engine/runtime/graph-builder.js';
import { DeviceMemoryError, GraphSession } from '../../engine/runtime/session.js';

async function zerosSession(): Promise<GraphSession> {
  const g = new GraphBuilder('zeros');
  const shape = g.input('shape', 'int64', [1]);
  g.output(g.op('Expand', [g.float(0), shape]), 'y', 'float', ['n']);
  return GraphSession.create('zeros', g.toModel(), { device: 'cpu', threads: 1 });
}

const shape = (n: bigint) => ({ shape: new ort.Tensor('int64', BigInt64Array.of(n), [1]) });

test('a run that cannot allocate its output is a DeviceMemoryError, and the session still runs', async () => {
  const session = await zerosSession();
  // 2^42 floats = 16 TiB: onnxruntime's CPU arena refuses it.
  await assert.rejects(session.run(shape(2n ** 42n)), (err: unknown) => {
    assert.ok(err instanceof DeviceMemoryError, String(err));
    assert.match(err.message, /^graph zeros could not allocate host memory: .*Failed to allocate memory/);
    return true;
  });
  const out = await session.run(shape(5n));
  assert.deepEqual(Array.from(out.y.data as Float32Array), [0, 0, 0, 0, 0]);
  await session.release();
});

test('a run that fails for another reason is not called a memory error', async () => {
  const session = await zerosSession();
  await assert.rejects(session.run(shape(-3n)), (err: unknown) => {
    assert.ok(err instanceof Error && !(err instanceof DeviceMemoryError), String(err));
    assert.match(err.message, /^graph zeros failed: /);
    return true;
  });
  await session.release();
});
