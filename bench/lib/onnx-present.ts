// Transformers.js, like Hugging Face Optimum's exports, expects a decoder's present.* outputs to
// hold the whole cache (past + the new tokens) and feeds them back as the next step's
// past_key_values. kvserve's own export emits only the new tokens' keys and values (the engine
// appends them in place), which Transformers.js cannot drive. For the concurrency bench's
// baseline this module rewrites such a graph into the Optimum form without touching a weight:
//
//   past_key_values.i.key ──┬──▶ (the graph) ──▶ present.i.key.new ──┐
//                           └────────────────────────────────────────┴▶ Concat(axis 2) ──▶ present.i.key
//
// It edits the protobuf wire format directly (no ONNX library): a ModelProto is a list of
// tagged fields; we re-encode only the graph's nodes and outputs that change, and the
// initializers (the weights) are copied through as opaque bytes.
import * as ort from 'onnxruntime-node';

/** One protobuf field: its number, wire type and payload (for wire type 2, the bytes inside the length). */
interface Field {
  no: number;
  wireType: number;
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

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

function parse(buf: Uint8Array): Field[] {
  const fields: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const [tag, afterTag] = readVarint(buf, pos);
    const no = Math.floor(tag / 8);
    const wireType = tag % 8;
    let start = afterTag;
    let end: number;
    if (wireType === 0) end = readVarint(buf, afterTag)[1];
    else if (wireType === 1) end = afterTag + 8;
    else if (wireType === 5) end = afterTag + 4;
    else if (wireType === 2) {
      const [length, afterLength] = readVarint(buf, afterTag);
      start = afterLength;
      end = afterLength + length;
    } else throw new Error(`protobuf: unsupported wire type ${wireType}`);
    if (end > buf.length) throw new Error('protobuf: truncated field');
    fields.push({ no, wireType, data: buf.subarray(start, end) });
    pos = end;
  }
  return fields;
}

function encode(fields: readonly Field[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  for (const f of fields) {
    const head = Uint8Array.from([...varint(f.no * 8 + f.wireType), ...(f.wireType === 2 ? varint(f.data.length) : [])]);
    parts.push(head, f.data);
    size += head.length + f.data.length;
  }
  const out = new Uint8Array(size);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

const text = new TextDecoder();
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const stringField = (no: number, s: string): Field => ({ no, wireType: 2, data: bytes(s) });
const messageField = (no: number, fields: Field[]): Field => ({ no, wireType: 2, data: encode(fields) });
const varintField = (no: number, n: number): Field => ({ no, wireType: 0, data: Uint8Array.from(varint(n)) });

// Field numbers from onnx.proto.
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const GRAPH_OUTPUT = 12;
const NODE_INPUT = 1;
const NODE_OUTPUT = 2;
const NODE_NAME = 3;
const NODE_OP_TYPE = 4;
const NODE_ATTRIBUTE = 5;
const ATTR_NAME = 1;
const ATTR_I = 3;
const ATTR_TYPE = 20;
const ATTR_TYPE_INT = 2;
const VALUE_INFO_NAME = 1;
const VALUE_INFO_TYPE = 2;
const TYPE_TENSOR = 1;
const TENSOR_TYPE_SHAPE = 2;

const PRESENT = /^present\.(\d+)\.(key|value)$/;

/**
 * The model with every present.{i}.{key|value} output replaced by the concatenation of
 * past_key_values.{i}.{key|value} and the graph's own output along the sequence axis (2).
 * The outputs' declared shapes are dropped (their sequence length is no longer the input's).
 */
export function concatPresentOutputs(model: Uint8Array): Uint8Array {
  const modelFields = parse(model);
  const graphIndex = modelFields.findIndex((f) => f.no === MODEL_GRAPH);
  if (graphIndex < 0) throw new Error('ONNX model has no graph');
  const graph = parse(modelFields[graphIndex]!.data);
  const renamed: string[] = [];
  const newGraph: Field[] = graph.map((f) => {
    if (f.no === GRAPH_NODE) {
      const node = parse(f.data);
      let changed = false;
      // The graph may read its own present.* further on (attention over the new keys): the
      // producer's output and every such input are renamed alike.
      const outNode = node.map((g) => {
        if ((g.no !== NODE_OUTPUT && g.no !== NODE_INPUT) || !PRESENT.test(text.decode(g.data))) return g;
        changed = true;
        if (g.no === NODE_OUTPUT) renamed.push(text.decode(g.data));
        return stringField(g.no, `${text.decode(g.data)}.new`);
      });
      return changed ? messageField(GRAPH_NODE, outNode) : f;
    }
    if (f.no === GRAPH_OUTPUT) {
      const info = parse(f.data);
      const name = text.decode(info.find((g) => g.no === VALUE_INFO_NAME)?.data ?? new Uint8Array());
      if (!PRESENT.test(name)) return f;
      return messageField(
        GRAPH_OUTPUT,
        info.map((g) => {
          if (g.no !== VALUE_INFO_TYPE) return g;
          return messageField(
            VALUE_INFO_TYPE,
            parse(g.data).map((t) =>
              t.no === TYPE_TENSOR
                ? messageField(
                    TYPE_TENSOR,
                    parse(t.data).filter((s) => s.no !== TENSOR_TYPE_SHAPE),
                  )
                : t,
            ),
          );
        }),
      );
    }
    return f;
  });
  if (renamed.length === 0) throw new Error('ONNX graph has no node producing present.* outputs');
  for (const name of renamed) {
    const [, layer, kind] = PRESENT.exec(name)!;
    newGraph.push(
      messageField(GRAPH_NODE, [
        stringField(NODE_INPUT, `past_key_values.${layer}.${kind}`),
        stringField(NODE_INPUT, `${name}.new`),
        stringField(NODE_OUTPUT, name),
        stringField(NODE_NAME, `bench_concat_${name}`),
        stringField(NODE_OP_TYPE, 'Concat'),
        messageField(NODE_ATTRIBUTE, [stringField(ATTR_NAME, 'axis'), varintField(ATTR_I, 2), varintField(ATTR_TYPE, ATTR_TYPE_INT)]),
      ]),
    );
  }
  modelFields[graphIndex] = messageField(MODEL_GRAPH, newGraph);
  return encode(modelFields);
}

/**
 * Whether the decoder at `file` emits the whole cache in present.* (Optimum's form): one step
 * of one token over a one-token past, and the length of present.0.key's sequence axis.
 */
export async function presentHoldsWholeCache(file: string): Promise<boolean> {
  const session = await ort.InferenceSession.create(file, { logSeverityLevel: 3 });
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const m of session.inputMetadata) {
      if (m.name === 'input_ids' || m.name === 'position_ids') {
        feeds[m.name] = new ort.Tensor('int64', BigInt64Array.from([1n]), [1, 1]);
      } else if (m.name === 'attention_mask') {
        feeds[m.name] = new ort.Tensor('int64', BigInt64Array.from([1n, 1n]), [1, 2]);
      } else if (m.name.startsWith('past_key_values.') && m.isTensor) {
        const [, heads, , dim] = m.shape;
        if (typeof heads !== 'number' || typeof dim !== 'number') throw new Error(`${m.name}: heads and head size are not fixed in the graph`);
        feeds[m.name] =
          m.type === 'float16'
            ? new ort.Tensor('float16', new Uint16Array(heads * dim), [1, heads, 1, dim])
            : new ort.Tensor('float32', new Float32Array(heads * dim), [1, heads, 1, dim]);
      }
    }
    const out = await session.run(feeds);
    const present = out['present.0.key'];
    if (!present) throw new Error('decoder has no present.0.key output');
    return present.dims[2] === 2;
  } finally {
    await session.release();
  }
}
