// Chains graphs into one: part k's input `link.input` is fed by part k−1's output
// `link.output`, inputs named in `shared` are one input of the whole, and every other
// name of part k gets the prefix `${prefixes[k]}` (its own inputs, outputs, weights and
// nodes). On CUDA, where each session run copies its inputs from host memory and its
// outputs back and then waits for the device, a run of consecutive layers as one
// session keeps the activations between them on the device and pays that cost once.
import { ModelProto } from './onnx-proto.js';

interface Named {
  name: string;
}

interface NodeProto extends Named {
  input: string[];
  output: string[];
}

interface GraphProto extends Named {
  node: NodeProto[];
  initializer: Named[];
  input: Named[];
  output: Named[];
  valueInfo: Named[];
}

export interface ChainLink {
  /** The input of each later part fed by the previous part's `output` (e.g. x ← x_out). */
  input: string;
  output: string;
}

export function composeChain(models: readonly Uint8Array[], prefixes: readonly string[], link: ChainLink, shared: readonly string[] = []): Uint8Array {
  if (models.length === 0 || models.length !== prefixes.length) throw new Error('composeChain: one prefix per model, at least one model');
  if (new Set(prefixes).size !== prefixes.length) throw new Error('composeChain: prefixes must differ');
  const decoded = models.map((model) => ModelProto.decode(model) as unknown as { graph: GraphProto });
  const whole = decoded[0];
  const graph: GraphProto = { name: `chain_${whole.graph.name}`, node: [], initializer: [], input: [], output: [], valueInfo: [] };
  const sharedSeen = new Set<string>();
  decoded.forEach(({ graph: part }, k) => {
    const last = k === decoded.length - 1;
    const rename = (name: string): string => {
      if (name === '' || shared.includes(name)) return name;
      if (name === link.input) return k === 0 ? name : `${prefixes[k - 1]}${link.output}`;
      if (name === link.output && last) return name;
      return `${prefixes[k]}${name}`;
    };
    for (const node of part.node) {
      node.input = node.input.map(rename);
      node.output = node.output.map(rename);
      node.name = `${prefixes[k]}${node.name}`;
      graph.node.push(node);
    }
    for (const initializer of part.initializer) {
      initializer.name = rename(initializer.name);
      graph.initializer.push(initializer);
    }
    for (const info of part.valueInfo) {
      info.name = rename(info.name);
      graph.valueInfo.push(info);
    }
    for (const input of part.input) {
      if (input.name === link.input && k > 0) continue; // fed inside the chain
      if (shared.includes(input.name)) {
        if (sharedSeen.has(input.name)) continue;
        sharedSeen.add(input.name);
      }
      input.name = rename(input.name);
      graph.input.push(input);
    }
    for (const output of part.output) {
      const isLink = output.name === link.output;
      output.name = rename(output.name);
      if (!isLink || last) graph.output.push(output);
    }
  });
  (whole as { graph: GraphProto }).graph = graph;
  return ModelProto.encode(whole).finish();
}
