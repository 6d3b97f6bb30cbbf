// Prompts prefilled beside the decode batch (Engine #offload) on the real model: the same
// tokens as when prefilled inline, chunk after chunk; a request that ends while its chunk is
// out is dropped cleanly; a failing or gone prefill model fails only the request it served,
// or is not used at all.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { MessageChannel } from 'node:worker_threads';
import type { DecoderModel, ForwardInput, ForwardOutput, PrefillModel } from '../../../src/core/model.js';
import { type LoadedModel, loadModel } from '../../../src/runtime/load-model.js';
import { OnnxDecoder } from '../../../src/runtime/onnx-decoder.js';
import { EngineHarness, type Result } from '../../helpers/engine.js';
import { MODEL_DIR } from '../../helpers/model.js';

const model = await loadModel(MODEL_DIR);
// A second copy on one thread, as the prefill thread opens it (here called in-process).
const second = await OnnxDecoder.load(model.info.onnxPath, { threads: 1, decodeThreads: 1 });
t.teardown(async () => {
  await model.decoder.close();
  await second.close();
});
const corpus = readFileSync(new URL('../../fixtures/shakespeare-20k.txt', import.meta.url), 'utf8');
const text = (at: number, length: number): string => corpus.slice(at, at + length);

/** A prefill model over `second` that counts its calls; `hold` lets a test delay or fail them. */
class TestPrefill implements PrefillModel {
  readonly layout = second.layout;
  readonly vocabSize = second.vocabSize;
  alive = true;
  calls: ForwardInput[] = [];
  hold: ((input: ForwardInput) => Promise<void>) | undefined;
  async forward(input: ForwardInput): Promise<ForwardOutput> {
    this.calls.push(input);
    await this.hold?.(input);
    return second.forward(input);
  }
}

const LIMITS = { maxRunning: 16, maxPrefillTokensPerStep: 64 };
const runner = text(100, 30);
const newcomers = [text(2000, 40), text(5000, 150), text(9000, 64), text(12000, 9)];

/** Starts `runner` and resolves once it is decoding (its first token is out), with its result. */
async function startRunner(h: EngineHarness, maxTokens = 120): Promise<{ result: Promise<Result> }> {
  let started!: () => void;
  const decoding = new Promise<void>((resolve) => (started = resolve));
  const { result } = h.start(runner, { maxTokens, ignoreEos: true }, () => started());
  await decoding;
  return { result };
}

t.test('prompts prefilled beside the batch give the tokens they give inline', async (t) => {
  const inline = new EngineHarness(model, { limits: LIMITS });
  const alone: Result[] = [];
  for (const p of [runner, ...newcomers]) alone.push(await inline.run(p, { maxTokens: p === runner ? 120 : 40, ignoreEos: true }));

  const prefill = new TestPrefill();
  const h = new EngineHarness(model, { limits: LIMITS, prefillModel: prefill });
  const first = (await startRunner(h)).result;
  const rest = newcomers.map((p) => h.run(p, { maxTokens: 40, ignoreEos: true }));
  const together = [await first, ...(await Promise.all(rest))];
  for (const [i, r] of together.entries()) {
    t.equal(r.done.finishReason, 'length', `request ${i} ran to max_tokens`);
    t.equal(r.text, alone[i]!.text, `request ${i}: same text as prefilled inline`);
  }
  // 40 → 1 chunk, 150 → 3, 64 → 1, 9 → 1 (the runner's own prompt ran inline: nothing was decoding).
  t.equal(prefill.calls.length, 6, 'every newcomer chunk ran on the prefill model');
  t.same(
    prefill.calls.map((c) => [c.seqLen, c.pastLength]).filter(([, past]) => past! > 0),
    [
      [64, 64],
      [22, 128],
    ],
    'a long prompt went chunk after chunk, each over the chunks before it',
  );
  t.equal(h.engine.running, 0);
});

t.test('a sequence whose last chunk came back during a step decodes in the next step', async (t) => {
  // The prefill thread's result is a message; here the prefill model's result is one too,
  // posted as a decode step's model call returns: it came in during that step. It must be
  // taken in before the next step is laid out, so that exactly one of the runner's tokens
  // (that next step's) lies between the newcomer's first two.
  const channel = new MessageChannel();
  t.teardown(() => channel.port1.close());
  let deliver: (() => void) | undefined;
  const prefill: PrefillModel = {
    layout: second.layout,
    vocabSize: second.vocabSize,
    alive: true,
    async forward(input) {
      const out = await second.forward(input);
      await new Promise<void>((resolve) => {
        channel.port1.once('message', () => resolve());
        deliver = () => channel.port2.postMessage(null);
      });
      return out;
    },
  };
  const decoder: DecoderModel = {
    layout: model.decoder.layout,
    vocabSize: model.decoder.vocabSize,
    async forward(input) {
      const out = await model.decoder.forward(input);
      deliver?.();
      deliver = undefined;
      return out;
    },
  };
  const h = new EngineHarness({ ...model, decoder } as unknown as LoadedModel, { limits: LIMITS, prefillModel: prefill });
  const log: string[] = [];
  let started!: () => void;
  const decoding = new Promise<void>((resolve) => (started = resolve));
  const runner = h.start(text(100, 30), { maxTokens: 1000, ignoreEos: true }, (_, id) => {
    log.push(id);
    started();
  });
  await decoding;
  for (const [i, prompt] of newcomers.entries()) {
    const { id, result } = h.start(prompt, { maxTokens: 4, ignoreEos: true }, (_, id) => log.push(id));
    await result;
    const first = log.indexOf(id);
    const between = log.slice(first + 1, log.indexOf(id, first + 1));
    t.same(between, [runner.id], `newcomer ${i} (${prompt.length} tokens): one runner token between its first two`);
  }
  h.engine.abort(runner.id);
  t.equal((await runner.result).done.finishReason, 'abort', 'the runner was still decoding throughout');
});

t.test('a request that ends while its chunk is out is dropped; the batch decodes on', async (t) => {
  const prefill = new TestPrefill();
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let out!: () => void;
  const chunkOut = new Promise<void>((resolve) => (out = resolve));
  prefill.hold = async () => {
    out();
    await released;
  };
  const h = new EngineHarness(model, { limits: LIMITS, prefillModel: prefill });
  const first = (await startRunner(h, 60)).result;
  const victim = h.start(newcomers[1]!, { maxTokens: 40 });
  await chunkOut;
  h.engine.abort(victim.id);
  const aborted = await victim.result;
  t.equal(aborted.done.finishReason, 'abort', 'the aborted request ends as aborted');
  t.equal(aborted.done.usage.completionTokens, 0);
  // Its chunk is still held: the running request decodes to its end meanwhile.
  const done = (await first).done;
  t.equal(done.finishReason, 'length', 'the running request finished while the chunk was out');
  t.equal(done.usage.completionTokens, 60);
  t.equal(h.engine.running, 0);
  release();
  await h.engine.idle();
  t.equal(h.engine.running, 0, 'nothing left running');
  t.equal(prefill.calls.length, 1, 'the dropped chunk was not followed by another');
});

t.test('a failing prefill call fails its request only; a gone prefill model is not used', async (t) => {
  const failing = new TestPrefill();
  failing.hold = async () => {
    throw new Error('prefill exploded');
  };
  const h = new EngineHarness(model, { limits: LIMITS, prefillModel: failing });
  const first = (await startRunner(h, 40)).result;
  const failed = await h.run(newcomers[0]!, { maxTokens: 10 });
  t.equal(failed.done.finishReason, 'error');
  t.equal(failed.done.errorCode, 'internal');
  t.match(failed.done.error, /prefill exploded/);
  t.equal((await first).done.finishReason, 'length', 'the running request was not affected');

  const inline = new EngineHarness(model, { limits: LIMITS });
  const expected = await inline.run(newcomers[0]!, { maxTokens: 10 });
  const gone = new TestPrefill();
  gone.alive = false;
  const h2 = new EngineHarness(model, { limits: LIMITS, prefillModel: gone });
  const first2 = (await startRunner(h2, 40)).result;
  const r = await h2.run(newcomers[0]!, { maxTokens: 10 });
  t.equal(r.text, expected.text, 'prefilled inline instead, same text');
  t.equal(gone.calls.length, 0, 'the gone model was never called');
  await first2;
});
