// The model both servers of bench:peer run, per --shape: the shipped tiny-shakespeare, or an
// untrained SmolLM2-135M-shaped export (tools/export.py --shape, several minutes the first
// time), plus the GGUF of the same weights (tools/gguf/convert.ts). Generated files live in the
// gitignored .cache/ and are rebuilt when missing or older than their source.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { convertToGguf } from '../../tools/gguf/convert.js';
import { log } from './interleave.js';
import { ROOT } from './server.js';

export const SHAPES = ['toy', 'smollm2-135m'] as const;
export type Shape = (typeof SHAPES)[number];

export interface PeerModel {
  shape: Shape;
  dir: string;
  gguf: string;
  /** Bytes of weights one decode step of one sequence reads (see stepWeightBytes). */
  stepWeightBytes: number;
}

const CACHE = join(ROOT, '.cache');
const mtime = (path: string): number => (existsSync(path) ? statSync(path).mtimeMs : -1);

/**
 * Every matrix is read once per decode step; of the embedding only a row, unless it doubles as
 * the output projection (tied: no `output` tensor). Norm vectors are negligible and left out.
 * Both engines hold the same float32 matrices, so this is both engines' figure.
 */
async function stepWeightBytes(gguf: string): Promise<number> {
  const info = await readGgufFileInfo(gguf, { logWarnings: false });
  const tensors = info.fullTensorInfo ?? [];
  const tied = !tensors.some((t) => t.name === 'output.weight');
  let bytes = 0;
  for (const t of tensors) {
    if (t.dimensions.length < 2 || (t.name === 'token_embd.weight' && !tied)) continue;
    const count = t.dimensions.reduce<number>((a, d) => a * Number(d), 1);
    bytes += count * (t.ggmlType === 1 ? 2 : 4);
  }
  return bytes;
}

export async function preparePeerModel(shape: Shape, type: 'f32' | 'f16' = 'f32'): Promise<PeerModel> {
  const dir = shape === 'toy' ? join(ROOT, 'models/tiny-shakespeare') : join(CACHE, 'models', shape);
  const onnx = join(dir, 'onnx/model.onnx');
  if (!existsSync(onnx)) {
    log(`exporting ${shape} to ${dir} (tools/export.py --shape; several minutes)`);
    const r = spawnSync('/usr/bin/python3', ['tools/export.py', '--shape', shape, dir], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`tools/export.py --shape ${shape} failed (${r.status ?? r.signal})`);
  }
  mkdirSync(join(CACHE, 'gguf'), { recursive: true });
  const gguf = join(CACHE, 'gguf', `${shape}-${type}.gguf`);
  if (mtime(gguf) < mtime(onnx)) {
    const started = performance.now();
    const s = convertToGguf(dir, gguf, { type });
    log(`wrote ${gguf} (${(s.bytes / 2 ** 20).toFixed(1)} MiB) in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  return { shape, dir, gguf, stepWeightBytes: await stepWeightBytes(gguf) };
}
