// Continuous batching on the real model: a request's output does not depend on who runs beside
// it, the batch really forms, long prompts are prefilled in chunks between decode steps, and
// the admission limits (queue, timeout) hold.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { loadModel } from '../../../src/runtime/load-model.js';
import { EngineHarness, greedy, type Result } from '../../helpers/engine.js';
import { MODEL_DIR } from '../../helpers/model.js';

const model = await loadModel(MODEL_DIR);
t.teardown(() => model.decoder.close());
// The first 20,000 characters of the training text (test/fixtures), for realistic prompts.
const corpus = readFileSync(new URL('../../fixtures/shakespeare-20k.txt', import.meta.url), 'utf8');

/** Distinct prompts of varied length (a few long enough to need several prefill chunks). */
const prompts = Array.from({ length: 24 }, (_, i) => {
  const length = [12, 40, 90, 300, 7, 150][i % 6]!;
  const at = 500 + i * 787;
  return corpus.slice(at, at + length);
});
const maxTokensOf = (i: number) => 12 + ((i * 13) % 40);

/** Batch sizes the engine has run, from its step histogram (bucket upper bounds that saw steps). */
function batchSizesSeen(h: EngineHarness): number[] {
  const { bounds, counts } = h.engine.stepStats().batchSize;
  return counts.flatMap((c, i) => (c > 0 ? [bounds[i] ?? Infinity] : []));
}

t.test('greedy output is token-identical alone and in a batch of 16 with requests joining and leaving', async (t) => {
  const alone: Result[] = [];
  const single = new EngineHarness(model, { limits: { maxRunning: 1, maxPrefillTokensPerStep: 64 } });
  for (const [i, p] of prompts.entries()) alone.push(await single.run(p, { maxTokens: maxTokensOf(i), ignoreEos: true }));
  t.same(batchSizesSeen(single), [1], 'alone: every step had batch size 1');

  const batched = new EngineHarness(model, { limits: { maxRunning: 16, maxPrefillTokensPerStep: 64 } });
  const results: Array<Promise<Result>> = [];
  let next = 16;
  const submit = (i: number): void => {
    const result = batched.run(prompts[i]!, { maxTokens: maxTokensOf(i), ignoreEos: true });
    results[i] = result;
    // Each finish lets one more request join the running batch.
    void result.then(() => {
      if (next < prompts.length) submit(next++);
    });
  };
  for (let i = 0; i < 16; i++) submit(i);
  await new Promise<void>((resolve) => {
    const poll = setInterval(() => {
      if (results.length === prompts.length) {
        clearInterval(poll);
        resolve();
      }
    }, 5);
  });
  const together = await Promise.all(results);
  for (const [i, r] of together.entries()) {
    t.equal(r.done.finishReason, 'length', `request ${i} ran to max_tokens`);
    t.equal(r.text, alone[i]!.text, `request ${i} (${prompts[i]!.length}-token prompt): same text as alone`);
    t.equal(r.done.usage.completionTokens, maxTokensOf(i));
  }
  const sizes = batchSizesSeen(batched);
  t.ok(
    sizes.some((s) => s >= 12),
    `steps ran with up to 16 sequences (buckets seen: ${sizes.join(', ')})`,
  );
  t.ok(
    sizes.every((s) => s <= 16),
    'never more than maxRunning sequences per step',
  );
});

t.test('seeded sampling gives the same text alone and beside other requests', async (t) => {
  const sampling = { ...greedy, temperature: 1, topK: 40, seed: 1234 };
  const single = new EngineHarness(model);
  const alone = await single.run(prompts[2]!, { maxTokens: 40, sampling });
  const h = new EngineHarness(model);
  const noise = prompts.slice(5, 13).map((p, i) => h.run(p, { maxTokens: 30 + i, sampling: { ...sampling, seed: i } }));
  const beside = h.run(prompts[2]!, { maxTokens: 40, sampling });
  await Promise.all(noise);
  t.equal((await beside).text, alone.text);
});

t.test('a long prompt is prefilled in chunks between the decode steps of running streams', async (t) => {
  const h = new EngineHarness(model, { limits: { maxPrefillTokensPerStep: 64 } });
  let runnerDeltas = 0;
  let newcomerStarted = false;
  let runnerDeltasDuringPrefill = 0;
  const runner = h.start(prompts[0]!, { maxTokens: 200, ignoreEos: true }, () => {
    runnerDeltas++;
  });
  while (runnerDeltas < 3) await new Promise((r) => setImmediate(r));
  const before = runnerDeltas;
  const long = corpus.slice(19_000, 20_000);
  const newcomer = h.start(long, { maxTokens: 5, ignoreEos: true }, () => {
    if (!newcomerStarted) runnerDeltasDuringPrefill = runnerDeltas - before;
    newcomerStarted = true;
  });
  const n = await newcomer.result;
  t.equal(n.done.usage.completionTokens, 5);
  // 1,000 prompt tokens at 64 a step: 16 steps, each also decoding the running stream.
  t.ok(runnerDeltasDuringPrefill >= 14, `the running stream got ${runnerDeltasDuringPrefill} tokens during the newcomer's prefill`);
  h.engine.abort(runner.id);
  await runner.result;
});

t.test('a full queue refuses at once; queued requests run when a slot frees', async (t) => {
  const h = new EngineHarness(model, { limits: { maxRunning: 1, maxQueued: 1 } });
  const first = h.run(prompts[0]!, { maxTokens: 30, ignoreEos: true });
  const second = h.run(prompts[1]!, { maxTokens: 5, ignoreEos: true });
  let firstDone = false;
  void first.then(() => (firstDone = true));
  const third = await h.run(prompts[2]!, { maxTokens: 5 });
  t.equal(third.done.errorCode, 'queue_full');
  t.equal(third.done.finishReason, 'error');
  t.notOk(firstDone, 'refused while the first request was still running');
  t.equal(h.engine.waiting, 1, 'the second request is queued');
  t.equal((await first).done.finishReason, 'length');
  const s = await second;
  t.equal(s.done.finishReason, 'length');
  t.ok(s.done.queueMs! > 0, `queue time measured: ${s.done.queueMs!.toFixed(1)} ms`);
});

t.test('the request timeout ends running and queued requests', async (t) => {
  const h = new EngineHarness(model, { limits: { maxRunning: 1, requestTimeoutMs: 300 } });
  const running = h.run(prompts[0]!, { maxTokens: 1900, ignoreEos: true });
  const queued = h.run(prompts[1]!, { maxTokens: 50, ignoreEos: true });
  t.equal(h.engine.waiting, 1, 'the second request waits for the only slot');
  const [r, q] = await Promise.all([running, queued]);
  t.equal(r.done.errorCode, 'request_timeout');
  t.ok(r.done.usage.completionTokens > 0 && r.done.usage.completionTokens < 1900, `ran ${r.done.usage.completionTokens} tokens first`);
  // Both deadlines fall at the same moment: the queued request ends in the queue, or just
  // after the freed slot let it start — never by running to its 50 tokens.
  t.equal(q.done.errorCode, 'request_timeout');
  t.ok(q.done.usage.completionTokens < 50, `queued request: ${q.done.usage.completionTokens} tokens`);
  t.equal(h.engine.running + h.engine.waiting, 0);
});

t.test('float16 KV: greedy output is the same alone and batched', async (t) => {
  const half = await loadModel(MODEL_DIR, { onnxFile: 'onnx/model_fp16.onnx' });
  t.teardown(() => half.decoder.close());
  t.equal(half.info.layout.dtype, 'float16');
  const some = prompts.slice(0, 8);
  const single = new EngineHarness(half, { limits: { maxRunning: 1 } });
  const alone: string[] = [];
  for (const [i, p] of some.entries()) alone.push((await single.run(p, { maxTokens: maxTokensOf(i), ignoreEos: true })).text);
  const batched = new EngineHarness(half);
  const together = await Promise.all(some.map((p, i) => batched.run(p, { maxTokens: maxTokensOf(i), ignoreEos: true })));
  t.same(
    together.map((r) => r.text),
    alone,
  );
  t.ok(
    batchSizesSeen(batched).some((s) => s >= 6),
    'steps ran batched',
  );
});
