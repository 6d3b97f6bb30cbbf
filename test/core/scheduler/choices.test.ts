// n choices and prompt scoring in the engine on the real model, on the paths the HTTP tests do
// not reach: prompts longer than a prefill chunk (forked after the last chunk, scored across
// chunk boundaries), a warm prefix (forked from the batch row), and aborting a group.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { defaultSampling } from '../../../src/core/sampling/params.js';
import { loadModel } from '../../../src/runtime/load-model.js';
import { EngineHarness, greedy } from '../../helpers/engine.js';
import { MODEL_DIR, runAll } from '../../helpers/model.js';

const model = await loadModel(MODEL_DIR);
t.teardown(() => model.decoder.close());
const corpus = readFileSync(new URL('../../fixtures/shakespeare-20k.txt', import.meta.url), 'utf8');

t.test('n greedy choices of a prompt longer than a chunk equal a single greedy run, prompt computed once', async (t) => {
  const h = new EngineHarness(model, { limits: { maxPrefillTokensPerStep: 128 } });
  const prompt = corpus.slice(2000, 2600);
  const single = await h.run(prompt, { maxTokens: 20, ignoreEos: true });
  const h2 = new EngineHarness(model, { limits: { maxPrefillTokensPerStep: 128 } });
  const r = await h2.run(prompt, { maxTokens: 20, ignoreEos: true, n: 3 });
  t.equal(r.done.finishReason, 'length');
  t.equal(r.done.usage.completionTokens, 60, 'usage sums the choices');
  t.equal(h2.engine.cache.snapshot().computedTokens, model.tokenizer.encode(prompt).length, 'the prompt was computed once');
  // Greedy choices are identical: the interleaved text holds each of the single run's characters three times.
  t.same([...r.text].sort().join(''), [...single.text.repeat(3)].sort().join(''));
});

t.test('forked from a warm prefix (the batch row) and scored across chunk boundaries', async (t) => {
  const h = new EngineHarness(model, { limits: { maxPrefillTokensPerStep: 128 } });
  const prompt = corpus.slice(4000, 4400);
  await h.run(prompt, { maxTokens: 4 });
  const warm = await h.run(prompt, { maxTokens: 12, n: 4, sampling: { ...defaultSampling, seed: 3 }, ignoreEos: true });
  t.equal(warm.done.usage.completionTokens, 48);
  t.ok(warm.done.usage.cachedTokens > 0, 'choice 0 reused the cached prefix');

  const ids = model.tokenizer.encode(prompt);
  const scored = await h.run(prompt, { maxTokens: 0, promptLogprobs: 1 });
  t.equal(scored.done.usage.cachedTokens, 0, 'scoring takes nothing from the cache');
  const got = scored.done.promptLogprobs!;
  t.equal(got.length, ids.length - 1, 'every prompt token after the first is scored');
  const { rows } = await runAll(model.decoder, ids);
  let worst = 0;
  for (const [i, row] of rows.slice(0, -1).entries()) {
    let m = -Infinity;
    for (const x of row) m = Math.max(m, x);
    let s = 0;
    for (const x of row) s += Math.exp(x - m);
    worst = Math.max(worst, Math.abs(got[i]!.logprob - (row[ids[i + 1]!]! - m - Math.log(s))));
  }
  t.ok(worst < 1e-4, `within 1e-4 of one full forward pass, across 128-token chunks (worst ${worst})`);
});

t.test('aborting an n-choice request ends it once, every choice stopped', async (t) => {
  const h = new EngineHarness(model);
  const { id, result } = h.start(corpus.slice(0, 300), { maxTokens: 500, n: 3, ignoreEos: true, sampling: greedy });
  setTimeout(() => h.engine.abort(id), 200);
  const r = await result;
  t.equal(r.done.finishReason, 'abort');
  t.ok(r.done.usage.completionTokens < 1500);
  t.equal(h.engine.running, 0, 'no choice left running');
});
