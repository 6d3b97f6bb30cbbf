// The runtime serves both decoder graph forms: kvserve's (present.* = the new tokens' keys and
// values) and Hugging Face Optimum's (present.* = past + new). test/fixtures/tiny-llama holds one
// tiny random-weight model exported both ways (tools/export_fixture.py): same numbers expected.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../../src/runtime/load-model.js';
import { EngineHarness } from '../helpers/engine.js';
import { maxAbsDiff, runAll } from '../helpers/model.js';

const dir = (form: string) => fileURLToPath(new URL(`../fixtures/tiny-llama/${form}/`, import.meta.url));
const [fresh, concat] = await Promise.all([loadModel(dir('new')), loadModel(dir('concat'))]);
t.teardown(async () => {
  await fresh.decoder.close();
  await concat.decoder.close();
});

t.test('both forms give the same logits, step by step, from the cache', async (t) => {
  const ids = fresh.tokenizer.encode('ROMEO:\nBut soft, what light');
  const a = await runAll(fresh.decoder, ids.slice(0, 10));
  const b = await runAll(concat.decoder, ids.slice(0, 10));
  t.ok(maxAbsDiff(a.rows.at(-1)!, b.rows.at(-1)!) <= 1e-5, 'prefill');
  for (const id of ids.slice(10)) {
    const x = await runAll(fresh.decoder, [id], a.cache);
    const y = await runAll(concat.decoder, [id], b.cache);
    const diff = maxAbsDiff(x.rows[0]!, y.rows[0]!);
    if (diff > 1e-5) t.fail(`token ${id}: max |Δlogit| ${diff}`);
  }
  t.equal(a.cache.length, ids.length);
  for (const [i, k] of a.cache.tensors.entries()) {
    t.ok(maxAbsDiff(k as Float32Array, b.cache.tensors[i] as Float32Array) <= 1e-5, `cache tensor ${i}: same keys/values`);
  }
});

t.test('batched generation gives the same text with either form', async (t) => {
  const prompts = ['ROMEO:\n', 'JULIET:\nO Romeo', 'KING:\nWhat news'];
  const texts = async (model: typeof fresh) => {
    const h = new EngineHarness(model);
    return (await Promise.all(prompts.map((p, i) => h.run(p, { maxTokens: 30 + 10 * i, ignoreEos: true })))).map((r) => r.text);
  };
  const [x, y] = [await texts(fresh), await texts(concat)];
  t.same(x, y);
  t.ok(
    x.every((s) => s.length > 0),
    'every request generated text',
  );
});
