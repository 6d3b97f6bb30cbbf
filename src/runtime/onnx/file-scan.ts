// What an ONNX file says about itself without reading its weights: the graph's nodes and
// outputs, and the external data files it reads weights from (TensorProto.external_data
// "location"). The protobuf wire format is walked with positioned reads and the weights a
// model carries inline are skipped over, so this costs a few reads per tensor, not the file.
// The loader checks the graph's form (new-tokens-only.ts); the fingerprint must cover the
// external files, or a changed .data file would pass for the old model.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { type OnnxNode, readNode } from './graph.js';
import { fields, text } from './proto.js';

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

  bytes(pos: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = this.byte(pos + i);
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

function walk(r: FileReader, type: string, start: number, end: number, found: Found, top = false): void {
  let pos = start;
  let key: string | undefined;
  let value: string | undefined;
  while (pos < end) {
    const [tag, p] = r.varint(pos);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) pos = r.varint(p)[1];
    else if (wire === 1) pos = p + 8;
    else if (wire === 5) pos = p + 4;
    else if (wire === 2) {
      const [length, from] = r.varint(p);
      pos = from + length;
      if (pos > end) throw new Error(`field ${field} of a ${type} runs past its message`);
      const child = CHILDREN[type]?.[field];
      if (child) walk(r, child, from, pos, found, type === 'model' && child === 'graph');
      if (top && field === 1) found.nodes.push(readNode(r.bytes(from, length)));
      if (top && field === 12) found.outputs.push(text(fields(r.bytes(from, length)).find((f) => f.no === 1)!));
      if (type === 'entry' && field === 1) key = r.bytes(from, length).toString('utf8');
      if (type === 'entry' && field === 2) value = r.bytes(from, length).toString('utf8');
    } else throw new Error(`unsupported protobuf wire type ${wire} in a ${type}`);
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
