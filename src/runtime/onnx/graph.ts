// An ONNX ModelProto read straight from the protobuf wire format (no ONNX library): the
// graph's nodes, its inputs and outputs, and its constant tensors (initializers and Constant
// nodes' values), whose bytes stay views into the model's buffer.
import { type Field, encode, fields, int64s, messageField, readVarint, text } from './proto.js';

/** onnx.proto's field numbers that kvserve's readers and rewriters use. */
export const ONNX_FIELD = {
  modelGraph: 7,
  graphNode: 1,
  graphInitializer: 5,
  graphInput: 11,
  graphOutput: 12,
  nodeInput: 1,
  nodeOutput: 2,
  nodeName: 3,
  nodeOpType: 4,
  nodeAttribute: 5,
  attrName: 1,
  attrI: 3,
  attrType: 20,
  valueInfoName: 1,
  valueInfoType: 2,
  typeTensor: 1,
  tensorTypeShape: 2,
} as const;

/** AttributeProto.AttributeType.INT */
export const ONNX_ATTR_INT = 2;

const str = text;

// onnx.proto's TensorProto.DataType values this reader decodes.
export const ONNX_FLOAT = 1;
export const ONNX_FLOAT16 = 10;

export interface OnnxTensor {
  name: string;
  /** Its bytes live in an external data file (TensorProto.data_location = EXTERNAL). */
  external: boolean;
  dims: number[];
  dataType: number;
  /** float32 values (float16 tensors are widened to float32 by the caller, see tensorValues). */
  raw: Uint8Array | undefined;
  /** Packed float_data (field 4) or int32_data (field 5, float16 bits), when raw_data is absent. */
  packed: Uint8Array | undefined;
}

export interface OnnxNode {
  name: string;
  opType: string;
  inputs: string[];
  outputs: string[];
  /** Integer-list attributes (e.g. Transpose's perm). */
  ints: Map<string, number[]>;
  /** Integer attributes (e.g. Concat's axis). */
  int: Map<string, number>;
  /** Tensor attributes (Constant's value). */
  tensors: Map<string, OnnxTensor>;
}

export interface OnnxGraph {
  nodes: OnnxNode[];
  inputs: string[];
  outputs: string[];
  /** Initializers and Constant nodes' values, by the name the graph uses for them. */
  constants: Map<string, OnnxTensor>;
}

function tensor(buf: Uint8Array): OnnxTensor {
  const fs = fields(buf);
  const name = fs.find((f) => f.no === 8);
  return {
    name: name ? str(name) : '',
    external: fs.some((f) => f.no === 14 && f.value === 1),
    dims: int64s(fs, 1),
    dataType: fs.find((f) => f.no === 2)?.value ?? 0,
    raw: fs.find((f) => f.no === 9)?.data,
    packed: fs.find((f) => (f.no === 4 || f.no === 5) && f.wireType === 2)?.data,
  };
}

/** A NodeProto's name, type, inputs, outputs and attributes. */
export function readNode(buf: Uint8Array): OnnxNode {
  const fs = fields(buf);
  const n: OnnxNode = { name: '', opType: '', inputs: [], outputs: [], ints: new Map(), int: new Map(), tensors: new Map() };
  for (const f of fs) {
    if (f.no === 1) n.inputs.push(str(f));
    else if (f.no === 2) n.outputs.push(str(f));
    else if (f.no === 3) n.name = str(f);
    else if (f.no === 4) n.opType = str(f);
    else if (f.no === 5) {
      const a = fields(f.data);
      const name = str(a.find((g) => g.no === 1)!);
      const t = a.find((g) => g.no === 5);
      if (t) n.tensors.set(name, tensor(t.data));
      const ints = int64s(a, 8);
      if (ints.length > 0) n.ints.set(name, ints);
      const i = a.find((g) => g.no === 3 && g.wireType === 0);
      if (i) n.int.set(name, i.value);
    }
  }
  return n;
}

/** Parses a serialized ModelProto. Tensor bytes are views into `model` (keep it alive). */
export function readOnnxGraph(model: Uint8Array): OnnxGraph {
  const graphField = fields(model).find((f) => f.no === 7);
  if (!graphField) throw new Error('ONNX model has no graph');
  const g: OnnxGraph = { nodes: [], inputs: [], outputs: [], constants: new Map() };
  const valueName = (f: Field): string => str(fields(f.data).find((x) => x.no === 1)!);
  for (const f of fields(graphField.data)) {
    if (f.no === 1) g.nodes.push(readNode(f.data));
    else if (f.no === 5) {
      const t = tensor(f.data);
      g.constants.set(t.name, t);
    } else if (f.no === 11) g.inputs.push(valueName(f));
    else if (f.no === 12) g.outputs.push(valueName(f));
  }
  for (const n of g.nodes) {
    const value = n.tensors.get('value');
    if (n.opType === 'Constant' && value && n.outputs[0]) g.constants.set(n.outputs[0], { ...value, name: n.outputs[0] });
  }
  return g;
}

/** An aligned copy (Buffer.slice would return a view, possibly at an odd offset). */
const copy = (b: Uint8Array): ArrayBuffer => new Uint8Array(b).buffer;

/** A float32 or float16 tensor's values as float32 (a fresh, aligned copy). */
export function tensorValues(t: OnnxTensor, toFloat32: (half: Uint16Array) => Float32Array): Float32Array {
  const count = t.dims.reduce((a, b) => a * b, 1);
  const bytes = t.raw ?? t.packed;
  if (t.external) throw new Error(`${t.name}: tensor with external data: not supported (export the model in one file)`);
  if (!bytes) throw new Error(`${t.name}: tensor has no data`);
  if (t.dataType === ONNX_FLOAT) {
    if (bytes.length !== count * 4) throw new Error(`${t.name}: ${bytes.length} bytes for ${count} float32 values`);
    return new Float32Array(copy(bytes));
  }
  if (t.dataType === ONNX_FLOAT16) {
    if (t.raw) {
      if (bytes.length !== count * 2) throw new Error(`${t.name}: ${bytes.length} bytes for ${count} float16 values`);
      return toFloat32(new Uint16Array(copy(bytes)));
    }
    // int32_data holds one float16 bit pattern per varint.
    const half = new Uint16Array(count);
    for (let pos = 0, i = 0; pos < bytes.length; i++) {
      const [v, next] = readVarint(bytes, pos);
      half[i] = v;
      pos = next;
    }
    return toFloat32(half);
  }
  throw new Error(`${t.name}: ONNX data type ${t.dataType} is not a float tensor`);
}

/** A ValueInfoProto's fields with its tensor shape dropped (an output whose dimensions a rewrite changed). */
export function withoutShape(info: readonly Field[]): Field[] {
  const F = ONNX_FIELD;
  return info.map((g) =>
    g.no !== F.valueInfoType
      ? g
      : messageField(
          F.valueInfoType,
          fields(g.data).map((t) =>
            t.no === F.typeTensor
              ? messageField(
                  F.typeTensor,
                  fields(t.data).filter((x) => x.no !== F.tensorTypeShape),
                )
              : t,
          ),
        ),
  );
}

/** `model` (a serialized ModelProto) with `edits` applied in turn to its graph's fields, encoded once. */
export function editGraph(model: Uint8Array, ...edits: ReadonlyArray<(graph: Field[]) => Field[]>): Uint8Array {
  const modelFields = fields(model);
  const graphIndex = modelFields.findIndex((f) => f.no === ONNX_FIELD.modelGraph);
  if (graphIndex < 0) throw new Error('ONNX model has no graph');
  let graph = fields(modelFields[graphIndex]!.data);
  for (const edit of edits) graph = edit(graph);
  modelFields[graphIndex] = messageField(ONNX_FIELD.modelGraph, graph);
  return encode(modelFields);
}
