// Helpers the resident-decoder tests share: greedy decoding on a decoder, and a model
// loaded on the CPU provider through the binding addon with the CUDA-graph buffers on
// (the captured paths, without the capture itself).
import { before, after } from 'node:test';
import { SalaModel } from '../../engine/model/sala-model.js';
import { argmax } from '../../engine/model/sampling.js';
import type { ResidentDecoder, ResidentStats } from '../../engine/model/resident-decoder.js';
import { setEnv } from './env.js';

/** `steps` greedy steps on `decoder` from the prompt's last logits; closes it. Returns the ids fed, their logits end to end, the stats and the next id. */
export async function greedySteps(decoder: ResidentDecoder, last: Float32Array, steps = 8): Promise<{ ids: number[]; logits: Float32Array; stats: ResidentStats; next: number }> {
  const ids = [argmax(last)];
  const logits = new Float32Array(steps * last.length);
  for (let step = 0; step < steps; step++) {
    const row = await decoder.step(ids[step]);
    logits.set(row, step * last.length);
    ids.push(argmax(row));
  }
  const stats = decoder.snapshot();
  await decoder.close();
  return { ids: ids.slice(0, steps), logits, stats, next: ids[steps] };
}

/** Loads `dir` before the file's tests (PANORAMA_NATIVE_CPU=1, PANORAMA_CUDA_GRAPH=1) and releases it after. */
export function addonCpuModel(dir: string): { readonly model: SalaModel } {
  let restoreEnv: () => void;
  const holder = {} as { model: SalaModel };
  before(async () => {
    restoreEnv = setEnv({ PANORAMA_NATIVE_CPU: '1', PANORAMA_CUDA_GRAPH: '1' });
    holder.model = await SalaModel.load(dir, { device: 'cpu' });
  });
  after(async () => {
    await holder.model.release();
    restoreEnv();
  });
  return holder;
}
