// ONNX decoder directory → llama-architecture GGUF, so llama.cpp (node-llama-cpp) runs the very
// weights kvserve serves:
//
//   tsx tools/gguf/convert.ts <model-dir> <out.gguf> [--type f32|f16|q8_0|q4_0] [--onnx onnx/model.onnx]
//
// Hyper-parameters come from config.json, the vocabulary from tokenizer.json, the weights from
// the ONNX graph (tools/gguf/llama-weights.ts finds them). f16 files keep 1-D tensors (the
// norms) in float32, as llama.cpp's own converter does; q8_0 and q4_0 (./ggml-quant.ts) quantize
// every matrix, the embedding included, and keep the norms in float32.
import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GGML_F16, GGML_F32, GGML_Q4_0, GGML_Q8_0, GgufWriter } from './gguf-writer.js';
import { type LlamaHyper, type Matrix, findLlamaWeights, hyperFromConfig } from './llama-weights.js';
import { readOnnxGraph } from '../../src/runtime/onnx/graph.js';
import { vocabMetadata } from './vocab.js';

export const GGUF_TYPES = ['f32', 'f16', 'q8_0', 'q4_0'] as const;
export type GgufType = (typeof GGUF_TYPES)[number];
// general.file_type: llama_ftype (LLAMA_FTYPE_MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7).
const FILE_TYPE: Record<GgufType, number> = { f32: 0, f16: 1, q8_0: 7, q4_0: 2 };
const MATRIX_TYPE = { f32: GGML_F32, f16: GGML_F16, q8_0: GGML_Q8_0, q4_0: GGML_Q4_0 } as const;

export interface ConvertOptions {
  type: GgufType;
  /** The ONNX file inside the model directory. */
  onnxFile?: string;
}

export interface ConvertSummary {
  out: string;
  bytes: number;
  tensors: number;
  hyper: LlamaHyper;
  tiedEmbeddings: boolean;
}

/**
 * Hugging Face Llama checkpoints (and tools/llama.py) rotate with rotate_half, pairing
 * dimension j of a head with j + head_dim/2; llama.cpp's LLAMA rope pairs 2j with 2j+1. Moving
 * row j to 2j and row j + head_dim/2 to 2j+1 in every head of W_q and W_k makes the rotations
 * agree; q·k is unchanged, since both sides are permuted alike. (llama.cpp's converter applies
 * the same reordering to Hugging Face checkpoints.)
 */
export function interleaveRopeRows(m: Matrix, heads: number): Matrix {
  const headDim = m.rows / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new Error(`${m.rows} rows do not split into ${heads} heads of even size`);
  const half = headDim / 2;
  const out = new Float32Array(m.data.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      const base = h * headDim;
      out.set(m.data.subarray((base + j) * m.cols, (base + j + 1) * m.cols), (base + 2 * j) * m.cols);
      out.set(m.data.subarray((base + half + j) * m.cols, (base + half + j + 1) * m.cols), (base + 2 * j + 1) * m.cols);
    }
  }
  return { rows: m.rows, cols: m.cols, data: out };
}

const readJson = (path: string): Record<string, unknown> => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
const optionalJson = (path: string): Record<string, unknown> => {
  try {
    return readJson(path);
  } catch {
    return {};
  }
};
const firstId = (v: unknown): number | undefined => (typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? v[0] : undefined);

export function convertToGguf(modelDir: string, out: string, options: ConvertOptions): ConvertSummary {
  const config = readJson(join(modelDir, 'config.json'));
  const generation = optionalJson(join(modelDir, 'generation_config.json'));
  const tokenizerConfig = optionalJson(join(modelDir, 'tokenizer_config.json'));
  const hp = hyperFromConfig(config);
  const weights = findLlamaWeights(readOnnxGraph(readFileSync(join(modelDir, options.onnxFile ?? 'onnx/model.onnx'))), hp);
  const vocab = vocabMetadata(JSON.parse(readFileSync(join(modelDir, 'tokenizer.json'), 'utf8')), tokenizerConfig, hp.vocab, {
    bos: firstId(config.bos_token_id) ?? firstId(generation.bos_token_id),
    eos: firstId(generation.eos_token_id) ?? firstId(config.eos_token_id),
  });

  const w = new GgufWriter();
  const name = resolve(modelDir).split('/').pop() ?? 'model';
  w.meta('general.architecture', { str: 'llama' })
    .meta('general.name', { str: name })
    .meta('general.file_type', { u32: FILE_TYPE[options.type] })
    .meta('llama.vocab_size', { u32: hp.vocab })
    .meta('llama.context_length', { u32: hp.contextLength })
    .meta('llama.embedding_length', { u32: hp.hidden })
    .meta('llama.block_count', { u32: hp.layers })
    .meta('llama.feed_forward_length', { u32: hp.intermediate })
    .meta('llama.attention.head_count', { u32: hp.heads })
    .meta('llama.attention.head_count_kv', { u32: hp.kvHeads })
    .meta('llama.attention.key_length', { u32: hp.headDim })
    .meta('llama.attention.value_length', { u32: hp.headDim })
    .meta('llama.attention.layer_norm_rms_epsilon', { f32: hp.rmsEps })
    .meta('llama.rope.dimension_count', { u32: hp.headDim })
    .meta('llama.rope.freq_base', { f32: hp.ropeTheta });
  for (const [key, value] of vocab.meta) w.meta(key, value);

  const matrixType = MATRIX_TYPE[options.type];
  const matrix = (tensorName: string, m: Matrix): void => void w.tensor(tensorName, [m.cols, m.rows], matrixType, m.data);
  const vector = (tensorName: string, v: Float32Array): void => void w.tensor(tensorName, [v.length], GGML_F32, v);

  // With tied embeddings llama.cpp projects onto token_embd itself when `output` is absent.
  matrix('token_embd.weight', weights.tokenEmbd);
  weights.layers.forEach((l, i) => {
    vector(`blk.${i}.attn_norm.weight`, l.attnNorm);
    matrix(`blk.${i}.attn_q.weight`, interleaveRopeRows(l.q, hp.heads));
    matrix(`blk.${i}.attn_k.weight`, interleaveRopeRows(l.k, hp.kvHeads));
    matrix(`blk.${i}.attn_v.weight`, l.v);
    matrix(`blk.${i}.attn_output.weight`, l.o);
    vector(`blk.${i}.ffn_norm.weight`, l.ffnNorm);
    matrix(`blk.${i}.ffn_gate.weight`, l.gate);
    matrix(`blk.${i}.ffn_up.weight`, l.up);
    matrix(`blk.${i}.ffn_down.weight`, l.down);
  });
  vector('output_norm.weight', weights.outputNorm);
  if (!weights.tied) matrix('output.weight', weights.output);
  const bytes = w.write(out);
  return { out, bytes, tensors: 2 + hp.layers * 9 + (weights.tied ? 0 : 1), hyper: hp, tiedEmbeddings: weights.tied };
}

function main(argv: string[]): void {
  const positional: string[] = [];
  let type: GgufType = 'f32';
  let onnxFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--type') {
      const t = argv[++i];
      if (!GGUF_TYPES.includes(t as GgufType)) throw new Error(`--type ${t}: expected ${GGUF_TYPES.join(', ')}`);
      type = t as GgufType;
    } else if (a === '--onnx') onnxFile = argv[++i];
    else positional.push(a);
  }
  if (positional.length !== 2) {
    process.stderr.write('usage: tsx tools/gguf/convert.ts <model-dir> <out.gguf> [--type f32|f16|q8_0|q4_0] [--onnx onnx/model.onnx]\n');
    process.exit(2);
  }
  const [dir, out] = positional as [string, string];
  const started = performance.now();
  const s = convertToGguf(dir, out, { type, ...(onnxFile ? { onnxFile } : {}) });
  process.stdout.write(
    `wrote ${out}: ${(statSync(out).size / 2 ** 20).toFixed(1)} MiB, ${s.tensors} tensors, ${type}, ` +
      `${s.hyper.layers} layers × hidden ${s.hyper.hidden}, vocab ${s.hyper.vocab}, ` +
      `${s.tiedEmbeddings ? 'tied embeddings (no output tensor)' : 'separate output tensor'}; ${((performance.now() - started) / 1000).toFixed(1)} s\n`,
  );
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
