// The sessions a resident decoder runs, built once per model and shared by its decoders,
// and what the model hands a decoder besides them. Outputs that feed the next run stay on
// the device ('gpu-buffer'); what the host needs (logits, the new K/V rows for the host
// store, selected block ids but where a chunk's rows read them on the device) comes back to host memory.
import type * as ort from 'onnxruntime-node';
import type { DeviceTensors } from '../runtime/device-tensors.js';
import { runsThroughAddon, type DeviceKind, type Precision, type ResolvedDevice } from '../runtime/device.js';
import { GraphSession, type Feeds } from '../runtime/session.js';
import type { Level } from '../kv/selection.js';
import type { DerivedSizes, SalaConfig } from './config.js';
import { CapturedLightning } from './captured-lightning.js';
import { CapturedSparse } from './captured-sparse.js';
import type { StepCapacity } from './captured-sparse-graph.js';
import { buildGraphs, buildResidentGraphs } from './graphs.js';
import type { RowAttendForm } from './row-attend-graphs.js';

/** What the model hands its decoder. */
export interface ResidentParts {
  config: SalaConfig;
  sizes: DerivedSizes;
  device: ResolvedDevice;
  layerTensors: Record<string, ort.Tensor>[];
  globalTensors: Record<string, ort.Tensor>;
  fineLevel: Level;
  coarseLevel: Level;
  tensors: DeviceTensors;
}

export interface ResidentSessions {
  embed: GraphSession;
  lightning: GraphSession;
  /** Lightning for one token: decode steps. */
  lightningStep: GraphSession;
  /** The same, captured as CUDA graphs (CUDA through the binding addon; see capturesSteps). */
  lightningCaptured?: GraphSession;
  /** Its buffers, made on the first decode step and kept with the model. */
  captured?: CapturedLightning;
  head: GraphSession;
  project: GraphSession;
  /** With capture (capturesSteps): the projection with x passed through, and the captured sparse step of a decoder of the given capacity (with poolSlots: offloaded, select and attend apart). */
  projectCaptured?: GraphSession;
  captureSparse?: (tensors: DeviceTensors, capacity: StepCapacity, poolSlots?: number) => Promise<CapturedSparse>;
  select: GraphSession;
  /** The same for one decode query (sparse_select_step). */
  selectStep: GraphSession;
  attend: GraphSession;
  /** A dense step over the device store in place (every block resident), no gather. */
  attendStore: GraphSession;
  /** select + attend in one run, for KV all on the device (selectsOnDevice). */
  selectAttend: GraphSession;
  /** The same selection with its output left on the device (a chunk's rows then attend in a 'selected-…' form), and the widest head's union width. */
  selectOnDevice: GraphSession;
  /** Chunked prefill: a range of a chunk's rows over their blocks, per form (row-attend-graphs.ts); the head on the chunk's last row. */
  attendRows: Record<RowAttendForm, GraphSession>;
  /** Chunked prefill: a sparse layer's gate, o_proj and MLP once over the chunk's accumulated attention output. */
  finish: GraphSession;
  headLast: GraphSession;
}

/** The feeds of `tensors` that a session takes (a layer's weights, say). */
export function feedsFor(tensors: Record<string, ort.Tensor>, names: readonly string[]): Feeds {
  const feeds: Feeds = {};
  for (const name of names) if (name in tensors) feeds[name] = tensors[name];
  return feeds;
}

const onDevice = 'gpu-buffer' as const;

/**
 * Whether decode steps replay their layers as CUDA graphs (captured-lightning.ts, and
 * captured-sparse.ts with every block on the device): on CUDA through the binding addon
 * unless PANORAMA_CUDA_GRAPH=0; on the CPU provider through the addon with
 * PANORAMA_CUDA_GRAPH=1, the same buffers without the capture (tests).
 */
function capturesSteps(kind: DeviceKind): boolean {
  if (!runsThroughAddon(kind)) return false;
  return kind === 'cuda' ? process.env.PANORAMA_CUDA_GRAPH !== '0' : process.env.PANORAMA_CUDA_GRAPH === '1';
}

/** The decode-step and prefill sessions of a model (built once per model: see SalaModel.residentDecoder). */
export async function residentSessions(config: SalaConfig, device: ResolvedDevice, precision: Precision = 'fp32'): Promise<ResidentSessions> {
  const graphs = buildGraphs(config, precision);
  const resident = buildResidentGraphs(config, precision);
  const captures = capturesSteps(device.kind);
  const make = (name: string, bytes: Uint8Array, outputs: Record<string, ort.Tensor.DataLocation>, cudaGraph = false) =>
    GraphSession.create(name, bytes, { device: device.kind, threads: 1, outputs, cudaGraph });
  return {
    embed: await make('embed', graphs.embed, { x: onDevice }),
    lightning: await make('lightning', graphs.lightning, { x_out: onDevice, state_out: onDevice }),
    lightningStep: await make('lightning_step', resident.lightningStep, { x_out: onDevice, state_out: onDevice }),
    lightningCaptured: captures ? await make('lightning_captured', resident.lightningStep, { x_out: onDevice, state_out: onDevice }, true) : undefined,
    head: await make('head', graphs.head, { logits: 'cpu' }),
    project: await make('sparse_project_resident', resident.sparseProject, { q: onDevice, k: onDevice, v: onDevice, gate: onDevice, k_host: 'cpu', v_host: 'cpu' }),
    projectCaptured: captures
      ? await make('sparse_project_captured', resident.sparseProjectCaptured, {
          x_row: onDevice,
          q: onDevice,
          k: onDevice,
          v: onDevice,
          gate: onDevice,
          k_host: 'cpu',
          v_host: 'cpu',
        })
      : undefined,
    captureSparse: captures ? (tensors, capacity, poolSlots) => CapturedSparse.create(config, precision, tensors, capacity, poolSlots) : undefined,
    select: await make('sparse_select_resident', resident.sparseSelect, { selected: 'cpu' }),
    selectStep: await make('sparse_select_step', resident.sparseSelectStep, { selected: 'cpu' }),
    attend: await make('sparse_attend_resident', resident.sparseAttend, { x_out: onDevice, tail_keys_out: onDevice, tail_values_out: onDevice }),
    attendStore: await make('sparse_attend_store', resident.sparseAttendStore, { x_out: onDevice, tail_keys_out: onDevice, tail_values_out: onDevice }),
    selectAttend: await make('sparse_select_attend_resident', resident.sparseSelectAttend, { x_out: onDevice, tail_keys_out: onDevice, tail_values_out: onDevice }),
    selectOnDevice: await make('sparse_select_on_device', resident.sparseSelectUnion, { selected: onDevice, union_width: 'cpu' }),
    attendRows: {
      union: await make('sparse_attend_rows', resident.sparseAttendRows.union, { o_acc_out: onDevice }),
      'per-row': await make('sparse_attend_queries', resident.sparseAttendRows['per-row'], { o_acc_out: onDevice }),
      'selected-union': await make('sparse_attend_selected_rows', resident.sparseAttendRows['selected-union'], { o_acc_out: onDevice }),
      'selected-per-row': await make('sparse_attend_selected_queries', resident.sparseAttendRows['selected-per-row'], { o_acc_out: onDevice }),
    },
    finish: await make('sparse_finish', resident.sparseFinish, { x_out: onDevice }),
    headLast: await make('head_last', resident.headLast, { logits: 'cpu' }),
  };
}
