// bench:quant's model files: the float32 export (bench/lib/peer-model.ts), its MatMulNBits
// variants written by tools/quantize.py (onnx/model_q4.onnx, onnx/model_q8.onnx) and the GGUFs
// of the same weights in f32, f16, q8_0 and q4_0 (tools/gguf/convert.ts). All generated into
// the gitignored .cache/ and rebuilt when missing or older than the float32 export.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { convertToGguf, type GgufType } from '../../tools/gguf/convert.js';
import { log } from './interleave.js';
import { ROOT } from './server.js';

const mtime = (path: string): number => (existsSync(path) ? statSync(path).mtimeMs : -1);

/** tools/quantize.py --bits `bits` on `dir`/onnx/model.onnx, unless its output is up to date. */
export function quantizedOnnx(dir: string, bits: 4 | 8): string {
  const src = join(dir, 'onnx/model.onnx');
  const file = `onnx/model_q${bits}.onnx`;
  if (mtime(join(dir, file)) < mtime(src) || !existsSync(join(dir, `${file}.data`))) {
    log(`quantizing ${src} to ${file} (tools/quantize.py --bits ${bits})`);
    const r = spawnSync('/usr/bin/python3', ['tools/quantize.py', '--bits', String(bits), src], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`tools/quantize.py --bits ${bits} failed (${r.status ?? r.signal})`);
  }
  return file;
}

export function gguf(dir: string, name: string, type: GgufType): string {
  mkdirSync(join(ROOT, '.cache/gguf'), { recursive: true });
  const out = join(ROOT, '.cache/gguf', `${name}-${type}.gguf`);
  if (mtime(out) < mtime(join(dir, 'onnx/model.onnx'))) {
    const started = performance.now();
    const s = convertToGguf(dir, out, { type });
    log(`wrote ${out} (${(s.bytes / 2 ** 20).toFixed(1)} MiB) in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  return out;
}

// Bytes per weight of ggml's tensor types (ggml_type: F32 0, F16 1, Q4_0 2, Q8_0 8).
const GGML_BYTES: Record<number, number> = { 0: 4, 1: 2, 2: 18 / 32, 8: 34 / 32 };

/**
 * Weight bytes one decode step of one sequence reads from a GGUF: every matrix once; of the
 * embedding only a row, unless it doubles as the output projection (no `output` tensor).
 */
export async function ggufStepBytes(file: string): Promise<number> {
  const info = await readGgufFileInfo(file, { logWarnings: false });
  const tensors = info.fullTensorInfo ?? [];
  const tied = !tensors.some((t) => t.name === 'output.weight');
  let bytes = 0;
  for (const t of tensors) {
    if (t.dimensions.length < 2 || (t.name === 'token_embd.weight' && !tied)) continue;
    const per = GGML_BYTES[t.ggmlType as number];
    if (per === undefined) throw new Error(`${t.name}: ggml type ${t.ggmlType} not counted`);
    bytes += t.dimensions.reduce<number>((a, d) => a * Number(d), 1) * per;
  }
  return bytes;
}

/**
 * The same for kvserve's graphs, from config.json: each layer's q, k, v, o, gate, up and down
 * projections and the output projection (the embedding's Gather reads one row). Float32 reads 4
 * bytes per weight; MatMulNBits reads bits/8 per weight plus a float32 scale per 32.
 */
export function onnxStepBytes(dir: string, bits: 32 | 8 | 4): number {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, number>;
  const h = c.hidden_size!;
  const headDim = c.head_dim ?? h / c.num_attention_heads!;
  const kv = c.num_key_value_heads! * headDim;
  const perLayer = h * c.num_attention_heads! * headDim * 2 + h * kv * 2 + h * c.intermediate_size! * 3;
  const weights = perLayer * c.num_hidden_layers! + h * c.vocab_size!;
  return bits === 32 ? weights * 4 : weights * (bits / 8) + (weights / 32) * 4;
}

/** KV cache bytes per token of context (float32 cache): layers × (K + V) × kv_heads × head_dim × 4. */
export function kvBytesPerToken(dir: string): number {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, number>;
  const headDim = c.head_dim ?? c.hidden_size! / c.num_attention_heads!;
  return c.num_hidden_layers! * 2 * c.num_key_value_heads! * headDim * 4;
}
