// Turns named graph inputs into initializers holding the given tensors' data. A graph
// shared by every layer takes its weights as inputs, which a CUDA session copies from
// host memory on every run (onnxruntime-node cannot keep a CUDA tensor between runs);
// baked in, a weight is copied to the device once, when the session is created, and
// onnxruntime may prepack it for its matrix kernels.
import type * as ort from 'onnxruntime-node';
import { ModelProto, OnnxDataType, type ElemType } from './onnx-proto.js';

const ELEM: Record<string, ElemType> = { float32: 'float', float16: 'float16', uint8: 'uint8', int8: 'int8', int32: 'int32', int64: 'int64', bool: 'bool' };

interface ValueInfo {
  name: string;
}

interface TensorProto {
  name: string;
  dims: number[];
  dataType: number;
  rawData: Uint8Array;
}

interface Graph {
  input: ValueInfo[];
  initializer: TensorProto[];
}

/** `model` with each input named in `tensors` replaced by an initializer of that tensor's data (host tensors only). */
export function bakeInputs(model: Uint8Array, tensors: Record<string, ort.Tensor>): Uint8Array {
  const message = ModelProto.decode(model) as unknown as { graph: Graph };
  const graph = message.graph;
  const baked = new Set<string>();
  for (const input of graph.input) {
    const tensor = tensors[input.name];
    if (!tensor) continue;
    const type = ELEM[tensor.type];
    if (!type) throw new Error(`cannot bake ${input.name}: unsupported type ${tensor.type}`);
    if (tensor.location !== 'cpu') throw new Error(`cannot bake ${input.name}: its data is on the device`);
    const data = tensor.data as ArrayBufferView;
    graph.initializer.push({ name: input.name, dims: [...tensor.dims], dataType: OnnxDataType[type], rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    baked.add(input.name);
  }
  graph.input = graph.input.filter((input) => !baked.has(input.name));
  return ModelProto.encode(message).finish();
}
