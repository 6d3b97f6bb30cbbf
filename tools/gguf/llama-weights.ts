// Finds each Llama weight in an exported decoder graph by what consumes it, not by its name:
// torch's constant folding renames and transposes initializers (`onnx::MatMul_953`, stored
// [in, out]) and may store the tied embedding twice. The walk follows the residual stream:
//
//   input_ids ─Gather(token_embd)─▶ x ─RMSNorm(attn_norm)─▶ a ─MatMul q/k/v … MatMul o ─▶ Add(x, ·) ─▶ h
//   h ─RMSNorm(ffn_norm)─▶ b ─MatMul gate (→ Sigmoid) / up … MatMul down ─▶ Add(h, ·) ─▶ next x
//   x_L ─RMSNorm(output_norm)─▶ MatMul output ─▶ logits
//
// k and v are told apart by the graph output they feed (present.{i}.key / .value), gate from up
// by the Sigmoid of SiLU. Every shape is checked against config.json.
import { type OnnxGraph, type OnnxNode, type OnnxTensor, tensorValues } from '../../src/runtime/onnx/graph.js';
import { halfArrayToFloat32 } from '../../src/core/float16.js';

/** Row-major [rows][cols], PyTorch's nn.Linear layout: rows = out features, cols = in features. */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float32Array;
}

export interface LlamaHyper {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  contextLength: number;
  rmsEps: number;
  ropeTheta: number;
}

export interface LlamaLayer {
  attnNorm: Float32Array;
  q: Matrix;
  k: Matrix;
  v: Matrix;
  o: Matrix;
  ffnNorm: Float32Array;
  gate: Matrix;
  up: Matrix;
  down: Matrix;
}

export interface LlamaWeights {
  tokenEmbd: Matrix;
  layers: LlamaLayer[];
  outputNorm: Float32Array;
  /** The output projection; identical to tokenEmbd when the embeddings are tied. */
  output: Matrix;
  tied: boolean;
}

/** Hyper-parameters from a Hugging Face config.json (Llama keys). */
export function hyperFromConfig(config: Record<string, unknown>): LlamaHyper {
  const int = (key: string, fallback?: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`config.json: ${key} is not a positive integer`);
    return v;
  };
  const hidden = int('hidden_size');
  const heads = int('num_attention_heads');
  return {
    vocab: int('vocab_size'),
    hidden,
    intermediate: int('intermediate_size'),
    layers: int('num_hidden_layers'),
    heads,
    kvHeads: int('num_key_value_heads', heads),
    headDim: int('head_dim', hidden / heads),
    contextLength: int('max_position_embeddings'),
    rmsEps: typeof config.rms_norm_eps === 'number' ? config.rms_norm_eps : 1e-6,
    ropeTheta: typeof config.rope_theta === 'number' ? config.rope_theta : 10000,
  };
}

const PASS_THROUGH = new Set(['Cast', 'Identity']);

class GraphIndex {
  readonly producer = new Map<string, OnnxNode>();
  readonly consumers = new Map<string, OnnxNode[]>();

  constructor(readonly graph: OnnxGraph) {
    for (const n of graph.nodes) {
      for (const o of n.outputs) this.producer.set(o, n);
      for (const i of n.inputs) {
        if (!this.consumers.has(i)) this.consumers.set(i, []);
        this.consumers.get(i)!.push(n);
      }
    }
  }

  /** The constant behind `name` through Cast/Identity and 2-D Transposes, and whether it arrives transposed. */
  constant(name: string): { tensor: OnnxTensor; transposed: boolean } | undefined {
    let transposed = false;
    for (let hops = 0; hops < 8; hops++) {
      const t = this.graph.constants.get(name);
      if (t) return { tensor: t, transposed };
      const p = this.producer.get(name);
      if (!p?.inputs[0]) return undefined;
      if (p.opType === 'Transpose') {
        const perm = p.ints.get('perm');
        if (perm && !(perm.length === 2 && perm[0] === 1 && perm[1] === 0)) return undefined;
        transposed = !transposed;
      } else if (!PASS_THROUGH.has(p.opType)) return undefined;
      name = p.inputs[0];
    }
    return undefined;
  }

  /** A MatMul's constant right-hand side as an nn.Linear weight [out, in]; undefined for other nodes. */
  linear(n: OnnxNode): Matrix | undefined {
    if (n.opType !== 'MatMul' || !n.inputs[1]) return undefined;
    const c = this.constant(n.inputs[1]);
    if (c?.tensor.dims.length !== 2) return undefined;
    const [d0, d1] = c.tensor.dims as [number, number];
    const values = tensorValues(c.tensor, (h) => halfArrayToFloat32(h));
    // x @ B with B stored [in, out] (folded) needs a transpose; Transpose(W [out, in]) does not.
    return c.transposed ? { rows: d0, cols: d1, data: values } : transpose({ rows: d0, cols: d1, data: values });
  }

  isLinear(n: OnnxNode | undefined): boolean {
    return n?.opType === 'MatMul' && !!n.inputs[1] && this.constant(n.inputs[1])?.tensor.dims.length === 2;
  }

  /**
   * Linear MatMuls upstream of `output` (the search stops at each one found). Shape nodes are
   * not followed: a Reshape's target shape is read off earlier tensors, which carries no data.
   */
  linearsFeeding(output: string): OnnxNode[] {
    const found = new Set<OnnxNode>();
    const seen = new Set<string>();
    const stack = [output];
    while (stack.length > 0) {
      const name = stack.pop()!;
      if (seen.has(name)) continue;
      seen.add(name);
      const p = this.producer.get(name);
      if (!p || p.opType === 'Shape') continue;
      if (this.isLinear(p)) found.add(p);
      else stack.push(...p.inputs.filter((i) => i !== ''));
    }
    return [...found];
  }

  /** The output of the RMSNorm applied to `x`: the nearest Mul by a 1-D [hidden] constant downstream. */
  rmsNorm(x: string, hidden: number): { out: string; weight: Float32Array } {
    const STOP = new Set(['MatMul', 'Gemm', 'Gather', 'Softmax', 'Reshape', 'Transpose']);
    let frontier = [x];
    const seen = new Set(frontier);
    for (let depth = 0; depth < 8 && frontier.length > 0; depth++) {
      const next: string[] = [];
      for (const name of frontier) {
        for (const n of this.consumers.get(name) ?? []) {
          if (n.opType === 'Mul') {
            for (const input of n.inputs) {
              const c = input === name ? undefined : this.constant(input);
              if (c && c.tensor.dims.length === 1 && c.tensor.dims[0] === hidden) {
                return { out: n.outputs[0]!, weight: tensorValues(c.tensor, (h) => halfArrayToFloat32(h)) };
              }
            }
          }
          if (STOP.has(n.opType)) continue;
          for (const o of n.outputs) if (!seen.has(o)) seen.add(o), next.push(o);
        }
      }
      frontier = next;
    }
    throw new Error(`no RMSNorm (Mul by a [${hidden}] weight) found after ${x}`);
  }

  /** The residual Add consuming `x` whose other operand comes from a linear MatMul: [that MatMul, the sum]. */
  residual(x: string): [OnnxNode, string] {
    for (const n of this.consumers.get(x) ?? []) {
      if (n.opType !== 'Add') continue;
      let other = this.producer.get(n.inputs[0] === x ? n.inputs[1]! : n.inputs[0]!);
      while (other && (PASS_THROUGH.has(other.opType) || other.opType === 'Reshape')) other = this.producer.get(other.inputs[0]!);
      if (other && this.isLinear(other)) return [other, n.outputs[0]!];
    }
    throw new Error(`no residual Add of a projection onto ${x}`);
  }

  linearConsumers(x: string): OnnxNode[] {
    return (this.consumers.get(x) ?? []).filter((n) => this.isLinear(n) && n.inputs[0] === x);
  }
}

function transpose(m: Matrix): Matrix {
  const out = new Float32Array(m.data.length);
  for (let r = 0; r < m.rows; r++) for (let c = 0; c < m.cols; c++) out[c * m.rows + r] = m.data[r * m.cols + c]!;
  return { rows: m.cols, cols: m.rows, data: out };
}

function expectShape(what: string, m: Matrix, rows: number, cols: number): Matrix {
  if (m.rows !== rows || m.cols !== cols) throw new Error(`${what}: weight is [${m.rows}, ${m.cols}], config.json implies [${rows}, ${cols}]`);
  return m;
}

const sameValues = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((v, i) => v === b[i]);

/** Every weight of the Llama decoder in `graph`, in nn.Linear layout, checked against `hp`. */
export function findLlamaWeights(graph: OnnxGraph, hp: LlamaHyper): LlamaWeights {
  const g = new GraphIndex(graph);
  const { hidden: H, intermediate: I, vocab: V, heads, kvHeads, headDim } = hp;
  const idsUsers = [...(g.consumers.get('input_ids') ?? [])];
  for (const n of [...idsUsers]) if (PASS_THROUGH.has(n.opType)) idsUsers.push(...(g.consumers.get(n.outputs[0]!) ?? []));
  const gather = idsUsers.find((n) => n.opType === 'Gather' && g.constant(n.inputs[0]!) !== undefined);
  const embd = gather && g.constant(gather.inputs[0]!);
  if (!gather || !embd || embd.tensor.dims.length !== 2) throw new Error('no Gather of a constant embedding table by input_ids');
  const [er, ec] = embd.tensor.dims as [number, number];
  const tokenEmbd = expectShape('token_embd', { rows: er, cols: ec, data: tensorValues(embd.tensor, (h) => halfArrayToFloat32(h)) }, V, H);

  let x = gather.outputs[0]!;
  const layers: LlamaLayer[] = [];
  for (let i = 0; i < hp.layers; i++) {
    const attnNorm = g.rmsNorm(x, H);
    const qkv = g.linearConsumers(attnNorm.out);
    const kFeeds = g.linearsFeeding(`present.${i}.key`);
    const vFeeds = g.linearsFeeding(`present.${i}.value`);
    const kNode = kFeeds.length === 1 ? kFeeds[0] : undefined;
    const vNode = vFeeds.length === 1 ? vFeeds[0] : undefined;
    const qNode = qkv.find((n) => n !== kNode && n !== vNode);
    if (qkv.length !== 3 || !kNode || !vNode || !qNode || !qkv.includes(kNode) || !qkv.includes(vNode)) {
      throw new Error(
        `layer ${i}: expected q, k, v projections of the attention norm's output (found ${qkv.length}; present.${i}.key/value traced to ${kFeeds.length}/${vFeeds.length} projections)`,
      );
    }
    const [oNode, h] = g.residual(x);
    const ffnNorm = g.rmsNorm(h, H);
    const gu = g.linearConsumers(ffnNorm.out);
    const gateNode = gu.find((n) => (g.consumers.get(n.outputs[0]!) ?? []).some((c) => c.opType === 'Sigmoid'));
    const upNode = gu.find((n) => n !== gateNode);
    if (gu.length !== 2 || !gateNode || !upNode) throw new Error(`layer ${i}: expected gate (feeding SiLU's Sigmoid) and up projections, found ${gu.length}`);
    const [downNode, next] = g.residual(h);
    layers.push({
      attnNorm: attnNorm.weight,
      q: expectShape(`blk.${i}.attn_q`, g.linear(qNode)!, heads * headDim, H),
      k: expectShape(`blk.${i}.attn_k`, g.linear(kNode)!, kvHeads * headDim, H),
      v: expectShape(`blk.${i}.attn_v`, g.linear(vNode)!, kvHeads * headDim, H),
      o: expectShape(`blk.${i}.attn_output`, g.linear(oNode)!, H, heads * headDim),
      ffnNorm: ffnNorm.weight,
      gate: expectShape(`blk.${i}.ffn_gate`, g.linear(gateNode)!, I, H),
      up: expectShape(`blk.${i}.ffn_up`, g.linear(upNode)!, I, H),
      down: expectShape(`blk.${i}.ffn_down`, g.linear(downNode)!, H, I),
    });
    x = next;
  }
  const finalNorm = g.rmsNorm(x, H);
  const [outNode] = g.linearConsumers(finalNorm.out);
  if (!outNode || !g.linearsFeeding('logits').includes(outNode)) throw new Error('the final norm does not feed a projection to logits');
  const output = expectShape('output', g.linear(outNode)!, V, H);
  if (graph.outputs.includes(`present.${hp.layers}.key`)) throw new Error(`the graph has more than the ${hp.layers} layers config.json names`);
  return { tokenEmbd, layers, outputNorm: finalNorm.weight, output, tied: sameValues(tokenEmbd.data, output.data) };
}
