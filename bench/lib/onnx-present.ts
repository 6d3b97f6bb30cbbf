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
import { ONNX_ATTR_INT, ONNX_FIELD, withoutShape } from '../../src/runtime/onnx/graph.js';
import { type Field, encode, fields as parse, messageField, stringField, text as str, varintField } from '../../src/runtime/onnx/proto.js';

const F = ONNX_FIELD;

const PRESENT = /^present\.(\d+)\.(key|value)$/;

/**
 * The model with every present.{i}.{key|value} output replaced by the concatenation of
 * past_key_values.{i}.{key|value} and the graph's own output along the sequence axis (2).
 * The outputs' declared shapes are dropped (their sequence length is no longer the input's).
 */
export function concatPresentOutputs(model: Uint8Array): Uint8Array {
  const modelFields = parse(model);
  const graphIndex = modelFields.findIndex((f) => f.no === F.modelGraph);
  if (graphIndex < 0) throw new Error('ONNX model has no graph');
  const graph = parse(modelFields[graphIndex]!.data);
  const renamed: string[] = [];
  const newGraph: Field[] = graph.map((f) => {
    if (f.no === F.graphNode) {
      const node = parse(f.data);
      let changed = false;
      // The graph may read its own present.* further on (attention over the new keys): the
      // producer's output and every such input are renamed alike.
      const outNode = node.map((g) => {
        if ((g.no !== F.nodeOutput && g.no !== F.nodeInput) || !PRESENT.test(str(g))) return g;
        changed = true;
        if (g.no === F.nodeOutput) renamed.push(str(g));
        return stringField(g.no, `${str(g)}.new`);
      });
      return changed ? messageField(F.graphNode, outNode) : f;
    }
    if (f.no === F.graphOutput) {
      const info = parse(f.data);
      const name = str(info.find((g) => g.no === F.valueInfoName)!);
      if (!PRESENT.test(name)) return f;
      return messageField(F.graphOutput, withoutShape(info));
    }
    return f;
  });
  if (renamed.length === 0) throw new Error('ONNX graph has no node producing present.* outputs');
  for (const name of renamed) {
    const [, layer, kind] = PRESENT.exec(name)!;
    newGraph.push(
      messageField(F.graphNode, [
        stringField(F.nodeInput, `past_key_values.${layer}.${kind}`),
        stringField(F.nodeInput, `${name}.new`),
        stringField(F.nodeOutput, name),
        stringField(F.nodeName, `bench_concat_${name}`),
        stringField(F.nodeOpType, 'Concat'),
        messageField(F.nodeAttribute, [stringField(F.attrName, 'axis'), varintField(F.attrI, 2), varintField(F.attrType, ONNX_ATTR_INT)]),
      ]),
    );
  }
  modelFields[graphIndex] = messageField(F.modelGraph, newGraph);
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
