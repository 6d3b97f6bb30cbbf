// The KV cache's contract, on the real model through onnxruntime-node: decoding token by
// token from cached keys/values gives the same logits and the same greedy text as
// recomputing the whole sequence without a cache — in float32 and in float16.
import t from 'tap';
import { loadModel } from '../../src/runtime/load-model.js';
import { KvCache } from '../../src/core/kv/kv-cache.js';
import { FP16_FILE, MODEL_DIR, argmax, maxAbsDiff, runAll } from '../helpers/model.js';

const variants = [
  // float32: logits agree to 1e-4 absolute.
  { name: 'float32', file: undefined, tolerance: (_: number) => 1e-4 },
  // float16 logits carry 11 significant bits: allow one float16 ulp of the value.
  { name: 'float16', file: FP16_FILE, tolerance: (v: number) => Math.max(1e-4, Math.abs(v) * 2 ** -10) },
];

for (const variant of variants) {
  t.test(`${variant.name}: cached decoding equals recomputation`, async (t) => {
    const { decoder, tokenizer, info } = await loadModel(MODEL_DIR, { onnxFile: variant.file });
    t.teardown(() => decoder.close());
    t.equal(info.layout.dtype, variant.name, 'KV dtype discovered from the graph');

    const text = 'KING RICHARD III:\nNow is the winter of our discontent\nMade glorious summer';
    const ids = tokenizer.encode(text);
    const { rows: full } = await runAll(decoder, ids);

    // Prefill 8 tokens, then feed one token at a time from the cache.
    const { rows: first, cache } = await runAll(decoder, ids.slice(0, 8));
    const incremental = [...first];
    for (const id of ids.slice(8)) incremental.push((await runAll(decoder, [id], cache)).rows[0]!);
    t.equal(cache.length, ids.length, 'cache holds every token');

    for (const pos of [0, 7, 8, 20, ids.length - 1]) {
      const a = full[pos]!;
      const b = incremental[pos]!;
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) - variant.tolerance(a[i]!));
      t.ok(worst <= 0, `position ${pos}: max |Δlogit| ${maxAbsDiff(a, b).toExponential(2)} within tolerance`);
    }
  });

  t.test(`${variant.name}: greedy text with the cache equals greedy text recomputed`, async (t) => {
    const { decoder, tokenizer } = await loadModel(MODEL_DIR, { onnxFile: variant.file });
    t.teardown(() => decoder.close());
    const prompt = tokenizer.encode('ROMEO:\n');
    const steps = 80;

    const cached: number[] = [];
    let { rows, cache } = await runAll(decoder, prompt);
    for (let i = 0; i < steps; i++) {
      cached.push(argmax(rows[rows.length - 1]!));
      ({ rows, cache } = await runAll(decoder, [cached[i]!], cache));
    }

    const recomputed: number[] = [];
    for (let i = 0; i < steps; i++) {
      const { rows: all } = await runAll(decoder, [...prompt, ...recomputed], KvCache.empty(decoder.layout));
      recomputed.push(argmax(all[all.length - 1]!));
    }
    t.same(cached, recomputed, `${steps} greedy tokens identical`);
    t.ok(tokenizer.decode(cached).trim().length > 0, 'generated some text');
  });
}

t.test('rows with unused past slots in one batch give the logits of each row alone', async (t) => {
  const { decoder, tokenizer } = await loadModel(MODEL_DIR);
  t.teardown(() => decoder.close());
  const { kvHeads, headDim, layers } = decoder.layout;
  const prompts = ['ROMEO:\nWhat', 'JULIET:\nO Romeo, Romeo! wherefore art thou', 'KING:'].map((s) => tokenizer.encode(s));
  // Each row alone: its prompt but the last token cached, then one step feeding the last token.
  const caches: KvCache[] = [];
  const alone: Float32Array[] = [];
  for (const p of prompts) {
    const { cache } = await runAll(decoder, p.slice(0, -1));
    caches.push(cache);
    const copy = KvCache.of(
      decoder.layout,
      cache.tensors.map((x) => x.slice()),
      cache.length,
    );
    alone.push((await runAll(decoder, p.slice(-1), copy)).rows[0]!);
  }
  // One batch: every row's cache in its first slots, the unused slots after it full of junk.
  const lengths = caches.map((c) => c.length);
  /** One decode step over `rows` of the caches, each in `slots` slots. */
  const step = (rows: number[], slots: number) => {
    const past = Array.from({ length: 2 * layers }, (_, i) => {
      const buf = new Float32Array(rows.length * kvHeads * slots * headDim).fill(1e4);
      for (const [b, r] of rows.entries()) {
        const c = caches[r]!;
        for (let h = 0; h < kvHeads; h++) {
          const n = c.length * headDim;
          buf.set((c.tensors[i] as Float32Array).subarray(h * n, (h + 1) * n), (b * kvHeads + h) * slots * headDim);
        }
      }
      return buf;
    });
    const valid = rows.map((r) => lengths[r]!);
    return decoder.forward({
      batch: rows.length,
      seqLen: 1,
      pastLength: slots,
      inputIds: rows.map((r) => prompts[r]!.at(-1)!),
      positionIds: valid,
      pastValid: valid,
      past,
    });
  };
  const all = [0, 1, 2];
  const out = await step(all, Math.max(...lengths) + 7);
  for (const [b, row] of alone.entries()) {
    const diff = maxAbsDiff(Float32Array.from(out.logits(b, 0)), row);
    t.ok(diff <= 1e-5, `row ${b} (${lengths[b]} tokens, ${Math.max(...lengths) + 7 - lengths[b]!} unused slots): max |Δlogit| ${diff.toExponential(2)}`);
    t.equal(argmax(out.logits(b, 0)), argmax(row), `row ${b}: same greedy token`);
  }
  // The new keys/values come back per row, one slot each.
  t.equal(out.newKv.length, 2 * layers);
  t.equal(out.newKv[0]!.length, prompts.length * kvHeads * headDim);

  // With slots in multiples of 32 (the decode batch's SLOT_ROUND), a row's logits are exactly
  // the same alone or beside others, whatever the slot count.
  for (const [r] of prompts.entries()) {
    const reference = Float32Array.from((await step([r], 64)).logits(0, 0));
    for (const slots of [96, 160, 512]) {
      const batched = await step(all, slots);
      t.equal(maxAbsDiff(Float32Array.from(batched.logits(r, 0)), reference), 0, `row ${r}: ${slots} slots in a batch of 3 == 64 slots alone, bit for bit`);
    }
  }
});
