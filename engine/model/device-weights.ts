// A model's weights as its graphs take them, placed once on the execution device: each
// HF weight under the graph input it feeds (LAYER_WEIGHT_NAMES), in the model's precision
// (norms fp32, the embedding table fp16 when int4, int4 as MatMulNBits' three tensors), one
// upload per weight and form however many layers share it (a tied lm_head).
import * as ort from 'onnxruntime-node';
import type { Precision, ResolvedPrecision } from '../runtime/device.js';
import { blocksPerRow, quantizeInt4, type Int4Matrix } from '../runtime/int4.js';
import { DeviceMemoryError, f16, f32 } from '../runtime/session.js';
import { release, type DeviceTensors } from '../runtime/device-tensors.js';
import { expectedWeights, type SalaConfig } from './config.js';
import { ModelInputError } from './forward-plan.js';
import { MATRIX_INPUTS } from './graphs.js';
import type { WeightMap } from './weights.js';

export type LayerTensors = Record<string, ort.Tensor>;

const LAYER_WEIGHT_NAMES: Record<string, string> = {
  input_layernorm: 'w_in_norm',
  post_attention_layernorm: 'w_post_norm',
  'mlp.gate_proj': 'w_mlp_gate',
  'mlp.up_proj': 'w_mlp_up',
  'mlp.down_proj': 'w_mlp_down',
  'self_attn.q_proj': 'w_q',
  'self_attn.k_proj': 'w_k',
  'self_attn.v_proj': 'w_v',
  'self_attn.o_proj': 'w_o',
  'self_attn.z_proj': 'w_z',
  'self_attn.o_gate': 'w_o_gate',
  'self_attn.q_norm': 'w_q_norm',
  'self_attn.k_norm': 'w_k_norm',
  'self_attn.o_norm': 'w_o_norm',
};

export interface PlacedWeights {
  layerTensors: LayerTensors[];
  globalTensors: LayerTensors;
}

/**
 * Every weight of `weights` on `deviceTensors`'s device. A weight missing or misshapen is a
 * ModelInputError; weights that do not fit are a DeviceMemoryError saying what would (what
 * was placed is freed first). int4Blocks / onInt4: as ModelOptions says.
 */
export async function placeWeights(
  config: SalaConfig,
  weights: WeightMap,
  precision: ResolvedPrecision,
  deviceTensors: DeviceTensors,
  options: { int4Blocks?: (name: string) => Int4Matrix | undefined; onInt4?: (name: string, blocks: Int4Matrix) => void } = {},
): Promise<PlacedWeights> {
  const shapes = expectedWeights(config);
  // Keyed by the data and its form, so a tied lm_head (or layers sharing weights) is uploaded once per form.
  const uploaded = new Map<Float32Array, Map<Precision, ort.Tensor[]>>();
  const tensors = async (target: LayerTensors, name: string, input: string): Promise<void> => {
    const data = weights.get(name);
    const shape = shapes.get(name);
    if (!data || !shape) throw new ModelInputError(`weight ${name} is missing`);
    if (data.length !== shape.reduce((a, b) => a * b, 1)) throw new ModelInputError(`weight ${name} has ${data.length} values; the config implies shape [${shape.join(', ')}]`);
    // Norms stay fp32; the embedding table is gathered, not multiplied, so it is never int4.
    const form: Precision = !MATRIX_INPUTS.has(input) ? 'fp32' : input === 'w_embed' && precision.kind === 'int4' ? 'fp16' : precision.kind;
    const forms = uploaded.get(data) ?? new Map<Precision, ort.Tensor[]>();
    uploaded.set(data, forms);
    let resident = forms.get(form);
    if (!resident) {
      // Converted here, once, and only the converted form goes to the device.
      if (form === 'int4') {
        let q = options.int4Blocks?.(name);
        if (!q) {
          q = quantizeInt4(data, shape[0], shape[1]);
          options.onInt4?.(name, q);
        }
        resident = [
          await deviceTensors.upload(new ort.Tensor('uint8', q.codes, [q.rows, blocksPerRow(q.cols), q.blockSize / 2])),
          await deviceTensors.upload(f32(q.scales, [q.scales.length])),
          await deviceTensors.upload(new ort.Tensor('uint8', q.zeros, [q.zeros.length])),
        ];
      } else {
        resident = [await deviceTensors.upload(form === 'fp16' ? f16(data, shape) : f32(data, shape))];
      }
      forms.set(form, resident);
    }
    const [main, scales, zeros] = resident;
    target[input] = main;
    if (scales && zeros) {
      target[`${input}_scales`] = scales;
      target[`${input}_zeros`] = zeros;
    }
  };
  const layerTensors: LayerTensors[] = [];
  const globalTensors: LayerTensors = {};
  try {
    for (let layer = 0; layer < config.numHiddenLayers; layer++) {
      const forLayer: LayerTensors = {};
      for (const [suffix, input] of Object.entries(LAYER_WEIGHT_NAMES)) {
        const name = `model.layers.${layer}.${suffix}.weight`;
        if (weights.has(name)) await tensors(forLayer, name, input);
      }
      layerTensors.push(forLayer);
    }
    await tensors(globalTensors, 'model.embed_tokens.weight', 'w_embed');
    await tensors(globalTensors, 'model.norm.weight', 'w_norm');
    await tensors(globalTensors, config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', 'w_lm_head');
  } catch (err) {
    // The weights do not fit the device: free what went up, say what would fit.
    for (const forms of uploaded.values()) for (const list of forms.values()) list.forEach(release);
    if (!(err instanceof DeviceMemoryError || err instanceof RangeError)) throw err;
    const gib = (bytes: number) => (bytes / 2 ** 30).toFixed(1);
    throw new DeviceMemoryError(
      `the model's weights do not fit in ${deviceTensors.device} memory (${precision.kind}; ${gib(deviceTensors.uploadedBytes)} GiB were placed when an allocation failed: ${err.message.split('\n')[0].replace(/\.$/, '')}). ` +
        (precision.kind === 'int4' ? 'Run it on the CPU (--device cpu).' : 'Use 4-bit weights (--precision int4, about a quarter of fp16), or run it on the CPU (--device cpu).'),
      { cause: err },
    );
  }
  return { layerTensors, globalTensors };
}
