// A logits row the sampler cannot draw from (a broken model emitting only NaN) fails the
// request it belongs to with an internal error; the batch it was in decodes on, and the
// engine serves the next request. The model is the real one, with one row poisoned.
import t from 'tap';
import type { DecoderModel, ForwardOutput } from '../../../src/core/model.js';
import { type LoadedModel, loadModel } from '../../../src/runtime/load-model.js';
import { EngineHarness } from '../../helpers/engine.js';
import { MODEL_DIR } from '../../helpers/model.js';

const model = await loadModel(MODEL_DIR);
t.teardown(() => model.decoder.close());

/** Rows for which `poison(batch, row)` holds get all-NaN logits. */
let poison: (batch: number, row: number) => boolean = () => false;
const decoder: DecoderModel = {
  layout: model.decoder.layout,
  vocabSize: model.decoder.vocabSize,
  async forward(input): Promise<ForwardOutput> {
    const out = await model.decoder.forward(input);
    const nan = new Float32Array(model.decoder.vocabSize).fill(NaN);
    return { newKv: out.newKv, logits: (b, s) => (poison(input.batch, b) ? nan : out.logits(b, s)) };
  },
};
const h = new EngineHarness({ ...model, decoder } as unknown as LoadedModel, { limits: { maxRunning: 16, maxPrefillTokensPerStep: 64 } });
const prompts = ['ROMEO:\n', 'JULIET:\nO Romeo, Romeo!'];

t.test('a NaN row fails its own request; its batch neighbour gives the text it gives alone', async (t) => {
  const alone = await h.run(prompts[0]!, { maxTokens: 24, ignoreEos: true });
  let neighbourStarted!: () => void;
  const started = new Promise<void>((resolve) => (neighbourStarted = resolve));
  const neighbour = h.start(prompts[0]!, { maxTokens: 24, ignoreEos: true }, () => neighbourStarted());
  await started;
  // The second sequence joins as row 1 of a two-row batch: from then on its row is NaN.
  poison = (batch, row) => batch === 2 && row === 1;
  const victim = await h.run(prompts[1]!, { maxTokens: 24, ignoreEos: true });
  poison = () => false;
  t.equal(victim.done.finishReason, 'error');
  t.equal(victim.done.errorCode, 'internal');
  t.match(victim.done.error, /sampling failed/);
  const survivor = await neighbour.result;
  t.equal(survivor.done.finishReason, 'length');
  t.equal(survivor.text, alone.text, 'the neighbour is untouched');
  t.equal(h.engine.running, 0, 'nothing is left running');
});

t.test('a request whose first token cannot be sampled fails, and the engine serves the next', async (t) => {
  poison = () => true;
  const failed = await h.run(prompts[1]!, { maxTokens: 8 });
  poison = () => false;
  t.equal(failed.done.finishReason, 'error');
  t.equal(failed.done.errorCode, 'internal');
  const next = await h.run(prompts[1]!, { maxTokens: 8, ignoreEos: true });
  t.equal(next.done.finishReason, 'length');
  t.equal(next.done.usage.completionTokens, 8);
});
