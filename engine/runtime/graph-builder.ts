// A small builder for ONNX graphs. Model code describes its forward pass with it
// (one method per ONNX op it uses) and gets back serialized ModelProto bytes that
// onnxruntime loads directly. Generic: it knows nothing about any model.
import { AttributeType, ModelProto, OnnxDataType, type ElemType } from './onnx-proto.js';

export type Dim = number | string;
export type AttrValue = number | number[] | string | { float: number } | { floats: number[] };

/** A named tensor inside a graph under construction. */
export class Value {
  constructor(readonly name: string) {}
}

interface NodeSpec {
  opType: string;
  domain: string;
  input: string[];
  output: string[];
  name: string;
  attribute: object[];
}

interface TensorSpec {
  name: string;
  dims: number[];
  dataType: number;
  rawData: Uint8Array;
}

interface ValueInfoSpec {
  name: string;
  type: { tensorType: { elemType: number; shape: { dim: object[] } } };
}

export const OPSET = 17;

function valueInfo(name: string, type: ElemType, shape: Dim[]): ValueInfoSpec {
  return {
    name,
    type: {
      tensorType: {
        elemType: OnnxDataType[type],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, value: AttrValue): object {
  if (typeof value === 'string') return { name, type: AttributeType.string, s: Buffer.from(value) };
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: use { float } for non-integer ${value}`);
    return { name, type: AttributeType.int, i: value };
  }
  if (Array.isArray(value)) return { name, type: AttributeType.ints, ints: value };
  if ('float' in value) return { name, type: AttributeType.float, f: value.float };
  return { name, type: AttributeType.floats, floats: value.floats };
}

export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly initializers: TensorSpec[] = [];
  private readonly inputs: ValueInfoSpec[] = [];
  private readonly outputs: ValueInfoSpec[] = [];
  private counter = 0;

  constructor(readonly name: string) {}

  private fresh(hint: string): string {
    return `${hint}_${this.counter++}`;
  }

  /** Declares a graph input. String dims are symbolic (dynamic). */
  input(name: string, type: ElemType, shape: Dim[]): Value {
    this.inputs.push(valueInfo(name, type, shape));
    return new Value(name);
  }

  /** Declares `value` as a graph output under `name` (through an Identity if renamed). */
  output(value: Value, name: string, type: ElemType, shape: Dim[]): void {
    let source = value.name;
    if (source !== name) {
      this.nodes.push({ opType: 'Identity', domain: '', input: [source], output: [name], name: this.fresh('out'), attribute: [] });
      source = name;
    }
    this.outputs.push(valueInfo(source, type, shape));
  }

  /** Embeds a constant tensor (an initializer). Only for small, config-derived data. */
  constant(data: Float32Array | Int32Array | BigInt64Array | Uint8Array, dims: number[], type: ElemType): Value {
    const name = this.fresh('const');
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.initializers.push({ name, dims, dataType: OnnxDataType[type], rawData: Uint8Array.from(bytes) });
    return new Value(name);
  }

  float(x: number): Value {
    return this.constant(Float32Array.of(x), [], 'float');
  }

  floats(xs: number[], dims: number[] = [xs.length]): Value {
    return this.constant(Float32Array.from(xs), dims, 'float');
  }

  int64(x: number): Value {
    return this.constant(BigInt64Array.of(BigInt(x)), [], 'int64');
  }

  int64s(xs: number[]): Value {
    return this.constant(BigInt64Array.from(xs.map((x) => BigInt(x))), [xs.length], 'int64');
  }

  /** Adds one node; returns its outputs. An empty-string input marks an omitted optional input. */
  node(opType: string, inputs: (Value | '')[], attrs: Record<string, AttrValue> = {}, outputCount = 1, domain = ''): Value[] {
    const outputs = Array.from({ length: outputCount }, () => this.fresh(opType));
    this.nodes.push({
      opType,
      domain,
      input: inputs.map((v) => (v === '' ? '' : v.name)),
      output: outputs,
      name: this.fresh(`n_${opType}`),
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outputs.map((n) => new Value(n));
  }

  op(opType: string, inputs: (Value | '')[], attrs: Record<string, AttrValue> = {}): Value {
    return this.node(opType, inputs, attrs)[0];
  }

  // ---- the ops model code uses, named as in ONNX ----
  add(a: Value, b: Value): Value {
    return this.op('Add', [a, b]);
  }
  sub(a: Value, b: Value): Value {
    return this.op('Sub', [a, b]);
  }
  mul(a: Value, b: Value): Value {
    return this.op('Mul', [a, b]);
  }
  div(a: Value, b: Value): Value {
    return this.op('Div', [a, b]);
  }
  matmul(a: Value, b: Value): Value {
    return this.op('MatMul', [a, b]);
  }
  sigmoid(a: Value): Value {
    return this.op('Sigmoid', [a]);
  }
  exp(a: Value): Value {
    return this.op('Exp', [a]);
  }
  neg(a: Value): Value {
    return this.op('Neg', [a]);
  }
  sqrt(a: Value): Value {
    return this.op('Sqrt', [a]);
  }
  reciprocal(a: Value): Value {
    return this.op('Reciprocal', [a]);
  }
  cos(a: Value): Value {
    return this.op('Cos', [a]);
  }
  sin(a: Value): Value {
    return this.op('Sin', [a]);
  }
  softmax(a: Value, axis = -1): Value {
    return this.op('Softmax', [a], { axis });
  }
  cast(a: Value, to: ElemType): Value {
    return this.op('Cast', [a], { to: OnnxDataType[to] });
  }
  reshape(a: Value, shape: number[] | Value): Value {
    return this.op('Reshape', [a, Array.isArray(shape) ? this.int64s(shape) : shape]);
  }
  transpose(a: Value, perm: number[]): Value {
    return this.op('Transpose', [a], { perm });
  }
  unsqueeze(a: Value, axes: number[]): Value {
    return this.op('Unsqueeze', [a, this.int64s(axes)]);
  }
  squeeze(a: Value, axes: number[]): Value {
    return this.op('Squeeze', [a, this.int64s(axes)]);
  }
  concat(values: Value[], axis: number): Value {
    return this.op('Concat', values, { axis });
  }
  gather(data: Value, indices: Value, axis = 0): Value {
    return this.op('Gather', [data, indices], { axis });
  }
  where(cond: Value, a: Value, b: Value): Value {
    return this.op('Where', [cond, a, b]);
  }
  less(a: Value, b: Value): Value {
    return this.op('Less', [a, b]);
  }
  lessOrEqual(a: Value, b: Value): Value {
    return this.op('LessOrEqual', [a, b]);
  }
  greater(a: Value, b: Value): Value {
    return this.op('Greater', [a, b]);
  }
  and(a: Value, b: Value): Value {
    return this.op('And', [a, b]);
  }
  or(a: Value, b: Value): Value {
    return this.op('Or', [a, b]);
  }
  not(a: Value): Value {
    return this.op('Not', [a]);
  }
  shape(a: Value): Value {
    return this.op('Shape', [a]);
  }
  /** One dimension of `a` as an int64 [1] tensor. */
  dim(a: Value, axis: number): Value {
    return this.op('Shape', [a], axis === -1 ? { start: -1 } : { start: axis, end: axis + 1 });
  }
  /** A 1-D int64 shape from fixed sizes and dims taken from other values (see dim). */
  shapeOf(parts: (number | Value)[]): Value {
    const pieces = parts.map((p) => (typeof p === 'number' ? this.int64s([p]) : p));
    return pieces.length === 1 ? pieces[0] : this.concat(pieces, 0);
  }
  range(start: Value, limit: Value, delta: Value): Value {
    return this.op('Range', [start, limit, delta]);
  }
  expand(a: Value, shape: Value): Value {
    return this.op('Expand', [a, shape]);
  }
  slice(a: Value, starts: number[], ends: number[], axes: number[]): Value {
    return this.op('Slice', [a, this.int64s(starts), this.int64s(ends), this.int64s(axes)]);
  }
  reduceSum(a: Value, axes: number[], keepdims = true): Value {
    return this.op('ReduceSum', [a, this.int64s(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  reduceMean(a: Value, axes: number[], keepdims = true): Value {
    return this.op('ReduceMean', [a], { axes, keepdims: keepdims ? 1 : 0 });
  }
  reduceMax(a: Value, axes: number[], keepdims = true): Value {
    return this.op('ReduceMax', [a], { axes, keepdims: keepdims ? 1 : 0 });
  }
  reduceLogSumExp(a: Value, axes: number[], keepdims = true): Value {
    return this.op('ReduceLogSumExp', [a], { axes, keepdims: keepdims ? 1 : 0 });
  }

  /** Serializes the graph into ModelProto bytes. */
  toModel(): Uint8Array {
    const model = {
      irVersion: 8,
      producerName: 'panorama',
      // onnxruntime's contrib ops (MatMulNBits) live in com.microsoft, version 1.
      opsetImport: [{ domain: '', version: OPSET }, ...(this.nodes.some((n) => n.domain === 'com.microsoft') ? [{ domain: 'com.microsoft', version: 1 }] : [])],
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    };
    const err = ModelProto.verify(model);
    if (err) throw new Error(`invalid ONNX model ${this.name}: ${err}`);
    return ModelProto.encode(ModelProto.fromObject(model)).finish();
  }
}
