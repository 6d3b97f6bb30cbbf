// `npm run bench:forms`: what serving an Optimum-form graph costs. Such a graph returns the
// whole cache in present.* (past + new); kvserve rewrites it at load to return the new tokens
// only (src/runtime/onnx/new-tokens-only.ts). At a 1,024-token context, per-token decode time of
//   shipped    kvserve's own export (present = new tokens), stepped as the engine steps it
//   rewritten  an Optimum-form copy of it (bench/lib/onnx-present.ts), as kvserve loads it
//   as-is      the same Optimum-form copy run without the rewrite: each step's present.* (the
//              whole cache) comes out of onnxruntime and is the next step's past, as a
//              generate() loop over that graph must do
// on one decode thread, sides interleaved, medians. Goal: rewritten within 10 % of shipped.
// Writes bench/results/graph-forms.json.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { KvCache } from '../src/core/kv/kv-cache.js';
import { DecodeBatch } from '../src/core/scheduler/batch.js';
import type { OnnxDecoder } from '../src/runtime/onnx-decoder.js';
import { sessionOptions } from '../src/runtime/onnx-decoder.js';
import { loadModel } from '../src/runtime/load-model.js';
import { concatPresentOutputs } from './lib/onnx-present.js';
import { envInt, interleave, log, round2 } from './lib/interleave.js';
import { benchMeta } from './lib/meta.js';
import { ROOT } from './lib/server.js';
import { median } from './lib/stats.js';

const MODEL_DIR = join(ROOT, 'models/tiny-shakespeare');
const CONTEXT = 1024;
const STEPS = 64;
const REPS = envInt('FORMS_REPS', 7);

const optimumDir = mkdtempSync(join(tmpdir(), 'kvserve-forms-'));
mkdirSync(join(optimumDir, 'onnx'));
for (const f of readdirSync(MODEL_DIR)) if (f.endsWith('.json')) copyFileSync(join(MODEL_DIR, f), join(optimumDir, f));
const optimumBytes = concatPresentOutputs(readFileSync(join(MODEL_DIR, 'onnx/model.onnx')));
writeFileSync(join(optimumDir, 'onnx/model.onnx'), optimumBytes);

const opts = { threads: 1, decodeThreads: 1 };
const shipped = await loadModel(MODEL_DIR, opts);
const rewritten = await loadModel(optimumDir, opts);
if (!rewritten.decoder.rewrittenFromConcat) throw new Error('the Optimum-form copy was not rewritten at load');
const asIs = await ort.InferenceSession.create(optimumBytes, sessionOptions(1));
const ids = shipped.tokenizer.encode(readFileSync(join(ROOT, 'test/fixtures/shakespeare-20k.txt'), 'utf8').slice(0, CONTEXT + STEPS));
const { layout } = shipped.info;

/** The first CONTEXT tokens' cache, computed once (in chunks) and shared by every side. */
async function prefix(decoder: OnnxDecoder): Promise<KvCache> {
  const cache = KvCache.empty(layout);
  for (let at = 0; at < CONTEXT; at += 256) {
    const n = Math.min(256, CONTEXT - at);
    const out = await decoder.forward({
      batch: 1,
      seqLen: n,
      pastLength: at,
      inputIds: ids.slice(at, at + n),
      positionIds: Array.from({ length: n }, (_, i) => at + i),
      past: cache.tensors,
    });
    cache.append(out.newKv, n);
  }
  return cache;
}
const context = await prefix(shipped.decoder);

/** ms per token over STEPS decode steps after the context, as the engine runs them: one row of a DecodeBatch, written in place. */
async function decodeLoop(decoder: OnnxDecoder): Promise<number> {
  const batch = new DecodeBatch<number>(layout);
  batch.add(0, context);
  const start = performance.now();
  for (let s = 0; s < STEPS; s++) {
    const at = CONTEXT + s;
    const lengths = [...batch.lengths];
    const out = await decoder.forward({
      batch: 1,
      seqLen: 1,
      pastLength: batch.slots,
      inputIds: [ids[at]!],
      positionIds: lengths,
      pastValid: lengths,
      past: batch.past(),
    });
    batch.append(out.newKv);
  }
  return (performance.now() - start) / STEPS;
}

/** The same steps on the unrewritten graph: present (the whole cache) becomes the next past. */
async function asIsLoop(): Promise<number> {
  const { kvHeads, headDim } = layout;
  let past: ort.Tensor[] = context.slice(CONTEXT).tensors.map((t) => new ort.Tensor('float32', t as Float32Array, [1, kvHeads, CONTEXT, headDim]));
  const start = performance.now();
  for (let s = 0; s < STEPS; s++) {
    const at = CONTEXT + s;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(ids[at]!)]), [1, 1]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(at + 1).fill(1n), [1, at + 1]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(at)]), [1, 1]),
    };
    for (let l = 0; l < layout.layers; l++) {
      feeds[`past_key_values.${l}.key`] = past[2 * l]!;
      feeds[`past_key_values.${l}.value`] = past[2 * l + 1]!;
    }
    const out = await asIs.run(feeds);
    past = Array.from({ length: 2 * layout.layers }, (_, i) => out[`present.${i >> 1}.${i % 2 === 0 ? 'key' : 'value'}`]!);
  }
  return (performance.now() - start) / STEPS;
}

log(`decode at a ${CONTEXT}-token context, ${STEPS} steps, ${REPS} interleaved reps, one thread`);
const [a, b, c] = await interleave(REPS, [() => decodeLoop(shipped.decoder), () => decodeLoop(rewritten.decoder), asIsLoop], (r, rep) =>
  log(`rep ${rep + 1}: shipped ${r[0]!.toFixed(3)} rewritten ${r[1]!.toFixed(3)} as-is ${r[2]!.toFixed(3)} ms/token`),
);
const result = {
  context_tokens: CONTEXT,
  steps: STEPS,
  reps: REPS,
  shipped_ms_per_token: round2(median(a!)),
  rewritten_ms_per_token: round2(median(b!)),
  as_is_ms_per_token: round2(median(c!)),
  rewritten_vs_shipped: round2(median(b!) / median(a!)),
  as_is_vs_shipped: round2(median(c!) / median(a!)),
  goal: 'rewritten_vs_shipped ≤ 1.10',
  ...benchMeta(),
};
writeFileSync(join(ROOT, 'bench/results/graph-forms.json'), `${JSON.stringify(result, null, 2)}\n`);
log(
  `| form | ms/token at ${CONTEXT} | vs shipped |\n|:--|--:|--:|\n| shipped | ${result.shipped_ms_per_token} | 1.00 |\n| Optimum form, rewritten at load | ${result.rewritten_ms_per_token} | ${result.rewritten_vs_shipped} |\n| Optimum form as exported | ${result.as_is_ms_per_token} | ${result.as_is_vs_shipped} |`,
);
await Promise.all([shipped.decoder.close(), rewritten.decoder.close(), asIs.release()]);
rmSync(optimumDir, { recursive: true, force: true });
