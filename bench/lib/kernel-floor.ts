// The least time onnxruntime's matrix kernels need for one single-stream decode step of a model:
// tools/kernel_floor.py keeps only the graph's weight products (MatMul with a constant weight,
// MatMulNBits), and that graph is timed here, in-process, with the service's session options.
// bench:quant reports each engine's decode against it: how far the kernels themselves stand
// from the memory-bandwidth roofline, and what the rest of the step and the service cost.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { sessionOptions } from '../../src/runtime/onnx-decoder.js';
import { log } from './interleave.js';
import { mtime } from './peer-model.js';
import { ROOT } from './server.js';
import { median } from './stats.js';

/** tools/kernel_floor.py on `dir`/`file`, into onnx/floor_<name> beside it unless up to date; returns its path. */
export function kernelFloorOnnx(dir: string, file: string): string {
  const src = join(dir, file);
  const out = join(dirname(src), `floor_${basename(src)}`);
  if (mtime(out) < mtime(src) || !existsSync(`${out}.data`)) {
    log(`writing the weight products of ${file} to ${out} (tools/kernel_floor.py)`);
    const r = spawnSync('/usr/bin/python3', ['tools/kernel_floor.py', src, out], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`tools/kernel_floor.py failed (${r.status ?? r.signal})`);
  }
  return out;
}

/** Median ms of one run of the floor graph (one-row activations) on `threads` intra-op threads, after `warmup` runs. */
export async function kernelFloorMs(path: string, threads: number, runs = 30, warmup = 5): Promise<number> {
  const session = await ort.InferenceSession.create(path, sessionOptions(threads));
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const name of session.inputNames) {
      const k = Number(name.slice('a_'.length));
      feeds[name] = new ort.Tensor('float32', new Float32Array(k).fill(0.01), [1, k]);
    }
    const times: number[] = [];
    for (let i = 0; i < warmup + runs; i++) {
      const start = performance.now();
      await session.run(feeds);
      if (i >= warmup) times.push(performance.now() - start);
    }
    return median(times);
  } finally {
    await session.release();
  }
}
