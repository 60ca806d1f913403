import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expectedWeights, loadConfig } from '../../engine/model/config.js';
import { SafetensorsError, SafetensorsFile } from '../../engine/model/safetensors.js';
import { WeightsError, loadWeights, writeSafetensors, type TensorToWrite } from '../../engine/model/weights.js';
import { f32Bytes, readU16, refBf16ToFloat, refF16ToFloat, tempDir, u16Bytes, writeRawSafetensors } from './helpers-loading/raw-files.js';
import { randomArray, randomModelTensors, seededRandom, tinyConfig } from './helpers-loading/tiny-model.js';
import { SALA_TINY_A as FIXTURE_DIR } from '../helpers/fixtures.js';

const FIXTURE_WEIGHTS = path.join(FIXTURE_DIR, 'model.safetensors');

/** Runs `body` with a fresh temp folder that is removed afterwards. */
async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = await tempDir();
  try {
    await body(dir);
  } finally {
    await cleanup();
  }
}

async function readAll(file: string, name: string): Promise<{ values: Float32Array; raw: Uint8Array }> {
  const st = await SafetensorsFile.open(file);
  try {
    return { values: await st.readFloat32(name), raw: await st.readRaw(name) };
  } finally {
    await st.close();
  }
}

/** Same value, -0 and NaN included. */
function sameFloat(actual: number, expected: number): boolean {
  return Number.isNaN(expected) ? Number.isNaN(actual) : Object.is(actual, expected);
}

function mean(xs: Float32Array): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function std(xs: Float32Array): number {
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length);
}

async function assertOpenFails(file: string, message: RegExp): Promise<void> {
  await assert.rejects(SafetensorsFile.open(file), (err: unknown) => {
    assert.ok(err instanceof SafetensorsError, String(err));
    assert.match(err.message, message);
    return true;
  });
}

// ---- the real fixture ----

test('fixture model.safetensors: 75 BF16 tensors, metadata read, readFloat32 equals a manual bf16 decode of the bytes', async () => {
  const st = await SafetensorsFile.open(FIXTURE_WEIGHTS);
  try {
    assert.equal(st.entries.size, 75);
    assert.equal(st.metadata.format, 'pt');
    for (const entry of st.entries.values()) {
      assert.equal(entry.dtype, 'BF16', entry.name);
      const values = await st.readFloat32(entry.name);
      const raw = await st.readRaw(entry.name);
      assert.equal(raw.byteLength, 2 * values.length);
      const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      const bits = new Uint32Array(values.buffer);
      for (let i = 0; i < values.length; i++) {
        if (bits[i] !== (view.getUint16(2 * i, true) << 16) >>> 0) assert.fail(`${entry.name}[${i}] decoded wrongly`);
      }
    }
  } finally {
    await st.close();
  }
});

test('fixture spot check against an independent parse of the file bytes', async () => {
  const bytes = readFileSync(FIXTURE_WEIGHTS);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const name = 'model.layers.3.self_attn.o_gate.weight';
  const [begin] = header[name].data_offsets as number[];
  const { values } = await readAll(FIXTURE_WEIGHTS, name);
  for (const index of [0, 1, 12345, 65535]) {
    const stored = bytes.readUInt16LE(8 + headerLength + begin + 2 * index);
    assert.equal(values[index], refBf16ToFloat(stored), `${name}[${index}]`);
  }
});

test('fixture values have the spreads the README documents (embeddings 0.02, lm_head 0.05, norms 1 ± 0.1)', async () => {
  const st = await SafetensorsFile.open(FIXTURE_WEIGHTS);
  try {
    const embed = await st.readFloat32('model.embed_tokens.weight');
    const head = await st.readFloat32('lm_head.weight');
    const norm = await st.readFloat32('model.layers.2.self_attn.o_norm.weight');
    assert.ok(Math.abs(std(embed) - 0.02) < 0.001, `embed std ${std(embed)}`);
    assert.ok(Math.abs(std(head) - 0.05) < 0.002, `lm_head std ${std(head)}`);
    assert.ok(Math.abs(mean(norm) - 1) < 0.03, `norm mean ${mean(norm)}`);
    assert.ok(Math.abs(std(norm) - 0.1) < 0.02, `norm std ${std(norm)}`);
  } finally {
    await st.close();
  }
});

test('loadWeights loads the whole fixture: every expected weight, nothing unexpected, 2 bytes per parameter', async () => {
  const cfg = await loadConfig(FIXTURE_DIR);
  const { weights, unexpected, bytesRead } = await loadWeights(FIXTURE_DIR, cfg);
  assert.equal(weights.size, 75);
  assert.deepEqual(unexpected, []);
  let parameters = 0;
  for (const [name, shape] of expectedWeights(cfg)) {
    const data = weights.get(name);
    assert.ok(data, name);
    assert.equal(
      data.length,
      shape.reduce((n, d) => n * d, 1),
      name,
    );
    parameters += data.length;
  }
  assert.equal(parameters, 4_461_312);
  assert.equal(bytesRead, 2 * 4_461_312);
  const { values } = await readAll(FIXTURE_WEIGHTS, 'model.layers.5.mlp.down_proj.weight');
  assert.deepEqual(weights.get('model.layers.5.mlp.down_proj.weight'), values);
});

// ---- writing and reading back ----

test('F32 round trip is exact, including -0, ±inf, NaN and subnormals', async () => {
  await inTempDir(async (dir) => {
    const specials = [0, -0, 1, -1.5, Infinity, -Infinity, NaN, 1e-45, -1.1754942e-38, 3.4028234663852886e38, 0.1];
    const data = Float32Array.from([...specials, ...randomArray(989, seededRandom(1), 100)]);
    const file = path.join(dir, 'f32.safetensors');
    await writeSafetensors(file, [{ name: 't', data, shape: [10, 100], dtype: 'F32' }], { note: 'x' });
    const st = await SafetensorsFile.open(file);
    try {
      assert.deepEqual(st.metadata, { note: 'x' });
      assert.deepEqual(st.entries.get('t')?.shape, [10, 100]);
      const back = await st.readFloat32('t');
      for (let i = 0; i < data.length; i++) assert.ok(sameFloat(back[i], data[i]), `element ${i}: ${back[i]} vs ${data[i]}`);
    } finally {
      await st.close();
    }
  });
});

const F16_CASES: [number, number][] = [
  [0, 0x0000],
  [-0, 0x8000],
  [1, 0x3c00],
  [-2, 0xc000],
  [0.1, 0x2e66],
  [65504, 0x7bff],
  [65519, 0x7bff],
  [65520, 0x7c00],
  [1e6, 0x7c00],
  [-1e6, 0xfc00],
  [Infinity, 0x7c00],
  [-Infinity, 0xfc00],
  [NaN, 0x7e00],
  [2 ** -14, 0x0400],
  [2 ** -24, 0x0001],
  [-(2 ** -24), 0x8001],
  [2 ** -25, 0x0000],
  [1.5 * 2 ** -25, 0x0001],
  [3 * 2 ** -25, 0x0002],
  [5 * 2 ** -25, 0x0002],
  [2 ** -26, 0x0000],
  [1023 * 2 ** -24, 0x03ff],
  [1023.5 * 2 ** -24, 0x0400],
  [1 + 2 ** -11, 0x3c00],
  [1 + 3 * 2 ** -11, 0x3c02],
  [1 + 2 ** -11 + 2 ** -20, 0x3c01],
  [1e-45, 0x0000],
];

const BF16_CASES: [number, number][] = [
  [0, 0x0000],
  [-0, 0x8000],
  [1, 0x3f80],
  [-1, 0xbf80],
  [0.1, 0x3dcd],
  [1 + 2 ** -8, 0x3f80],
  [1 + 3 * 2 ** -8, 0x3f82],
  [1 + 2 ** -8 + 2 ** -16, 0x3f81],
  [3.4028234663852886e38, 0x7f80],
  [3.3895313892515355e38, 0x7f7f],
  [Infinity, 0x7f80],
  [-Infinity, 0xff80],
  [NaN, 0x7fc0],
  [2 ** -149, 0x0000],
  [2 ** -133, 0x0001],
  [2 ** -134, 0x0000],
  [3 * 2 ** -134, 0x0002],
  [-(2 ** -126), 0x8080],
];

for (const [dtype, cases, decode] of [
  ['F16', F16_CASES, refF16ToFloat],
  ['BF16', BF16_CASES, refBf16ToFloat],
] as const) {
  test(`${dtype} writing rounds to nearest even (hand-computed bits incl. subnormals, overflow, inf, NaN)`, async () => {
    await inTempDir(async (dir) => {
      const file = path.join(dir, 'rounding.safetensors');
      const data = Float32Array.from(cases.map(([value]) => value));
      await writeSafetensors(file, [{ name: 'r', data, shape: [cases.length], dtype }]);
      const { values, raw } = await readAll(file, 'r');
      const bits = readU16(raw);
      cases.forEach(([value, expected], i) => {
        assert.equal(bits[i].toString(16), expected.toString(16), `${dtype}(${value})`);
        assert.ok(sameFloat(values[i], decode(expected)), `${dtype}(${value}) read back as ${values[i]}`);
      });
    });
  });

  test(`${dtype}: all 65536 bit patterns decode exactly and re-encode to the same bits`, async () => {
    await inTempDir(async (dir) => {
      const patterns = Array.from({ length: 65536 }, (_, i) => i);
      const rawFile = path.join(dir, 'all.safetensors');
      await writeRawSafetensors(rawFile, { all: { dtype, shape: [65536], data_offsets: [0, 131072] } }, u16Bytes(patterns));
      const { values } = await readAll(rawFile, 'all');
      for (const bits of patterns) {
        if (!sameFloat(values[bits], decode(bits))) assert.fail(`${dtype} 0x${bits.toString(16)} decoded to ${values[bits]}, expected ${decode(bits)}`);
      }
      const rewritten = path.join(dir, 'rewritten.safetensors');
      await writeSafetensors(rewritten, [{ name: 'all', data: values, shape: [65536], dtype }]);
      const again = readU16((await readAll(rewritten, 'all')).raw);
      for (const bits of patterns) {
        const isNaN = Number.isNaN(decode(bits));
        if (isNaN ? !Number.isNaN(decode(again[bits])) : again[bits] !== bits) {
          assert.fail(`${dtype} 0x${bits.toString(16)} re-encoded as 0x${again[bits].toString(16)}`);
        }
      }
    });
  });
}

test('tensors larger than one 8 MiB read chunk are read completely (F32 and BF16)', async () => {
  await inTempDir(async (dir) => {
    const random = seededRandom(7);
    const f32 = randomArray(2_500_000, random);
    const bf16Bits = Array.from({ length: 4_500_000 }, () => Math.floor(random() * 0x7f80));
    const writtenFile = path.join(dir, 'big-f32.safetensors');
    await writeSafetensors(writtenFile, [{ name: 'big', data: f32, shape: [2500, 1000], dtype: 'F32' }]);
    const { values } = await readAll(writtenFile, 'big');
    let mismatches = 0;
    for (let i = 0; i < f32.length; i++) if (values[i] !== f32[i]) mismatches++;
    assert.equal(mismatches, 0);

    const rawFile = path.join(dir, 'big-bf16.safetensors');
    await writeRawSafetensors(rawFile, { big: { dtype: 'BF16', shape: [4_500_000], data_offsets: [0, 9_000_000] } }, u16Bytes(bf16Bits));
    const bf16 = (await readAll(rawFile, 'big')).values;
    for (let i = 0; i < bf16Bits.length; i++) {
      if (bf16[i] !== refBf16ToFloat(bf16Bits[i])) mismatches++;
    }
    assert.equal(mismatches, 0);
  });
});

test('I8 writing quantizes per row with absmax/127 and writes <name>_scale (hand-computed)', async () => {
  await inTempDir(async (dir) => {
    const file = path.join(dir, 'i8.safetensors');
    const rows = [
      [31.75, -0.5, 0.25, 0],
      [127, 0.5, 1.5, -0.5],
      [0, 0, 0, 0],
    ];
    await writeSafetensors(file, [{ name: 'w', data: Float32Array.from(rows.flat()), shape: [3, 4], dtype: 'I8' }]);
    const st = await SafetensorsFile.open(file);
    try {
      assert.deepEqual([...st.entries.keys()], ['w', 'w_scale']);
      assert.equal(st.entries.get('w')?.dtype, 'I8');
      assert.deepEqual(st.entries.get('w_scale')?.shape, [3]);
      assert.deepEqual([...new Int8Array((await st.readRaw('w')).buffer)], [127, -2, 1, 0, 127, 1, 2, -1, 0, 0, 0, 0]);
      assert.deepEqual([...(await st.readFloat32('w_scale'))], [0.25, 1, 0]);
      assert.deepEqual([...(await st.readFloat32('w'))], [127, -2, 1, 0, 127, 1, 2, -1, 0, 0, 0, 0], 'readFloat32 gives I8 integer values');
    } finally {
      await st.close();
    }
  });
});

// ---- malformed files ----

test('open rejects a truncated file, naming the tensor, where it ends and the file size', async () => {
  await inTempDir(async (dir) => {
    const file = path.join(dir, 'model.safetensors');
    await writeSafetensors(file, [
      { name: 'a', data: new Float32Array(4), shape: [4], dtype: 'F32' },
      { name: 'b', data: new Float32Array(15), shape: [3, 5], dtype: 'F32' },
    ]);
    const headerLength = Number((await readFile(file)).readBigUInt64LE(0));
    const size = (await stat(file)).size;
    assert.equal(size, 8 + headerLength + 76);
    await truncate(file, size - 10);
    await assertOpenFails(
      file,
      new RegExp(`^model\\.safetensors is truncated: tensor b ends at byte ${size} but the file has ${size - 10} bytes \\(re-download or re-export the checkpoint\\)$`),
    );
  });
});

test('open rejects header lengths beyond the file or over 100 MB, and files under 8 bytes', async () => {
  await inTempDir(async (dir) => {
    const file = path.join(dir, 'x.safetensors');
    const header = { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } };
    await writeRawSafetensors(file, header, f32Bytes([1]), 10_000n);
    await assertOpenFails(file, /header length 10000 runs past the end of the \d+-byte file/);
    await writeRawSafetensors(file, header, f32Bytes([1]), 2n ** 40n);
    await assertOpenFails(file, /header length 1099511627776 is over the 104857600-byte limit/);
    await writeFile(file, Buffer.from([1, 2, 3]));
    await assertOpenFails(file, /only 3 bytes, too small/);
  });
});

test('open rejects a garbage or non-object JSON header', async () => {
  await inTempDir(async (dir) => {
    const file = path.join(dir, 'x.safetensors');
    await writeRawSafetensors(file, '{"a": {"dtype": "F32",', new Uint8Array(4));
    await assertOpenFails(file, /header is not valid JSON/);
    await writeRawSafetensors(file, '[1, 2]', new Uint8Array(4));
    await assertOpenFails(file, /header is not a JSON object/);
    await writeRawSafetensors(file, { __metadata__: { x: 3 } }, new Uint8Array(0));
    await assertOpenFails(file, /__metadata__\.x is not a string/);
  });
});

test('open rejects overlapping offsets and holes in the data section', async () => {
  await inTempDir(async (dir) => {
    const file = path.join(dir, 'x.safetensors');
    await writeRawSafetensors(
      file,
      {
        a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
      },
      new Uint8Array(24),
    );
    await assertOpenFails(file, /tensors a and b overlap/);
    await writeRawSafetensors(
      file,
      {
        a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        b: { dtype: 'F32', shape: [4], data_offsets: [20, 36] },
      },
      new Uint8Array(36),
    );
    await assertOpenFails(file, /gap before tensor b/);
  });
});

test('open rejects an unknown dtype, naming the tensor and the dtype', async () => {
  await inTempDir(async (dir) => {
    const file = path.join(dir, 'x.safetensors');
    await writeRawSafetensors(file, { 'model.norm.weight': { dtype: 'F64', shape: [2], data_offsets: [0, 16] } }, new Uint8Array(16));
    await assertOpenFails(file, /tensor model\.norm\.weight has dtype F64, which is not supported/);
  });
});

test('open rejects a shape whose byte size differs from data_offsets', async () => {
  await inTempDir(async (dir) => {
    const file = path.join(dir, 'x.safetensors');
    await writeRawSafetensors(file, { a: { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 8] } }, new Uint8Array(8));
    await assertOpenFails(file, /tensor a: shape \[2, 3\] in BF16 needs 12 bytes but data_offsets span 8/);
  });
});

test('reading a tensor the file does not have names it', async () => {
  const st = await SafetensorsFile.open(FIXTURE_WEIGHTS);
  try {
    await assert.rejects(st.readFloat32('model.layers.9.mlp.up_proj.weight'), /model\.safetensors has no tensor named model\.layers\.9\.mlp\.up_proj\.weight/);
  } finally {
    await st.close();
  }
});

// ---- loadWeights on a tiny model ----

test('loadWeights round trip: F32 exact, BF16 within half a bf16 ulp, bytesRead counts the stored bytes', async () => {
  const cfg = tinyConfig();
  await inTempDir(async (dir) => {
    const tensors = randomModelTensors(cfg, 11);
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    const { weights, unexpected, bytesRead } = await loadWeights(dir, cfg);
    assert.deepEqual(unexpected, []);
    assert.equal(weights.size, tensors.length);
    for (const t of tensors) assert.deepEqual(weights.get(t.name), t.data, t.name);
    assert.equal(bytesRead, 4 * tensors.reduce((n, t) => n + t.data.length, 0));
  });
  await inTempDir(async (dir) => {
    const tensors = randomModelTensors(cfg, 12, 'BF16');
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    const { weights, bytesRead } = await loadWeights(dir, cfg);
    for (const t of tensors) {
      const loaded = weights.get(t.name);
      assert.ok(loaded);
      t.data.forEach((x, i) => assert.ok(Math.abs(loaded[i] - x) <= Math.abs(x) * 2 ** -8, `${t.name}[${i}]: ${loaded[i]} vs ${x}`));
    }
    assert.equal(bytesRead, 2 * tensors.reduce((n, t) => n + t.data.length, 0));
  });
});

test('loadWeights: a missing tensor fails, listing its name; more than 10 are counted', async () => {
  const cfg = tinyConfig();
  const tensors = randomModelTensors(cfg, 13);
  const gone = 'model.layers.1.self_attn.z_proj.weight';
  await inTempDir(async (dir) => {
    await writeSafetensors(
      path.join(dir, 'model.safetensors'),
      tensors.filter((t) => t.name !== gone),
    );
    await assert.rejects(loadWeights(dir, cfg), (err: unknown) => {
      assert.ok(err instanceof WeightsError);
      assert.match(err.message, new RegExp(`lacks 1 of the ${tensors.length} weights config\\.json requires: ${gone.replace(/\./g, '\\.')} `));
      return true;
    });
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors.slice(0, 1));
    await assert.rejects(loadWeights(dir, cfg), (err: unknown) => {
      assert.ok(err instanceof WeightsError);
      const listed = tensors
        .slice(1, 11)
        .map((t) => t.name)
        .join(', ');
      assert.ok(err.message.includes(`${listed} and ${tensors.length - 11} more`), err.message);
      return true;
    });
  });
});

test('loadWeights: a shape mismatch names the tensor and both shapes and says config and weights disagree', async () => {
  const cfg = tinyConfig();
  const name = 'model.layers.0.self_attn.k_proj.weight';
  await inTempDir(async (dir) => {
    const tensors = randomModelTensors(cfg, 14).map((t): TensorToWrite => (t.name === name ? { ...t, shape: [32, 32], data: new Float32Array(1024) } : t));
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    await assert.rejects(
      loadWeights(dir, cfg),
      /tensor model\.layers\.0\.self_attn\.k_proj\.weight in .* has shape \[32, 32\] but config\.json implies \[16, 32\]: the config and the weights disagree/,
    );
  });
});

test('loadWeights ignores but reports unexpected tensors', async () => {
  const cfg = tinyConfig();
  await inTempDir(async (dir) => {
    const extras: TensorToWrite[] = [
      { name: 'model.layers.1.self_attn.rotary_emb.inv_freq', data: new Float32Array(8), shape: [8], dtype: 'F32' },
      { name: 'extra.bias', data: new Float32Array(2), shape: [2], dtype: 'F16' },
    ];
    await writeSafetensors(path.join(dir, 'model.safetensors'), [...randomModelTensors(cfg, 15), ...extras]);
    const { weights, unexpected } = await loadWeights(dir, cfg);
    assert.deepEqual(unexpected, ['extra.bias', 'model.layers.1.self_attn.rotary_emb.inv_freq']);
    assert.equal(weights.has('extra.bias'), false);
  });
});

test('loadWeights dequantizes I8 matrices written by writeSafetensors: W[o,i] = q[o,i]·scale[o]', async () => {
  const cfg = tinyConfig();
  await inTempDir(async (dir) => {
    const tensors = randomModelTensors(cfg, 16).map((t): TensorToWrite => (t.shape.length === 2 ? { ...t, dtype: 'I8' } : t));
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    const { weights, unexpected } = await loadWeights(dir, cfg);
    assert.deepEqual(unexpected, [], 'scale tensors are consumed, not unexpected');
    for (const t of tensors) {
      const loaded = weights.get(t.name);
      assert.ok(loaded);
      if (t.dtype !== 'I8') {
        assert.deepEqual(loaded, t.data);
        continue;
      }
      const [rows, cols] = t.shape;
      for (let o = 0; o < rows; o++) {
        const row = t.data.subarray(o * cols, (o + 1) * cols);
        const scale = Math.fround(row.reduce((m, x) => Math.max(m, Math.abs(x)), 0) / 127);
        for (let i = 0; i < cols; i++) {
          const q = Math.sign(row[i]) * Math.min(127, Math.round(Math.abs(row[i]) / scale));
          // + 0: int8 has no -0
          assert.equal(loaded[o * cols + i], Math.fround(q * scale) + 0, `${t.name}[${o}, ${i}]`);
          assert.ok(Math.abs(loaded[o * cols + i] - row[i]) <= scale * 0.5001);
        }
      }
    }
  });
});

test('loadWeights reads an I8 tensor with an [out, 1] scale from a second shard (folder of *.safetensors)', async () => {
  const cfg = tinyConfig();
  const name = 'model.layers.0.mlp.gate_proj.weight';
  const [rows, cols] = [48, 32];
  const q = Int8Array.from({ length: rows * cols }, (_, k) => ((Math.floor(k / cols) * 7 + (k % cols) * 3) % 255) - 127);
  const scales = Array.from({ length: rows }, (_, o) => 2 ** -(o % 5));
  await inTempDir(async (dir) => {
    await writeSafetensors(
      path.join(dir, 'a.safetensors'),
      randomModelTensors(cfg, 17).filter((t) => t.name !== name),
    );
    await writeRawSafetensors(
      path.join(dir, 'b.safetensors'),
      {
        [name]: { dtype: 'I8', shape: [rows, cols], data_offsets: [0, rows * cols] },
        [`${name}_scale`]: { dtype: 'F32', shape: [rows, 1], data_offsets: [rows * cols, rows * cols + 4 * rows] },
      },
      Buffer.concat([new Uint8Array(q.buffer), f32Bytes(scales)]),
    );
    const { weights } = await loadWeights(dir, cfg);
    const loaded = weights.get(name);
    assert.ok(loaded);
    for (let k = 0; k < q.length; k++) assert.equal(loaded[k], q[k] * scales[Math.floor(k / cols)], `${name}[${k}]`);
  });
});

test('loadWeights rejects an I8 tensor without its scale', async () => {
  const cfg = tinyConfig();
  const name = 'model.layers.0.mlp.up_proj.weight';
  await inTempDir(async (dir) => {
    await writeSafetensors(
      path.join(dir, 'a.safetensors'),
      randomModelTensors(cfg, 18).filter((t) => t.name !== name),
    );
    await writeRawSafetensors(path.join(dir, 'b.safetensors'), { [name]: { dtype: 'I8', shape: [48, 32], data_offsets: [0, 1536] } }, new Uint8Array(1536));
    await assert.rejects(loadWeights(dir, cfg), /is I8 but its per-row scale tensor model\.layers\.0\.mlp\.up_proj\.weight_scale is missing/);
  });
});

test('loadWeights follows model.safetensors.index.json across shards and ignores files it does not list', async () => {
  const cfg = tinyConfig();
  const tensors = randomModelTensors(cfg, 19);
  const half = Math.ceil(tensors.length / 2);
  await inTempDir(async (dir) => {
    const shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    await writeSafetensors(path.join(dir, shards[0]), tensors.slice(0, half), { format: 'pt' });
    await writeSafetensors(path.join(dir, shards[1]), tensors.slice(half), { format: 'pt' });
    // A stale file with the same names: loading it would be a duplicate error.
    await writeSafetensors(path.join(dir, 'stale.safetensors'), tensors.slice(0, 2));
    const weightMap = Object.fromEntries(tensors.map((t, i) => [t.name, shards[i < half ? 0 : 1]]));
    await writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
    const { weights, unexpected } = await loadWeights(dir, cfg);
    assert.deepEqual(unexpected, []);
    for (const t of tensors) assert.deepEqual(weights.get(t.name), t.data, t.name);
  });
});

test('loadWeights rejects a tensor present in two files, an empty folder, and an index pointing outside the folder', async () => {
  const cfg = tinyConfig();
  const tensors = randomModelTensors(cfg, 20);
  await inTempDir(async (dir) => {
    await assert.rejects(loadWeights(dir, cfg), /no weights in .*: expected model\.safetensors, model\.safetensors\.index\.json or \*\.safetensors files/);
    await writeSafetensors(path.join(dir, 'a.safetensors'), tensors);
    await writeSafetensors(path.join(dir, 'b.safetensors'), tensors.slice(3, 4));
    await assert.rejects(loadWeights(dir, cfg), new RegExp(`tensor ${tensors[3].name.replace(/\./g, '\\.')} appears in both`));
    await writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: '../elsewhere.safetensors' } }));
    await assert.rejects(loadWeights(dir, cfg), /weight_map\.x is not a shard file name inside the model folder/);
  });
});
