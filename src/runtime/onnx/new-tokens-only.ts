// Optimum-form decoders (Hugging Face Optimum, Transformers.js exports) return present.* as
// Concat(past, new): the whole cache, every step. onnxruntime-node copies every output into
// JavaScript, so each decode step would copy the entire cache — O(N) per token, O(N²) per
// answer. At load time such a graph is rewritten so that present.* is the Concat's second
// input, the new tokens' keys and values only; the Concat stays for the attention that reads it.
//
//   past_key_values.i.key ─┐                                ┌─▶ (attention …)
//   new key ───────────────┴─▶ Concat ─▶ present.i.key.all ─┘   (removed if nothing reads it)
//   new key ─▶ Identity ─▶ present.i.key                       (the graph output)
import { dirname } from 'node:path';
import { modelByReference, scanOnnxFile } from './file-scan.js';
import { ONNX_FIELD, type OnnxNode, editGraph, readOnnxGraph, withoutShape } from './graph.js';
import { logitsFromEdit, logitsProjection } from './last-logits.js';
import { type Field, fields, messageField, stringField, text } from './proto.js';

const PRESENT = /^present\.(\d+)\.(key|value)$/;
const F = ONNX_FIELD;

/** For each present.* output, the tensor holding only the new tokens' part, if the graph is in Optimum's form. */
export function concatSources(graph: { nodes: readonly OnnxNode[]; outputs: readonly string[] }): Map<string, string> | undefined {
  const producer = new Map<string, OnnxNode>();
  for (const node of graph.nodes) for (const out of node.outputs) producer.set(out, node);
  const sources = new Map<string, string>();
  for (const name of graph.outputs) {
    const m = PRESENT.exec(name);
    if (!m) continue;
    const node = producer.get(name);
    const axis = node?.int.get('axis');
    const past = `past_key_values.${m[1]}.${m[2]}`;
    if (node?.opType !== 'Concat' || node.inputs.length !== 2 || node.inputs[0] !== past || (axis !== 2 && axis !== -2)) return undefined;
    sources.set(name, node.inputs[1]!);
  }
  return sources.size > 0 ? sources : undefined;
}

/**
 * The model with every present.* output returning only the new tokens' keys and values, or
 * undefined when the graph is not in Optimum's Concat form (then it is served as it is).
 */
export function newTokensOnly(model: Uint8Array, sources = concatSources(readOnnxGraph(model))): Uint8Array | undefined {
  return sources ? editGraph(model, newTokensOnlyEdit(sources)) : undefined;
}

/** newTokensOnly as an edit of the graph's fields. */
function newTokensOnlyEdit(sources: ReadonlyMap<string, string>): (graphFields: Field[]) => Field[] {
  return (graphFields) => {
    const renamed = (name: string) => (sources.has(name) ? `${name}.all` : name);
    // present.* read inside the graph (attention over past + new): its Concat stays. Otherwise
    // the Concat only fed the output and goes too: kept, onnxruntime would still run it,
    // copying the whole cache every step.
    const read = new Set<string>();
    for (const f of graphFields) {
      if (f.no !== F.graphNode) continue;
      for (const g of fields(f.data)) if (g.no === F.nodeInput && sources.has(text(g))) read.add(text(g));
    }
    const graph: Field[] = graphFields.flatMap((f): Field[] => {
      if (f.no === F.graphNode) {
        const node = fields(f.data);
        const produces = node.filter((g) => g.no === F.nodeOutput).map(text);
        if (produces.length === 1 && sources.has(produces[0]!) && !read.has(produces[0]!)) return [];
        const touches = node.some((g) => (g.no === F.nodeInput || g.no === F.nodeOutput) && sources.has(text(g)));
        if (!touches) return [f];
        return [
          messageField(
            F.graphNode,
            node.map((g) => (g.no === F.nodeInput || g.no === F.nodeOutput ? stringField(g.no, renamed(text(g))) : g)),
          ),
        ];
      }
      if (f.no === F.graphOutput) {
        const info = fields(f.data);
        const name = text(info.find((g) => g.no === F.valueInfoName)!);
        // Its sequence axis is now the new tokens', not past + new: the declared shape goes.
        if (!sources.has(name)) return [f];
        return [messageField(F.graphOutput, withoutShape(info))];
      }
      return [f];
    });
    for (const [output, source] of sources) {
      graph.push(
        messageField(F.graphNode, [
          stringField(F.nodeInput, source),
          stringField(F.nodeOutput, output),
          stringField(F.nodeName, `kvserve_new_tokens_${output}`),
          stringField(F.nodeOpType, 'Identity'),
        ]),
      );
    }
    return graph;
  };
}

/**
 * What to open for the decoder at `file`: the model's bytes with its inline weights left in the
 * file by reference (file-scan.ts modelByReference), rewritten if it is in Optimum's form and
 * given the logits cut (last-logits.ts) where its logits allow, and the directory onnxruntime
 * resolves external weights against (`session.model_external_initializers_file_folder_path`).
 * Opening by reference also beats opening the file: onnxruntime parsed a 652 MB float32 graph
 * with its weights into 955 MiB resident (1,062 at peak) against 645 (753) by reference.
 */
export function servedModel(file: string): {
  model: Uint8Array;
  externalDataDir: string | undefined;
  rewritten: boolean;
  needsPrepack: boolean;
  /** The graph takes LOGITS_FROM (last-logits.ts). */
  logitsFrom: boolean;
  /** Bytes of inline weights onnxruntime reads from the file itself. */
  referencedBytes: number;
} {
  const scan = scanOnnxFile(file);
  const sources = concatSources(scan);
  const projection = logitsProjection(scan);
  const edits = [...(sources ? [newTokensOnlyEdit(sources)] : []), ...(projection ? [logitsFromEdit(projection)] : [])];
  const { model, referencedBytes } = modelByReference(file);
  return {
    model: edits.length > 0 ? editGraph(model, ...edits) : model,
    externalDataDir: scan.externalData.length > 0 || referencedBytes > 0 ? dirname(file) : undefined,
    rewritten: sources !== undefined,
    needsPrepack: needsPrepacking(scan.nodes),
    logitsFrom: projection !== undefined,
    referencedBytes,
  };
}

/**
 * Whether the graph's kernels run only on prepacked weights: onnxruntime's MatMulNBits (int4
 * and int8 weights) decoded a SmolLM2-135M token in 316 ms without prepacking against 17 ms
 * with it, so ORT_PREPACK=0 does not apply to such graphs.
 */
export function needsPrepacking(nodes: readonly { opType: string }[]): boolean {
  return nodes.some((n) => n.opType === 'MatMulNBits');
}
