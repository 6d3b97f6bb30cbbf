// What an ONNX file says about itself without reading its weights: the graph's nodes and
// outputs, and the external data files it reads weights from (TensorProto.external_data
// "location"). The protobuf wire format is walked with positioned reads and the weights a
// model carries inline are skipped over, so this costs a few reads per tensor, not the file.
// The loader checks the graph's form (new-tokens-only.ts); the fingerprint must cover the
// external files, or a changed .data file would pass for the old model.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { basename } from 'node:path';
import { ONNX_FIELD, type OnnxNode, readNode } from './graph.js';
import { encode, fields, messageField, stringField, text, varintField } from './proto.js';

// (message, field number) → the message type a length-delimited field holds, on every path
// from ModelProto to a TensorProto (subgraphs, functions, sparse and attribute tensors).
const CHILDREN: Record<string, Record<number, string>> = {
  model: { 7: 'graph', 20: 'training', 25: 'function' },
  training: { 1: 'graph', 2: 'graph' },
  function: { 7: 'node' },
  graph: { 1: 'node', 5: 'tensor', 15: 'sparse' },
  node: { 5: 'attribute' },
  attribute: { 5: 'tensor', 6: 'graph', 10: 'tensor', 11: 'graph', 22: 'sparse', 23: 'sparse' },
  sparse: { 1: 'tensor', 2: 'tensor' },
  tensor: { 13: 'entry' },
};
const WINDOW = 1 << 16;

class FileReader {
  readonly size: number;
  readonly #fd: number;
  readonly #buf = Buffer.alloc(WINDOW);
  #start = 0;
  #end = 0;

  constructor(fd: number) {
    this.#fd = fd;
    this.size = fstatSync(fd).size;
  }

  byte(pos: number): number {
    if (pos < this.#start || pos >= this.#end) {
      if (pos >= this.size) throw new Error(`protobuf runs past the end of the file at ${pos}`);
      this.#start = pos;
      this.#end = pos + readSync(this.#fd, this.#buf, 0, WINDOW, pos);
    }
    return this.#buf[pos - this.#start]!;
  }

  /** A copy of `length` bytes at `pos`: from the window when it holds them, else one read. */
  bytes(pos: number, length: number): Buffer {
    if (pos + length > this.size) throw new Error(`protobuf runs past the end of the file at ${pos + length}`);
    if (length <= WINDOW && (pos < this.#start || pos + length > this.#end)) {
      this.#start = pos;
      this.#end = pos + readSync(this.#fd, this.#buf, 0, WINDOW, pos);
    }
    if (pos >= this.#start && pos + length <= this.#end) return Buffer.from(this.#buf.subarray(pos - this.#start, pos + length - this.#start));
    const out = Buffer.alloc(length);
    for (let at = 0; at < length; ) {
      const n = readSync(this.#fd, out, at, length - at, pos + at);
      if (n === 0) throw new Error(`protobuf runs past the end of the file at ${pos + at}`);
      at += n;
    }
    return out;
  }

  /** A varint at pos: [value, position after it]. Values beyond 2^53 lose precision, which no length reaches. */
  varint(pos: number): [number, number] {
    let value = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      const b = this.byte(pos++);
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return [value, pos];
    }
    throw new Error(`varint too long at ${pos}`);
  }
}

export interface OnnxFileScan {
  /** The main graph's nodes (attributes included, tensor attributes read in full). */
  nodes: OnnxNode[];
  /** The main graph's output names. */
  outputs: string[];
  /** The `location` of every externally stored tensor, as written (relative to the file's directory), sorted. */
  externalData: string[];
  /** Size of the file itself (its inline weights included). */
  bytes: number;
}

interface Found {
  external: Set<string>;
  nodes: OnnxNode[];
  outputs: string[];
}

/** A field as it lies in the file: where it starts (its tag), and where its payload starts and ends. */
interface Located {
  no: number;
  wireType: number;
  from: number;
  start: number;
  end: number;
}

/** The fields of the message at [start, end) of a `type` (named in errors). */
function locate(r: FileReader, start: number, end: number, type = 'message'): Located[] {
  const out: Located[] = [];
  for (let pos = start; pos < end; ) {
    const [tag, p] = r.varint(pos);
    const no = Math.floor(tag / 8);
    const wireType = tag % 8;
    let from = p;
    let to: number;
    if (wireType === 0) to = r.varint(p)[1];
    else if (wireType === 1) to = p + 8;
    else if (wireType === 5) to = p + 4;
    else if (wireType === 2) {
      const [length, after] = r.varint(p);
      from = after;
      to = after + length;
    } else throw new Error(`unsupported protobuf wire type ${wireType} in a ${type}`);
    if (to > end) throw new Error(`field ${no} of a ${type} runs past its message`);
    out.push({ no, wireType, from: pos, start: from, end: to });
    pos = to;
  }
  return out;
}

function walk(r: FileReader, type: string, start: number, end: number, found: Found, top = false): void {
  let key: string | undefined;
  let value: string | undefined;
  for (const f of locate(r, start, end, type)) {
    if (f.wireType !== 2) continue;
    const child = CHILDREN[type]?.[f.no];
    if (child) walk(r, child, f.start, f.end, found, type === 'model' && child === 'graph');
    const payload = () => r.bytes(f.start, f.end - f.start);
    if (top && f.no === 1) found.nodes.push(readNode(payload()));
    if (top && f.no === 12) found.outputs.push(text(fields(payload()).find((g) => g.no === 1)!));
    if (type === 'entry' && f.no === 1) key = payload().toString('utf8');
    if (type === 'entry' && f.no === 2) value = payload().toString('utf8');
  }
  if (type === 'entry' && key === 'location' && value !== undefined) found.external.add(value);
}

/** Reads the graph's nodes and outputs and its external data locations. */
export function scanOnnxFile(onnxPath: string): OnnxFileScan {
  const fd = openSync(onnxPath, 'r');
  try {
    const reader = new FileReader(fd);
    const found: Found = { external: new Set(), nodes: [], outputs: [] };
    walk(reader, 'model', 0, reader.size, found);
    return { nodes: found.nodes, outputs: found.outputs, externalData: [...found.external].sort(), bytes: reader.size };
  } finally {
    closeSync(fd);
  }
}

/** The `location` of every externally stored tensor, as written in the graph (relative to its directory), sorted. */
export function externalDataLocations(onnxPath: string): string[] {
  return scanOnnxFile(onnxPath).externalData;
}

const entry = (key: string, value: string) => messageField(13, [stringField(1, key), stringField(2, value)]);

/**
 * The ModelProto in `onnxPath` with the bytes of every main-graph initializer of at least
 * `minBytes` left in the file: such a tensor becomes an external-data reference to the file
 * itself (location = its name, offset and length of the bytes). onnxruntime reads them from
 * there when given the file's directory (`session.model_external_initializers_file_folder_path`),
 * so a graph rewritten in memory costs the graph's size, not a second copy of the weights.
 */
export function modelByReference(onnxPath: string, minBytes = 64 * 1024): { model: Uint8Array; referencedBytes: number } {
  const fd = openSync(onnxPath, 'r');
  try {
    const r = new FileReader(fd);
    const raw = (f: Located) => r.bytes(f.from, f.end - f.from);
    const location = basename(onnxPath);
    let referencedBytes = 0;
    const tensor = (f: Located): Uint8Array => {
      const parts = locate(r, f.start, f.end, 'tensor');
      const typeField = parts.find((p) => p.no === 2 && p.wireType === 0);
      const dataType = typeField ? r.varint(typeField.start)[0] : 0;
      // raw_data, or packed float_data (FLOAT) / double_data (DOUBLE): on the wire these are
      // already the little-endian bytes external data holds.
      const data = parts.find((p) => p.wireType === 2 && (p.no === 9 || (p.no === 4 && dataType === 1) || (p.no === 10 && dataType === 11)));
      // Already external (field 13 entries, data_location 14), or small: copied as it is.
      if (!data || data.end - data.start < minBytes || parts.some((p) => p.no === 13 || p.no === 14)) return raw(f);
      referencedBytes += data.end - data.start;
      const reference = encode([
        varintField(14, 1),
        entry('location', location),
        entry('offset', String(data.start)),
        entry('length', String(data.end - data.start)),
      ]);
      return encode([{ no: f.no, wireType: 2, value: 0, data: Buffer.concat([...parts.filter((p) => p !== data).map(raw), reference]) }]);
    };
    const model = Buffer.concat(
      locate(r, 0, r.size, 'model').map((f) => {
        if (f.no !== ONNX_FIELD.modelGraph || f.wireType !== 2) return raw(f);
        const graph = locate(r, f.start, f.end, 'graph').map((g) => (g.no === ONNX_FIELD.graphInitializer && g.wireType === 2 ? tensor(g) : raw(g)));
        return encode([{ no: f.no, wireType: 2, value: 0, data: Buffer.concat(graph) }]);
      }),
    );
    return { model, referencedBytes };
  } finally {
    closeSync(fd);
  }
}
