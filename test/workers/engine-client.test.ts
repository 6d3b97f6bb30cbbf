// The engine worker seen from the main thread: start-up, readiness, streaming, abort.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { EngineClient, workerConfigOf } from '../../src/workers/engine-client.js';
import type { DoneEvent } from '../../src/core/scheduler/events.js';
import { loadModel } from '../../src/runtime/load-model.js';
import { EngineHarness, greedy } from '../helpers/engine.js';
import { MODEL_DIR } from '../helpers/model.js';

const client = await EngineClient.start(workerConfigOf(loadConfig({ MODEL_DIR })));
t.teardown(() => client.close());

t.test('answers pings and describes the model', async (t) => {
  t.equal(await client.ping(), true);
  t.equal(client.info.id, 'tiny-shakespeare');
  t.equal(client.info.layout.layers, 4);
});

t.test('streams the same text as the in-process engine', async (t) => {
  const prompt = 'HAMLET:\n';
  const deltas: string[] = [];
  let done: DoneEvent | undefined;
  for await (const e of client.generate({ promptIds: client.tokenizer.encode(prompt), maxTokens: 50, sampling: greedy, ignoreEos: true })) {
    if (e.type === 'delta') deltas.push(e.text);
    else if (e.type === 'done') done = e;
  }
  t.equal(done?.finishReason, 'length');
  const model = await loadModel(MODEL_DIR);
  t.teardown(() => model.decoder.close());
  const local = await new EngineHarness(model).run(prompt, { maxTokens: 50, ignoreEos: true });
  t.equal(deltas.join('') + (done?.text ?? ''), local.text);
});

t.test('an AbortSignal stops the worker within a step and it reports the abort', async (t) => {
  const controller = new AbortController();
  let deltas = 0;
  let done: DoneEvent | undefined;
  for await (const e of client.generate(
    { promptIds: client.tokenizer.encode('ROMEO:\n'), maxTokens: 2000, sampling: greedy, ignoreEos: true },
    controller.signal,
  )) {
    if (e.type === 'delta' && ++deltas === 3) controller.abort();
    if (e.type === 'done') done = e;
  }
  t.equal(done?.finishReason, 'abort');
  // The worker runs ahead of this thread by the message latency (a step takes ~1 ms here);
  // the in-process engine test pins the step-boundary semantics exactly.
  t.ok(done!.usage.completionTokens < 100, `worker computed ${done!.usage.completionTokens} tokens, not 2000`);
  t.equal(await client.ping(), true, 'worker still serving');
});

t.test('a broken model directory rejects start-up with the loader line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-empty-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await t.rejects(EngineClient.start(workerConfigOf(loadConfig({ MODEL_DIR: dir }))), { message: /no ONNX model found/ });
});

t.test('close() while a step runs: running work ends as aborted and the worker exits cleanly', async (t) => {
  const busy = await EngineClient.start(workerConfigOf(loadConfig({ MODEL_DIR })));
  const events = busy.generate({ promptIds: busy.tokenizer.encode('ROMEO:'), maxTokens: 2000, sampling: greedy, ignoreEos: true });
  let deltas = 0;
  let done: DoneEvent | undefined;
  for await (const e of events) {
    if (e.type === 'delta' && ++deltas === 5) void busy.close();
    if (e.type === 'done') done = e;
  }
  // Terminating the thread in the middle of an onnxruntime call aborted the whole process
  // ("terminate called after throwing an instance of 'Napi::Error'"): this test would not end.
  t.equal(done?.finishReason, 'abort', 'the running request ends as aborted, not as a failure');
  t.ok(deltas < 2000);
  t.equal(await busy.close(), 0, 'the worker exits with code 0');
  t.equal(busy.alive, false);
});
