// Optimum-form graphs (present.* = Concat(past, new)) are rewritten at load so that present.*
// holds only the new tokens: the engine's step never copies the cache out of onnxruntime.
// Checked on an Optimum-form copy of the shipped model (bench/lib/onnx-present.ts appends the
// Concat), on the tiny fixture exported in that form, and with weights in an external file.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { concatPresentOutputs } from '../../bench/lib/onnx-present.js';
import { loadModel } from '../../src/runtime/load-model.js';
import { readOnnxGraph } from '../../src/runtime/onnx/graph.js';
import { concatSources, newTokensOnly } from '../../src/runtime/onnx/new-tokens-only.js';
import { sessionOptions } from '../../src/runtime/onnx-decoder.js';
import { externalizeOnnx } from '../helpers/onnx-external-data.js';
import { EngineHarness } from '../helpers/engine.js';
import { MODEL_DIR, maxRelDiff, runAll } from '../helpers/model.js';

const shippedBytes = readFileSync(join(MODEL_DIR, 'onnx/model.onnx'));

/** A copy of the shipped model directory whose graph is `onnx` bytes. */
function modelDirWith(t: { teardown(fn: () => void): void }, onnx: Uint8Array): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-optimum-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'onnx'));
  for (const f of readdirSync(MODEL_DIR)) if (f.endsWith('.json')) copyFileSync(join(MODEL_DIR, f), join(dir, f));
  writeFileSync(join(dir, 'onnx/model.onnx'), onnx);
  return dir;
}

/** Sequence length of present.0.key after one step of 1 token over a past of `past` tokens, run by onnxruntime itself. */
async function presentLength(model: string | Uint8Array, past: number): Promise<number> {
  const session =
    typeof model === 'string' ? await ort.InferenceSession.create(model, sessionOptions(1)) : await ort.InferenceSession.create(model, sessionOptions(1));
  try {
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from([65n]), [1, 1]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(past + 1).fill(1n), [1, past + 1]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(past)]), [1, 1]),
    };
    for (const m of session.inputMetadata) {
      if (m.name.startsWith('past_key_values.')) feeds[m.name] = new ort.Tensor('float32', new Float32Array(4 * past * 32), [1, 4, past, 32]);
    }
    const out = await session.run(feeds);
    return (out['present.0.key']!.dims as number[])[2]!;
  } finally {
    await session.release();
  }
}

t.test('the shipped graph is already in kvserve form: nothing to rewrite', async (t) => {
  t.equal(concatSources(readOnnxGraph(shippedBytes)), undefined);
  t.equal(newTokensOnly(shippedBytes), undefined);
});

t.test('an Optimum-form graph is recognised and rewritten: present.* holds only the new token', async (t) => {
  const optimum = concatPresentOutputs(shippedBytes);
  const sources = concatSources(readOnnxGraph(optimum));
  t.equal(sources?.size, 8, 'every present output of the 4 layers comes from a Concat with its past');
  t.equal(await presentLength(optimum, 5), 6, 'as exported: past + new');
  const rewritten = newTokensOnly(optimum)!;
  t.equal(await presentLength(rewritten, 5), 1, 'rewritten: the new token only');
});

t.test('loading an Optimum-form copy of the shipped model gives the shipped logits, exactly', async (t) => {
  const optimum = await loadModel(modelDirWith(t, concatPresentOutputs(shippedBytes)));
  const shipped = await loadModel(MODEL_DIR);
  t.teardown(async () => {
    await optimum.decoder.close();
    await shipped.decoder.close();
  });
  t.equal(optimum.decoder.rewrittenFromConcat, true, 'rewritten at load');
  t.equal(shipped.decoder.rewrittenFromConcat, false);
  const ids = shipped.tokenizer.encode('ROMEO:\nBut soft, what light through yonder window breaks?');
  const a = await runAll(shipped.decoder, ids.slice(0, 20));
  const b = await runAll(optimum.decoder, ids.slice(0, 20));
  t.same(b.rows.at(-1), a.rows.at(-1), 'prefill logits bit-identical');
  // Decode steps agree to float noise: the graphs differ by a removed Concat, which can move
  // onnxruntime's buffers (and so its summation order) by a few ulps — how many depends on the
  // CPU's kernels (an AVX2 EPYC: 1.05e-5 on logits up to 13.8, ~11 ulps), so the bound is
  // relative to the row's largest logit. A wrong cache moves logits by whole units.
  let worst = 0;
  for (const id of ids.slice(20)) {
    const x = await runAll(shipped.decoder, [id], a.cache);
    const y = await runAll(optimum.decoder, [id], b.cache);
    worst = Math.max(worst, maxRelDiff(x.rows[0]!, y.rows[0]!));
  }
  t.ok(worst <= 1e-5, `every step's logits within 1e-5 of the largest logit (worst ${worst.toExponential(2)})`);
  const greedy = async (model: typeof shipped) => (await new EngineHarness(model).run('HAMLET:\n', { maxTokens: 48, ignoreEos: true })).text;
  t.equal(await greedy(optimum), await greedy(shipped), '48 greedy tokens identical');
});

t.test('weights in an external data file: the rewritten graph still finds them', async (t) => {
  const dir = modelDirWith(t, concatPresentOutputs(shippedBytes));
  const external = mkdtempSync(join(tmpdir(), 'kvserve-optimum-ext-'));
  t.teardown(() => rmSync(external, { recursive: true, force: true }));
  const { modelPath } = await externalizeOnnx(join(dir, 'onnx/model.onnx'), external);
  for (const f of readdirSync(external)) copyFileSync(join(external, f), join(dir, 'onnx', f));
  t.ok(readFileSync(join(dir, 'onnx/model.onnx')).length < shippedBytes.length / 10, `the graph file holds no weights (${modelPath})`);
  const optimum = await loadModel(dir);
  const shipped = await loadModel(MODEL_DIR);
  t.teardown(async () => {
    await optimum.decoder.close();
    await shipped.decoder.close();
  });
  t.equal(optimum.decoder.rewrittenFromConcat, true);
  const ids = shipped.tokenizer.encode('JULIET:\nO Romeo, Romeo!');
  const a = await runAll(shipped.decoder, ids);
  const b = await runAll(optimum.decoder, ids);
  t.same(b.rows.at(-1), a.rows.at(-1));
});
