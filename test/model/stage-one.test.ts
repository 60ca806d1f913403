// Stage 1 against the formula written out here: the coarse log-sum-exp (taken in two stages
// over chunks of keys), fine probabilities summed over each GQA group, 0 where not visible.
// A decode query over whole compressed-key stores (stageOneKeysMajor), and a prefill's rows
// (stageOneRows) with the log-sum-exp in one pass (the host) and chunked (the device).
// Stores longer than a chunk, with every key, a few, one or none visible, so whole chunks are masked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { GraphBuilder } from '../../engine/runtime/graph-builder.js';
import { GraphSession, f32, floatData, i64 } from '../../engine/runtime/session.js';
import { parseConfig } from '../../engine/model/config.js';
import { sparseHeads } from '../../engine/model/graph-parts.js';
import { stageOneKeysMajor, stageOneRows } from '../../engine/model/sparse-select-graph.js';
import { SALA_TINY_A } from '../helpers/fixtures.js';

const cfg = parseConfig(JSON.parse(readFileSync(path.join(SALA_TINY_A, 'config.json'), 'utf8')));
const { hs, H, Hk, G } = sparseHeads(cfg);

function seeded(n: number, seed: number): Float32Array {
  let state = seed;
  return Float32Array.from({ length: n }, () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return (state / 2 ** 31) * 2 - 1;
  });
}

/** The formula: [Hk, C1] scores. */
function expected(q: Float32Array, fine: Float32Array, coarse: Float32Array, fineRows: number, coarseRows: number, fineVisible: number, coarseVisible: number): Float64Array {
  const scale = 1 / Math.sqrt(hs);
  const dot = (store: Float32Array, row: number, h: number, head: number) => {
    let sum = 0;
    for (let i = 0; i < hs; i++) sum += q[head * hs + i] * store[(row * Hk + h) * hs + i];
    return sum * scale;
  };
  const out = new Float64Array(Hk * fineRows);
  for (let h = 0; h < Hk; h++) {
    for (let j = 0; j < G; j++) {
      const head = h * G + j;
      let lse = Infinity; // no coarse key visible: probability 0
      if (coarseVisible > 0) {
        const logits = Array.from({ length: coarseVisible }, (_, r) => dot(coarse, r, h, head));
        const max = Math.max(...logits);
        lse = max + Math.log(logits.reduce((sum, x) => sum + Math.exp(x - max), 0));
      }
      for (let r = 0; r < Math.min(fineVisible, fineRows); r++) out[h * fineRows + r] += Math.exp(dot(fine, r, h, head) - lse) * (16 / G);
    }
  }
  return out;
}

test('stage 1 over whole stores: two-stage coarse log-sum-exp, masked rows and chunks, as the formula', async () => {
  const fineRows = 1000;
  const coarseRows = 300; // three chunks of rows, the last one padded
  const g = new GraphBuilder('stage_one');
  const fineVisible = g.input('fine_visible', 'int64', [1]);
  const coarseVisible = g.input('coarse_visible', 'int64', [1]);
  const scores = stageOneKeysMajor(
    g,
    cfg,
    g.input('q', 'float', [1, H, hs]),
    g.input('c1', 'float', ['C1', Hk, hs]),
    g.input('c2', 'float', ['C2', Hk, hs]),
    fineVisible,
    coarseVisible,
  );
  g.output(scores, 'scores', 'float', [Hk, 'C1']);
  const session = await GraphSession.create('stage_one', g.toModel(), { device: 'cpu', threads: 1 });
  const q = seeded(H * hs, 1);
  const fine = seeded(fineRows * Hk * hs, 2);
  const coarse = seeded(coarseRows * Hk * hs, 3);
  try {
    for (const [fv, cv] of [
      [1000, 300],
      [520, 130],
      [40, 5],
      [4, 1],
      [4, 0],
    ]) {
      const out = await session.run({
        q: f32(q, [1, H, hs]),
        c1: f32(fine, [fineRows, Hk, hs]),
        c2: f32(coarse, [coarseRows, Hk, hs]),
        fine_visible: i64([fv]),
        coarse_visible: i64([cv]),
      });
      const got = floatData(out.scores);
      const want = expected(q, fine, coarse, fineRows, coarseRows, fv, cv);
      let worst = 0;
      for (let i = 0; i < want.length; i++) {
        assert.ok(Number.isFinite(got[i]), `score ${i} is ${got[i]} (fine ${fv}, coarse ${cv})`);
        worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1e-6, Math.abs(want[i])));
      }
      assert.ok(worst <= 1e-4, `fine ${fv}, coarse ${cv}: worst relative error ${worst}`);
      assert.equal(
        got.some((x, i) => i % fineRows >= fv && x !== 0),
        false,
        'rows past the visible ones score 0',
      );
      if (cv > 0) assert.ok(got.some((x) => x > 0));
    }
  } finally {
    await session.release();
  }
});

test("a prefill's rows: the coarse log-sum-exp in one pass and chunked, subtracted inside the product (and outside, as before), as the formula, each row its own visible keys", async () => {
  const fineRows = 1000;
  const coarseRows = 300;
  const visible = [
    [1000, 300],
    [520, 130],
    [40, 5],
    [4, 1],
    [4, 0],
  ];
  const T = visible.length;
  const q = seeded(T * H * hs, 4);
  const fine = seeded(fineRows * Hk * hs, 5);
  const coarse = seeded(coarseRows * Hk * hs, 6);
  const results: Float32Array[] = [];
  // And the one-pass form as it was (the log-sum-exp subtracted from the scores: bench:selection's comparison point).
  for (const [form, previous] of [
    ['one-pass', false],
    ['chunked', false],
    ['one-pass', true],
  ] as const) {
    const g = new GraphBuilder('stage_one_rows');
    const scores = stageOneRows(
      g,
      cfg,
      g.input('q', 'float', ['T', H, hs]),
      g.input('c1', 'float', ['C1', Hk, hs]),
      g.input('c2', 'float', ['C2', Hk, hs]),
      g.input('fine_visible', 'int64', ['T']),
      g.input('coarse_visible', 'int64', ['T']),
      form,
      previous,
    );
    g.output(scores, 'scores', 'float', [Hk, 'T', 'C1']);
    const session = await GraphSession.create('stage_one_rows', g.toModel(), { device: 'cpu', threads: 1 });
    try {
      const out = await session.run({
        q: f32(q, [T, H, hs]),
        c1: f32(fine, [fineRows, Hk, hs]),
        c2: f32(coarse, [coarseRows, Hk, hs]),
        fine_visible: i64(visible.map(([fv]) => fv)),
        coarse_visible: i64(visible.map(([, cv]) => cv)),
      });
      const got = floatData(out.scores);
      visible.forEach(([fv, cv], t) => {
        const want = expected(q.subarray(t * H * hs, (t + 1) * H * hs), fine, coarse, fineRows, coarseRows, fv, cv);
        let worst = 0;
        for (let h = 0; h < Hk; h++) {
          for (let r = 0; r < fineRows; r++) {
            const x = got[(h * T + t) * fineRows + r];
            assert.ok(Number.isFinite(x), `${form}: row ${t} score ${r} is ${x}`);
            if (r >= fv) assert.equal(x, 0, `${form}: row ${t} key ${r} is past the visible ones`);
            const w = want[h * fineRows + r];
            worst = Math.max(worst, Math.abs(x - w) / Math.max(1e-6, Math.abs(w)));
          }
        }
        assert.ok(worst <= 1e-4, `${form}: row ${t} (fine ${fv}, coarse ${cv}) worst relative error ${worst}`);
      });
      results.push(got);
    } finally {
      await session.release();
    }
  }
  const [onePass, chunked] = results;
  let differ = 0;
  for (let i = 0; i < onePass.length; i++) differ = Math.max(differ, Math.abs(onePass[i] - chunked[i]));
  assert.ok(differ <= 1e-6, `the two forms differ by ${differ}`);
});
