// `npx tsx bench/tiers-fidelity.ts`: what a compressed KV tier costs in model output. For
// several windows of test/fixtures/shakespeare-20k.txt, prefill PREFIX tokens, then push the
// prefix cache through a codec block by block (16-token blocks, entry format included), and
// feed the next CONTINUATION tokens of the text one at a time over the exact and over the
// restored cache. Every step's next-token distribution is compared: top-1 (argmax) agreement
// and KL(exact ‖ restored). "exact" (a float32/float16 copy) checks the harness itself: it
// must give agreement 1 and KLD 0. Alternatives to the shipped int8 scheme are measured too.
//
// MODEL_DIR (default the shipped model), MODEL_FILE (e.g. onnx/model_fp16.onnx), PREFIX
// (1024), CONTINUATION (256), WINDOWS (5). Prints JSON to stdout and writes it to
// bench/results/tiers-fidelity-<KV dtype>.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { DecoderModel } from '../src/core/model.js';
import { KvCache } from '../src/core/kv/kv-cache.js';
import type { KvData, KvDType } from '../src/core/kv/layout.js';
import { cutBlock } from '../src/core/kv/prefix-index.js';
import { type CodecId, type EntryDims, decodeEntry, encodeEntry, isRejected } from '../src/core/kv/entry/format.js';
import { decodePayload, encodePayload } from '../src/core/kv/tiers/codec.js';
import { float32ArrayToHalf, halfArrayToFloat32 } from '../src/core/float16.js';
import { loadModel } from '../src/runtime/load-model.js';
import { envInt, log } from './lib/interleave.js';
import { argmax, klDivergence, logSoftmax } from './lib/distributions.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BLOCK = 16;

/** Restores one block's tensors after a lossy round trip. */
export type RoundTrip = (tensors: readonly KvData[], dims: EntryDims, dtype: KvDType) => KvData[];

export interface Fidelity {
  top1_agreement: number;
  kld: number;
  kld_p99: number;
  kld_max: number;
  /** sqrt(Σ(x' − x)² / Σx²) over the restored prefix caches. */
  kv_relative_rmse: number;
  positions: number;
}

const FP = new Uint8Array(32);

/** The shipped path: codec, then the entry format, and back. */
export function viaEntry(codec: CodecId): RoundTrip {
  return (tensors, dims, dtype) => {
    const payload = encodePayload(codec, tensors, dims, dtype);
    const bytes = encodeEntry({
      kind: 'prefix',
      key: 'k',
      tenantSalt: new Uint8Array(0),
      tokens: new Int32Array(dims.tokens),
      createdMs: 0,
      fingerprint: FP,
      codec,
      dtype,
      dims,
      payload,
    });
    const entry = decodeEntry(bytes, FP);
    if (isRejected(entry)) throw new Error(`entry rejected: ${entry.detail}`);
    return decodePayload(entry.codec, entry.payload, entry.dims, dtype);
  };
}

/** A measured alternative: symmetric int8 over groups of `group(dims, tensor)` elements with a stride. */
function int8Groups(shape: (d: EntryDims) => { size: number; stride: number; count: number; base: (g: number) => number }): RoundTrip {
  return (tensors, dims, dtype) =>
    tensors.map((t) => {
      const x = t instanceof Float32Array ? Float32Array.from(t) : halfArrayToFloat32(t);
      const { size, stride, count, base: baseOf } = shape(dims);
      for (let g = 0; g < count; g++) {
        const base = baseOf(g);
        let max = 0;
        for (let i = 0; i < size; i++) max = Math.max(max, Math.abs(x[base + i * stride]!));
        const s = max / 127;
        for (let i = 0; i < size; i++) x[base + i * stride] = s > 0 ? Math.round(x[base + i * stride]! / s) * s : 0;
      }
      return dtype === 'float32' ? x : float32ArrayToHalf(x);
    });
}

/** Alternatives to int8 per token per head, for the choice (not shipped). */
export const alternatives: Record<string, RoundTrip> = {
  // One scale per head over the whole block (tokens × head_dim values).
  int8_per_block_head: int8Groups((d) => ({ size: d.tokens * d.headDim, stride: 1, count: d.kvHeads, base: (g) => g * d.tokens * d.headDim })),
  // Keys per channel (one scale per head and dim over the block's tokens, as KIVI), values per token.
  int8_keys_per_channel: (tensors, dims, dtype) =>
    tensors.map(
      (t, ti) =>
        int8Groups((d) =>
          ti % 2 === 0
            ? {
                size: d.tokens,
                stride: d.headDim,
                count: d.kvHeads * d.headDim,
                base: (g) => Math.floor(g / d.headDim) * d.tokens * d.headDim + (g % d.headDim),
              }
            : { size: d.headDim, stride: 1, count: d.kvHeads * d.tokens, base: (g) => g * d.headDim },
        )([t], dims, dtype)[0]!,
    ),
};

async function run(model: DecoderModel, cache: KvCache, ids: readonly number[]): Promise<Float32Array[]> {
  const rows: Float32Array[] = [];
  for (const id of ids) {
    const past = cache.length;
    const out = await model.forward({ batch: 1, seqLen: 1, pastLength: past, inputIds: [id], positionIds: [past], past: cache.tensors });
    cache.append(out.newKv, 1);
    rows.push(Float32Array.from(out.logits(0, 0)));
  }
  return rows;
}

function kl(p: Float32Array, q: Float32Array): number {
  return Math.max(0, klDivergence(logSoftmax(p), logSoftmax(q)));
}

const f32 = (t: KvData) => (t instanceof Float32Array ? t : halfArrayToFloat32(t));

export interface FidelityOptions {
  modelDir: string;
  onnxFile?: string | undefined;
  text: string;
  prefix: number;
  continuation: number;
  windows: number;
  roundTrips: Record<string, RoundTrip>;
}

export async function measureFidelity(o: FidelityOptions): Promise<{ model: Record<string, unknown>; results: Record<string, Fidelity> }> {
  const { decoder, tokenizer, info } = await loadModel(o.modelDir, { onnxFile: o.onnxFile, threads: 1, decodeThreads: 1 });
  try {
    const ids = tokenizer.encode(o.text);
    const span = o.prefix + o.continuation;
    if (ids.length < span) throw new Error(`text has ${ids.length} tokens, a window needs ${span}`);
    const step = o.windows > 1 ? Math.floor((ids.length - span) / (o.windows - 1)) : 0;
    const stats = Object.fromEntries(Object.keys(o.roundTrips).map((k) => [k, { agree: 0, klds: [] as number[], err: 0, norm: 0 }]));
    const { layout } = decoder;
    for (let w = 0; w < o.windows; w++) {
      const window = ids.slice(w * step, w * step + span);
      const prefill = await decoder.forward({
        batch: 1,
        seqLen: o.prefix,
        pastLength: 0,
        inputIds: window.slice(0, o.prefix),
        positionIds: window.slice(0, o.prefix).map((_, i) => i),
        past: KvCache.empty(layout).tensors,
        lastLogitsOnly: true,
      });
      const exact = KvCache.of(layout, prefill.newKv, o.prefix);
      const cont = window.slice(o.prefix);
      const reference = await run(decoder, exact.slice(o.prefix), cont);
      for (const [name, roundTrip] of Object.entries(o.roundTrips)) {
        const s = stats[name]!;
        const dims = { layers: layout.layers, kvHeads: layout.kvHeads, headDim: layout.headDim, tokens: BLOCK };
        const blocks: KvData[][] = [];
        for (let start = 0; start + BLOCK <= o.prefix; start += BLOCK) {
          const block = cutBlock(exact, start, BLOCK);
          const back = roundTrip(block, dims, layout.dtype);
          block.forEach((t, i) => {
            const a = f32(t);
            const b = f32(back[i]!);
            for (let j = 0; j < a.length; j++) {
              s.err += (b[j]! - a[j]!) ** 2;
              s.norm += a[j]! ** 2;
            }
          });
          blocks.push(back);
        }
        const restored = KvCache.ofBlocks(layout, blocks, BLOCK);
        const rows = await run(decoder, restored, cont);
        rows.forEach((row, i) => {
          if (argmax(row) === argmax(reference[i]!)) s.agree++;
          s.klds.push(kl(reference[i]!, row));
        });
      }
      log(`window ${w + 1}/${o.windows} done`);
    }
    const results: Record<string, Fidelity> = {};
    for (const [name, s] of Object.entries(stats)) {
      const sorted = [...s.klds].sort((a, b) => a - b);
      results[name] = {
        top1_agreement: s.agree / s.klds.length,
        kld: s.klds.reduce((a, b) => a + b, 0) / s.klds.length,
        kld_p99: sorted[Math.min(sorted.length - 1, Math.floor(0.99 * sorted.length))]!,
        kld_max: sorted[sorted.length - 1]!,
        kv_relative_rmse: Math.sqrt(s.err / s.norm),
        positions: s.klds.length,
      };
    }
    return {
      model: {
        dir: relative(ROOT, info.dir),
        onnx: relative(ROOT, info.onnxPath),
        kv_dtype: layout.dtype,
        prefix: o.prefix,
        continuation: o.continuation,
        windows: o.windows,
        block: BLOCK,
      },
      results,
    };
  } finally {
    await decoder.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const exactCodec: CodecId = process.env.MODEL_FILE?.includes('fp16') ? 'float16' : 'float32';
  const out = await measureFidelity({
    modelDir: resolve(process.env.MODEL_DIR ?? join(ROOT, 'models/tiny-shakespeare')),
    onnxFile: process.env.MODEL_FILE,
    text: readFileSync(join(ROOT, 'test/fixtures/shakespeare-20k.txt'), 'utf8'),
    prefix: envInt('PREFIX', 1024),
    continuation: envInt('CONTINUATION', 256),
    windows: envInt('WINDOWS', 5),
    roundTrips: { int8: viaEntry('int8'), float16: viaEntry('float16'), exact: viaEntry(exactCodec), ...alternatives },
  });
  const json = `${JSON.stringify({ ...out.results, model: out.model }, null, 2)}\n`;
  writeFileSync(join(ROOT, `bench/results/tiers-fidelity-${out.model.kv_dtype}.json`), json);
  process.stdout.write(json);
}
