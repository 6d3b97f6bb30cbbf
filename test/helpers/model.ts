// Where the shipped model lives, and small helpers the inference tests share.
import { fileURLToPath } from 'node:url';
import type { DecoderModel } from '../../src/core/model.js';
import { KvCache } from '../../src/core/kv/kv-cache.js';

export const MODEL_DIR = fileURLToPath(new URL('../../models/tiny-shakespeare/', import.meta.url));
export const FP16_FILE = 'onnx/model_fp16.onnx';

/** Greedy argmax (ties: lowest id), independent of the sampler under test. */
export function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Runs `tokens` through the model in one call from `cache` (or an empty past) and returns all rows of logits. */
export async function runAll(model: DecoderModel, tokens: number[], cache = KvCache.empty(model.layout)) {
  const past = cache.length;
  const out = await model.forward({
    batch: 1,
    seqLen: tokens.length,
    pastLength: past,
    inputIds: tokens,
    positionIds: tokens.map((_, i) => past + i),
    past: cache.tensors,
  });
  cache.append(out.newKv, tokens.length);
  return { rows: tokens.map((_, i) => Float32Array.from(out.logits(0, i))), cache };
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * maxAbsDiff relative to a's largest logit (at least 1): float noise from another kernel or
 * buffer layout scales with the logits' size, a wrong cache moves them by whole units.
 */
export function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let scale = 1;
  for (const v of a) scale = Math.max(scale, Math.abs(v));
  return maxAbsDiff(a, b) / scale;
}
