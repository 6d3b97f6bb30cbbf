// A prompt chunk needs the logits of its last position only (ForwardInput.lastLogitsOnly), but
// a decoder graph runs its output projection for every position it is given: at SmolLM2's
// 49,152-token vocabulary that was ~20 % of a 64-token int4 chunk, plus 12 MiB of logits copied
// into JavaScript. At load time the graph gets one more input, which slices the hidden state
// along the sequence axis before the projection:
//
//   hidden ─▶ Slice(starts = kvserve_logits_from, ends = max, axes = [1]) ─▶ MatMul ─▶ (Cast) ─▶ logits
//
// The engine feeds [-1] (the last position) or [0] (all of them). Graphs whose logits do not
// come from one such product are served without it (servedModel, new-tokens-only.ts).
import { ONNX_FIELD, type OnnxNode, editGraph } from './graph.js';
import { type Field, fields, messageField, stringField, text, varintField } from './proto.js';

/** The input the rewrite adds: int64 [1], the first sequence position whose logits are computed. */
export const LOGITS_FROM = 'kvserve_logits_from';

const F = ONNX_FIELD;
const ONNX_INT64 = 7;
/** The projections whose first input is the hidden state [batch, sequence, hidden]. */
const PRODUCTS = new Set(['MatMul', 'MatMulNBits']);
/** Operators between the projection and the output that act on each position alone. */
const PER_POSITION = new Set(['Cast', 'Identity']);

/**
 * The projection computing `logits` — named by its output, which unlike a node name is unique
 * in any valid graph — and the hidden-state tensor it reads, if the graph has that form.
 */
export function logitsProjection(graph: { nodes: readonly OnnxNode[] }): { output: string; hidden: string } | undefined {
  if (graph.nodes.some((n) => n.name === LOGITS_FROM)) return undefined; // rewritten already
  const producer = new Map<string, OnnxNode>();
  for (const node of graph.nodes) for (const out of node.outputs) producer.set(out, node);
  let node = producer.get('logits');
  while (node && PER_POSITION.has(node.opType)) node = producer.get(node.inputs[0]!);
  if (!node || !PRODUCTS.has(node.opType) || !node.inputs[0] || !node.outputs[0]) return undefined;
  return { output: node.outputs[0], hidden: node.inputs[0] };
}

/** A TensorProto of int64 values. */
function int64Tensor(name: string, values: readonly bigint[]): Field[] {
  const raw = new Uint8Array(new BigInt64Array(values).buffer);
  return [varintField(1, values.length), varintField(2, ONNX_INT64), stringField(8, name), { no: 9, wireType: 2, value: 0, data: raw }];
}

/** The logits output's declared shape with its sequence axis (index 1) made symbolic. */
function symbolicSequence(info: readonly Field[]): Field[] {
  return info.map((g) => {
    if (g.no !== F.valueInfoType) return g;
    const type = fields(g.data).map((t) => {
      if (t.no !== F.typeTensor) return t;
      const tensor = fields(t.data).map((x) => {
        if (x.no !== F.tensorTypeShape) return x;
        const dims = fields(x.data);
        let index = 0;
        return messageField(
          F.tensorTypeShape,
          dims.map((d) => (d.no === 1 && index++ === 1 ? messageField(1, [stringField(2, 'kvserve_logits_positions')]) : d)),
        );
      });
      return messageField(F.typeTensor, tensor);
    });
    return messageField(F.valueInfoType, type);
  });
}

/** `model` (a serialized ModelProto) with the LOGITS_FROM input slicing `projection`'s hidden state. */
export function withLogitsFrom(model: Uint8Array, projection: { output: string; hidden: string }): Uint8Array {
  return editGraph(model, logitsFromEdit(projection));
}

/** withLogitsFrom as an edit of the graph's fields. */
export function logitsFromEdit(projection: { output: string; hidden: string }): (graphFields: Field[]) => Field[] {
  return (graphFields) => {
    const sliced = `${projection.hidden}.kvserve_logits`;
    const graph: Field[] = graphFields.map((f) => {
      if (f.no === F.graphNode) {
        const node = fields(f.data);
        const firstOut = node.find((g) => g.no === F.nodeOutput);
        if (!firstOut || text(firstOut) !== projection.output) return f;
        let first = true;
        return messageField(
          F.graphNode,
          node.map((g) => {
            if (g.no !== F.nodeInput || !first) return g;
            first = false;
            return stringField(F.nodeInput, sliced);
          }),
        );
      }
      if (f.no === F.graphOutput) {
        const info = fields(f.data);
        return text(info.find((g) => g.no === F.valueInfoName)!) === 'logits' ? messageField(F.graphOutput, symbolicSequence(info)) : f;
      }
      return f;
    });
    const ends = `${LOGITS_FROM}.ends`;
    const axes = `${LOGITS_FROM}.axes`;
    graph.push(
      messageField(F.graphInitializer, int64Tensor(ends, [2n ** 62n])),
      messageField(F.graphInitializer, int64Tensor(axes, [1n])),
      messageField(F.graphInput, [
        stringField(F.valueInfoName, LOGITS_FROM),
        messageField(F.valueInfoType, [
          messageField(F.typeTensor, [varintField(1, ONNX_INT64), messageField(F.tensorTypeShape, [messageField(1, [varintField(1, 1)])])]),
        ]),
      ]),
      messageField(F.graphNode, [
        stringField(F.nodeInput, projection.hidden),
        stringField(F.nodeInput, LOGITS_FROM),
        stringField(F.nodeInput, ends),
        stringField(F.nodeInput, axes),
        stringField(F.nodeOutput, sliced),
        stringField(F.nodeName, LOGITS_FROM),
        stringField(F.nodeOpType, 'Slice'),
      ]),
    );
    return graph;
  };
}
