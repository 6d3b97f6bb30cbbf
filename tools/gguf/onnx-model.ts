// Reads what the GGUF converter needs from an ONNX ModelProto, straight from the protobuf wire
// format (no ONNX library): the graph's nodes, its inputs and outputs, and its constant tensors
// (initializers and Constant nodes' values), whose bytes stay views into the file's buffer.

/** One protobuf field: number, wire type and payload (the bytes inside the length for wire type 2). */
interface Field {
  no: number;
  wireType: number;
  /** Wire type 0: the varint's value; otherwise unused. */
  value: number;
  data: Uint8Array;
}

function readVarint(buf: Uint8Array, pos: number): [value: number, next: number] {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (pos >= buf.length) throw new Error('protobuf: truncated varint');
    const byte = buf[pos++]!;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return [value, pos];
    scale *= 128;
  }
}

function fields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const [tag, afterTag] = readVarint(buf, pos);
    const no = Math.floor(tag / 8);
    const wireType = tag % 8;
    let start = afterTag;
    let end: number;
    let value = 0;
    if (wireType === 0) [value, end] = readVarint(buf, afterTag);
    else if (wireType === 1) end = afterTag + 8;
    else if (wireType === 5) end = afterTag + 4;
    else if (wireType === 2) {
      const [length, afterLength] = readVarint(buf, afterTag);
      start = afterLength;
      end = afterLength + length;
    } else throw new Error(`protobuf: unsupported wire type ${wireType}`);
    if (end > buf.length) throw new Error('protobuf: truncated field');
    out.push({ no, wireType, value, data: buf.subarray(start, end) });
    pos = end;
  }
  return out;
}

const utf8 = new TextDecoder();
const str = (f: Field): string => utf8.decode(f.data);

/** Repeated int64 (dims, ints): packed (wire type 2) or one varint per field. */
function int64s(fs: Field[], no: number): number[] {
  const out: number[] = [];
  for (const f of fs) {
    if (f.no !== no) continue;
    if (f.wireType === 0) out.push(f.value);
    else
      for (let pos = 0; pos < f.data.length; ) {
        const [v, next] = readVarint(f.data, pos);
        out.push(v);
        pos = next;
      }
  }
  return out;
}

// onnx.proto's TensorProto.DataType values this reader decodes.
export const ONNX_FLOAT = 1;
export const ONNX_FLOAT16 = 10;

export interface OnnxTensor {
  name: string;
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
  if (fs.some((f) => f.no === 14 && f.value === 1)) throw new Error('ONNX tensor with external data: not supported (export the model in one file)');
  const name = fs.find((f) => f.no === 8);
  return {
    name: name ? str(name) : '',
    dims: int64s(fs, 1),
    dataType: fs.find((f) => f.no === 2)?.value ?? 0,
    raw: fs.find((f) => f.no === 9)?.data,
    packed: fs.find((f) => (f.no === 4 || f.no === 5) && f.wireType === 2)?.data,
  };
}

function node(buf: Uint8Array): OnnxNode {
  const fs = fields(buf);
  const n: OnnxNode = { name: '', opType: '', inputs: [], outputs: [], ints: new Map(), tensors: new Map() };
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
    if (f.no === 1) g.nodes.push(node(f.data));
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
