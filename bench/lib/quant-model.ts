// bench:quant's model files: the float32 export (bench/lib/peer-model.ts), its MatMulNBits
// variants written by tools/quantize.py (onnx/model_q4.onnx, onnx/model_q8.onnx) and the GGUFs
// of the same weights in f32, f16, q8_0 and q4_0 (tools/gguf/convert.ts). All generated into
// the gitignored .cache/ and rebuilt when missing, older than the float32 export or quantized with other settings.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { log } from './interleave.js';
import { mtime } from './peer-model.js';
import { ROOT } from './server.js';

/** tools/quantize.py's default block size: a float32 scale per 64 weights, llama.cpp's Q4_0 / Q8_0 bytes. */
export const BLOCK_SIZE = 64;

/** The settings tools/quantize.py records in the file's metadata (`kvserve.quantize`). */
const settings = (bits: 4 | 8): string => `bits=${bits} block_size=${BLOCK_SIZE} accuracy_level=4 lm_head=quantized`;

/**
 * tools/quantize.py --bits `bits` on `dir`/onnx/model.onnx, unless its output is newer than the
 * float32 file and was written with today's settings (a file from another block size is redone).
 */
export function quantizedOnnx(dir: string, bits: 4 | 8): string {
  const src = join(dir, 'onnx/model.onnx');
  const file = `onnx/model_q${bits}.onnx`;
  const path = join(dir, file);
  const current = mtime(path) >= mtime(src) && existsSync(`${path}.data`) && readFileSync(path).includes(settings(bits));
  if (!current) {
    log(`quantizing ${src} to ${file} (tools/quantize.py --bits ${bits} --block-size ${BLOCK_SIZE})`);
    const args = ['tools/quantize.py', '--bits', String(bits), '--block-size', String(BLOCK_SIZE), src];
    const r = spawnSync('/usr/bin/python3', args, { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`tools/quantize.py --bits ${bits} failed (${r.status ?? r.signal})`);
  }
  return file;
}

/**
 * The same for kvserve's graphs, from config.json: each layer's q, k, v, o, gate, up and down
 * projections and the output projection (the embedding's Gather reads one row). Float32 reads 4
 * bytes per weight; MatMulNBits reads bits/8 per weight plus a float32 scale per BLOCK_SIZE.
 */
export function onnxStepBytes(dir: string, bits: 32 | 8 | 4): number {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, number>;
  const h = c.hidden_size!;
  const headDim = c.head_dim ?? h / c.num_attention_heads!;
  const kv = c.num_key_value_heads! * headDim;
  const perLayer = h * c.num_attention_heads! * headDim * 2 + h * kv * 2 + h * c.intermediate_size! * 3;
  const weights = perLayer * c.num_hidden_layers! + h * c.vocab_size!;
  return bits === 32 ? weights * 4 : weights * (bits / 8) + (weights / BLOCK_SIZE) * 4;
}

/** KV cache bytes per token of context (float32 cache): layers × (K + V) × kv_heads × head_dim × 4. */
export function kvBytesPerToken(dir: string): number {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, number>;
  const headDim = c.head_dim ?? c.hidden_size! / c.num_attention_heads!;
  return c.num_hidden_layers! * 2 * c.num_key_value_heads! * headDim * 4;
}
