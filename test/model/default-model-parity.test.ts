// The shipped default model (models/panorama-code-13m, int8 rows × f32 scales)
// against logits of its PyTorch training code (test/fixtures/default-model).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { SalaModel, type SelectionRecord } from '../../engine/model/sala-model.js';
import { readNpy } from '../helpers/npy.js';

const MODEL = path.resolve(__dirname, '../../models/panorama-code-13m');
const FIXTURE = path.resolve(__dirname, '../fixtures/default-model');
/** The fixture README's tolerance: logits reach ±21.6, float32 on different CPUs and kernels. */
const TOLERANCE = 1e-4;

let model: SalaModel;
before(async () => {
  model = await SalaModel.load(MODEL);
});

for (const name of ['short', 'fim', 'chat_sparse'] as const) {
  test(`default model, ${name} prompt: last 4 logits within ${TOLERANCE} of PyTorch, same argmax`, async (t) => {
    const ids = Array.from(readNpy(path.join(FIXTURE, `${name}_ids.npy`)).data);
    const expected = readNpy(path.join(FIXTURE, `${name}_logits_last4.npy`));
    const records: SelectionRecord[] = [];
    const logits = await model.forward(model.newSequence(), ids, { logits: 4, onSelection: (r) => records.push(r) });
    assert.equal(logits.length, expected.data.length);
    let worst = 0;
    for (let i = 0; i < logits.length; i++) worst = Math.max(worst, Math.abs(logits[i] - expected.data[i]));
    t.diagnostic(`max |Δlogit| ${worst.toExponential(2)}`);
    assert.ok(worst <= TOLERANCE, `max diff ${worst}`);
    const vocab = model.config.vocabSize;
    for (let row = 0; row < 4; row++) {
      const argmax = (data: ArrayLike<number>) => {
        let best = row * vocab;
        for (let i = row * vocab; i < (row + 1) * vocab; i++) if (data[i] > data[best]) best = i;
        return best - row * vocab;
      };
      assert.equal(argmax(logits), argmax(expected.data), `row ${row}`);
    }
    if (name === 'chat_sparse') {
      // Blocks selected for the last query, per sparse layer (0, 5, 8): [3, 1, 24].
      const topk = readNpy(path.join(FIXTURE, 'chat_sparse_last_topk.npy'));
      const last = ids.length - 1;
      const got: number[] = [];
      for (const layer of model.sizes.sparseLayers) {
        const record = records.find((r) => r.layer === layer && r.firstPosition <= last && last < r.firstPosition + r.queries);
        assert.ok(record, `selection of layer ${layer}`);
        const row = last - record.firstPosition;
        got.push(...record.selected.subarray(row * record.k, (row + 1) * record.k));
      }
      assert.deepEqual(got, Array.from(topk.data));
    }
  });
}

test(`default model, greedy decode across dense_len: every step within ${TOLERANCE} of PyTorch, same tokens`, async (t) => {
  const prompt = Array.from(readNpy(path.join(FIXTURE, 'decode_cross_ids.npy')).data);
  const greedy = Array.from(readNpy(path.join(FIXTURE, 'decode_cross_greedy.npy')).data);
  const expected = readNpy(path.join(FIXTURE, 'decode_cross_logits.npy')).data;
  const vocab = model.config.vocabSize;
  assert.equal(prompt.length + greedy.length - 1 > model.config.sparse.denseLen, true, 'the decode must cross dense_len');
  const sequence = model.newSequence();
  let logits = await model.forward(sequence, prompt, { logits: 1 });
  let worst = 0;
  for (let step = 0; step < greedy.length; step++) {
    const row = expected.subarray(step * vocab, (step + 1) * vocab);
    let best = 0;
    for (let i = 0; i < vocab; i++) {
      worst = Math.max(worst, Math.abs(logits[i] - row[i]));
      if (logits[i] > logits[best]) best = i;
    }
    assert.equal(best, greedy[step], `greedy token at step ${step} (kv length ${prompt.length + step})`);
    if (step + 1 < greedy.length) logits = await model.forward(sequence, [best], { logits: 1 });
  }
  t.diagnostic(`max |Δlogit| over ${greedy.length} rows ${worst.toExponential(2)}`);
  assert.ok(worst <= TOLERANCE, `max diff ${worst}`);
});
