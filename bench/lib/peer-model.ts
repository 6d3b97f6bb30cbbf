// The model both servers of bench:peer run, per --shape: the shipped tiny-shakespeare, or an
// untrained SmolLM2-135M-shaped export (tools/export.py --shape, several minutes the first
// time), plus the GGUF of the same weights (tools/gguf/convert.ts). Generated files live in the
// gitignored .cache/ and are rebuilt when missing or older than their source.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { convertToGguf, type GgufType } from '../../tools/gguf/convert.js';
import { log } from './interleave.js';
import { ROOT } from './server.js';

export const SHAPES = ['toy', 'smollm2-135m'] as const;
export type Shape = (typeof SHAPES)[number];

export interface PeerModel {
  shape: Shape;
  dir: string;
  gguf: string;
  /** Bytes of weights one decode step of one sequence reads (see ggufStepBytes). */
  stepWeightBytes: number;
}

const CACHE = join(ROOT, '.cache');
export const mtime = (path: string): number => (existsSync(path) ? statSync(path).mtimeMs : -1);

/** The GGUF of `dir`'s weights in `type`, written into .cache/gguf unless up to date. */
export function gguf(dir: string, name: string, type: GgufType): string {
  mkdirSync(join(CACHE, 'gguf'), { recursive: true });
  const out = join(CACHE, 'gguf', `${name}-${type}.gguf`);
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

export async function preparePeerModel(shape: Shape, type: 'f32' | 'f16' = 'f32'): Promise<PeerModel> {
  const dir = shape === 'toy' ? join(ROOT, 'models/tiny-shakespeare') : join(CACHE, 'models', shape);
  const onnx = join(dir, 'onnx/model.onnx');
  // Re-exported when the export tools changed since (the shipped toy model is never re-exported).
  const tools = Math.max(mtime(join(ROOT, 'tools/llama.py')), mtime(join(ROOT, 'tools/export.py')));
  if (!existsSync(onnx) || (shape !== 'toy' && mtime(onnx) < tools)) {
    log(`exporting ${shape} to ${dir} (tools/export.py --shape; several minutes)`);
    const r = spawnSync('/usr/bin/python3', ['tools/export.py', '--shape', shape, dir], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`tools/export.py --shape ${shape} failed (${r.status ?? r.signal})`);
  }
  const file = gguf(dir, shape, type);
  return { shape, dir, gguf: file, stepWeightBytes: await ggufStepBytes(file) };
}
