// Weights baked into per-layer sessions (the CUDA executor's form) give the logits of
// the shared graphs fed the weights on every run, on both attention paths and in int4,
// with consecutive Lightning layers chained into one session (the fixture has two pairs).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { SalaModel } from '../../engine/model/sala-model.js';
import { bakeInputs } from '../../engine/runtime/bake.js';
import { composeChain } from '../../engine/runtime/compose.js';
import { GraphBuilder } from '../../engine/runtime/graph-builder.js';
import { GraphSession, f32, floatData } from '../../engine/runtime/session.js';
import { SALA_TINY_A } from '../helpers/fixtures.js';
import { maxAbsDiff, tokens as randomTokens } from '../helpers/logits.js';

const VOCAB = 512;

const tokens = (count: number, seed: number): number[] => randomTokens(count, seed, VOCAB);

test('bakeInputs turns a named input into an initializer holding its data', async () => {
  const g = new GraphBuilder('bake');
  const x = g.input('x', 'float', [1, 2]);
  const w = g.input('w', 'float', [2, 2]);
  g.output(g.matmul(x, w), 'y', 'float', [1, 2]);
  const weight = f32(Float32Array.of(1, 2, 3, 4), [2, 2]);
  const fed = await GraphSession.create('fed', g.toModel(), { device: 'cpu' });
  const baked = await GraphSession.create('baked', bakeInputs(g.toModel(), { w: weight }), { device: 'cpu' });
  assert.deepEqual([...fed.inputNames].sort(), ['w', 'x']);
  assert.deepEqual([...baked.inputNames], ['x']);
  const input = f32(Float32Array.of(1, 10), [1, 2]);
  assert.deepEqual([...floatData((await baked.run({ x: input })).y)], [31, 42]);
  assert.deepEqual([...floatData((await fed.run({ x: input, w: weight })).y)], [31, 42]);
  assert.throws(() => bakeInputs(g.toModel(), { w: new ort.Tensor('string', ['a', 'b', 'c', 'd'], [2, 2]) }), /unsupported type string/);
  await Promise.all([fed.release(), baked.release()]);
});

test('composeChain feeds each part from the previous one, shares the named inputs and prefixes the rest', async () => {
  // One "layer": x_out = 2x + p, state_out = state + x, with its own weight baked in.
  const layer = (weight: number): Uint8Array => {
    const g = new GraphBuilder('layer');
    const x = g.input('x', 'float', [2]);
    const p = g.input('p', 'float', [2]);
    const state = g.input('state', 'float', [2]);
    g.output(g.add(g.mul(x, g.input('w', 'float', [1])), p), 'x_out', 'float', [2]);
    g.output(g.add(state, x), 'state_out', 'float', [2]);
    return bakeInputs(g.toModel(), { w: f32(Float32Array.of(weight), [1]) });
  };
  const chained = await GraphSession.create('chain', composeChain([layer(2), layer(3), layer(10)], ['a_', 'b_', 'c_'], { input: 'x', output: 'x_out' }, ['p']), { device: 'cpu' });
  assert.deepEqual([...chained.inputNames].sort(), ['a_state', 'b_state', 'c_state', 'p', 'x']);
  const out = await chained.run({
    x: f32(Float32Array.of(1, 2), [2]),
    p: f32(Float32Array.of(1, 0), [2]),
    a_state: f32(Float32Array.of(0, 0), [2]),
    b_state: f32(Float32Array.of(100, 100), [2]),
    c_state: f32(Float32Array.of(0, 0), [2]),
  });
  // x: [1,2] → a: [3,4] → b: [10,12] → c: [101,120]; each state adds that part's input x.
  assert.deepEqual([...floatData(out.x_out)], [101, 120]);
  assert.deepEqual([...floatData(out.a_state_out)], [1, 2]);
  assert.deepEqual([...floatData(out.b_state_out)], [103, 104]);
  assert.deepEqual([...floatData(out.c_state_out)], [10, 12]);
  assert.equal(out.a_x_out, undefined, 'links between parts are not outputs');
  assert.throws(() => composeChain([layer(1), layer(2)], ['a_', 'a_'], { input: 'x', output: 'x_out' }), /prefixes must differ/);
  await chained.release();
});

for (const precision of ['fp32', 'int4'] as const) {
  test(`baked per-layer sessions match the shared graphs (${precision}, dense and sparse, prefill and decode)`, async () => {
    const fed = await SalaModel.load(SALA_TINY_A, { device: 'cpu', precision, bakeWeights: false });
    const baked = await SalaModel.load(SALA_TINY_A, { device: 'cpu', precision, bakeWeights: true });
    try {
      // 600 tokens cross dense_len (512): the prefill runs sparse; decode continues sparse.
      for (const length of [300, 600]) {
        const ids = tokens(length, length);
        const a = fed.newSequence();
        const b = baked.newSequence();
        const prefill = maxAbsDiff(await fed.forward(a, ids, { logits: 'all' }), await baked.forward(b, ids, { logits: 'all' }));
        assert.ok(prefill <= 1e-4, `prefill of ${length}: ${prefill}`);
        for (const id of tokens(4, 7)) {
          const step = maxAbsDiff(await fed.forward(a, [id]), await baked.forward(b, [id]));
          assert.ok(step <= 1e-4, `decode after ${length}: ${step}`);
        }
      }
      await assert.rejects(baked.residentDecoder(baked.newSequence(), { maxTokens: 16 }), /baked into per-layer sessions has no resident decoder/);
    } finally {
      await Promise.all([fed.release(), baked.release()]);
    }
  });
}
