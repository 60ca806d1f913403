// Per-layer sessions with a model's weights baked in as initializers (ModelOptions.bakeWeights:
// CUDA without the binding addon, where every input would otherwise cross the bus each run),
// runs of small consecutive Lightning layers chained into one session.
import type { ResolvedDevice } from '../runtime/device.js';
import { GraphSession } from '../runtime/session.js';
import { bakeInputs } from '../runtime/bake.js';
import { composeChain } from '../runtime/compose.js';
import type { SalaConfig } from './config.js';
import type { buildGraphs } from './graphs.js';
import type { LayerTensors } from './device-weights.js';

/** The graphs that carry weights, one session per layer (ModelOptions.bakeWeights); selection has none. */
export interface BakedSessions {
  embed: GraphSession;
  head: GraphSession;
  layers: { lightning?: GraphSession; sparseProject?: GraphSession; sparseAttend?: GraphSession }[];
  /** Runs of consecutive Lightning layers chained into one session, by their first layer. */
  lightningGroups: Map<number, { session: GraphSession; layers: number[] }>;
}

/**
 * Largest chained Lightning graph. Measured on an H200 (docs/benchmarks/gpu.md): chains of
 * two fp16 9B-shape layers (1.1 GB) took ~35 s each to create on CUDA (the model loaded in
 * 414 s against 67 s unchained), one of eight int4 layers (1.4 GB) did not finish in 230 s,
 * while on the CPU provider the same chains build in ~1.6 s a layer. Until that is
 * understood only small layers chain (the default model's whole runs of Lightning layers).
 */
const MAX_CHAIN_BYTES = 64 * 2 ** 20;

/**
 * Per-layer sessions with the weights baked in (ModelOptions.bakeWeights). Each layer's
 * tensors are dropped once its sessions hold them, so host memory keeps one copy.
 */
export async function bakeSessions(
  config: SalaConfig,
  graphs: ReturnType<typeof buildGraphs>,
  layerTensors: LayerTensors[],
  globalTensors: LayerTensors,
  options: { device: ResolvedDevice['kind']; threads?: number },
): Promise<BakedSessions> {
  const made: GraphSession[] = [];
  const make = async (name: string, graph: Uint8Array, tensors: LayerTensors): Promise<GraphSession> => {
    const session = await GraphSession.create(name, bakeInputs(graph, tensors), options);
    made.push(session);
    return session;
  };
  try {
    const layers: BakedSessions['layers'] = [];
    const lightningGroups: BakedSessions['lightningGroups'] = new Map();
    let run: { layers: number[]; models: Uint8Array[]; bytes: number } = { layers: [], models: [], bytes: 0 };
    const closeRun = async () => {
      if (run.layers.length > 0) {
        const chained = composeChain(
          run.models,
          run.layers.map((layer) => `l${layer}_`),
          { input: 'x', output: 'x_out' },
          ['positions'],
        );
        run.models = [];
        const session = await GraphSession.create(`lightning_group_${run.layers[0]}`, chained, options);
        made.push(session);
        lightningGroups.set(run.layers[0], { session, layers: run.layers });
      }
      run = { layers: [], models: [], bytes: 0 };
    };
    for (let layer = 0; layer < config.numHiddenLayers; layer++) {
      const tensors = layerTensors[layer];
      if (config.mixerTypes[layer] === 'lightning-attn') {
        const model = bakeInputs(graphs.lightning, tensors);
        if (run.bytes + model.length > MAX_CHAIN_BYTES) await closeRun();
        run.layers.push(layer);
        run.models.push(model);
        run.bytes += model.length;
        layers.push({});
      } else {
        await closeRun();
        layers.push({
          sparseProject: await make(`sparse_project_${layer}`, graphs.sparseProject, tensors),
          sparseAttend: await make(`sparse_attend_${layer}`, graphs.sparseAttend, tensors),
        });
      }
      layerTensors[layer] = {};
    }
    await closeRun();
    return { embed: await make('embed', graphs.embed, globalTensors), head: await make('head', graphs.head, globalTensors), layers, lightningGroups };
  } catch (err) {
    await Promise.all(made.map((session) => session.release()));
    throw err;
  }
}
