// The generation engine on the real shipped model: finish reasons, stop sequences across
// token boundaries, seeded sampling, UTF-8-safe deltas, abort, interleaved requests.
import t from 'tap';
import { loadModel } from '../../../src/runtime/load-model.js';
import { EngineHarness, greedy } from '../../helpers/engine.js';
import { MODEL_DIR } from '../../helpers/model.js';

const model = await loadModel(MODEL_DIR);
t.teardown(() => model.decoder.close());
const h = new EngineHarness(model);
const utf8Length = (s: string) => Buffer.byteLength(s, 'utf8');

t.test('max_tokens ends with finish_reason length after exactly max_tokens tokens', async (t) => {
  const r = await h.run('ROMEO:\n', { maxTokens: 17, ignoreEos: true });
  t.equal(r.done.finishReason, 'length');
  t.equal(r.done.usage.completionTokens, 17);
  t.equal(r.done.usage.promptTokens, utf8Length('ROMEO:\n'));
  t.equal(utf8Length(r.text), 17, 'byte-level model: one byte per token, all emitted');
});

t.test('an EOS token ends with finish_reason stop and is not emitted', async (t) => {
  const prompt = 'ROMEO:\nWhat';
  const free = await h.run(prompt, { maxTokens: 120, ignoreEos: true });
  const newline = free.text.indexOf('\n');
  t.ok(newline > 0, 'the unconstrained text contains a line break');
  // Declare "\n" (id 10) an end-of-sequence token: generation must end exactly there.
  const withEos = new EngineHarness(model, { eosIds: [10] });
  const r = await withEos.run(prompt, { maxTokens: 120 });
  t.equal(r.done.finishReason, 'stop');
  t.equal(r.text, free.text.slice(0, newline), 'text up to, not including, the EOS token');
  t.equal(r.done.usage.completionTokens, utf8Length(r.text) + 1, 'the EOS token is counted');
});

t.test('stop sequences spanning several tokens end generation and are not returned', async (t) => {
  const free = await h.run('JULIET:\n', { maxTokens: 100, ignoreEos: true });
  const stop = free.text.slice(30, 36);
  t.equal(utf8Length(stop), 6, 'the stop string spans six tokens');
  const r = await h.run('JULIET:\n', { maxTokens: 100, ignoreEos: true, stop: ['zzzz-never', stop] });
  t.equal(r.done.finishReason, 'stop');
  t.equal(r.text, free.text.slice(0, free.text.indexOf(stop)));
  t.notOk(
    r.deltas.some((d) => d.includes(stop)),
    'no delta carries the stop text',
  );
});

t.test('seeded sampling is deterministic per seed', async (t) => {
  const sampling = { ...greedy, temperature: 1, topP: 0.95 };
  const a = await h.run('KING:\n', { maxTokens: 60, sampling: { ...sampling, seed: 42 } });
  const b = await h.run('KING:\n', { maxTokens: 60, sampling: { ...sampling, seed: 42 } });
  const c = await h.run('KING:\n', { maxTokens: 60, sampling: { ...sampling, seed: 7 } });
  t.equal(a.text, b.text, 'same seed, same text');
  t.not(a.text, c.text, 'another seed, another text');
});

t.test('deltas are UTF-8 safe and add up to the decoded tokens', async (t) => {
  // A near-uniform distribution over 257 byte tokens produces multi-byte and invalid sequences.
  const prompt = '東京 café 😀 ';
  const r = await h.run(prompt, { maxTokens: 200, ignoreEos: true, sampling: { ...greedy, temperature: 8, seed: 3 } });
  const split = r.deltas.filter((d) => /[\ud800-\udbff]$/.test(d) || /^[\udc00-\udfff]/.test(d));
  t.same(split, [], 'no delta splits a surrogate pair');
  t.equal(r.text, model.tokenizer.decode(model.tokenizer.encode(r.text)), 'deltas form well-formed text');
  t.equal(r.done.usage.completionTokens, 200);
  t.ok(r.deltas.length > 1, 'streamed in several deltas');
});

t.test('interleaved requests produce the same text as each alone', async (t) => {
  const prompts = ['ROMEO:\n', 'First Citizen:\n', 'DUKE VINCENTIO:\n'];
  const alone = [];
  for (const p of prompts) alone.push((await h.run(p, { maxTokens: 40, ignoreEos: true })).text);
  const together = await Promise.all(prompts.map((p) => h.run(p, { maxTokens: 40, ignoreEos: true })));
  t.same(
    together.map((r) => r.text),
    alone,
  );
});

t.test('abort stops generation at the next step', async (t) => {
  let seen = 0;
  const { id, result } = h.start('MERCUTIO:\n', { maxTokens: 1000, ignoreEos: true }, () => {
    if (++seen === 3) h.engine.abort(id);
  });
  const r = await result;
  t.equal(r.done.finishReason, 'abort');
  t.ok(r.done.usage.completionTokens <= 4, `stopped after ${r.done.usage.completionTokens} tokens`);
  t.equal(h.engine.running, 0, 'nothing left running');
});

t.test('generation stops at the context length', async (t) => {
  const small = new EngineHarness(model, { contextLength: 32 });
  const prompt = 'ROMEO:\nBut soft!';
  const r = await small.run(prompt, { maxTokens: 500, ignoreEos: true });
  t.equal(r.done.finishReason, 'length');
  t.equal(r.done.usage.promptTokens + r.done.usage.completionTokens, 32);
});
