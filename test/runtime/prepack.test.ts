// ORT_PREPACK=0: onnxruntime keeps no prepacked copy of the weights. The model must still load
// and compute the same thing: logits within float noise and the same greedy text.
import t from 'tap';
import { loadModel } from '../../src/runtime/load-model.js';
import { needsPrepacking } from '../../src/runtime/onnx/new-tokens-only.js';
import { sessionOptions } from '../../src/runtime/onnx-decoder.js';
import { EngineHarness } from '../helpers/engine.js';
import { MODEL_DIR, maxRelDiff, runAll } from '../helpers/model.js';

t.test('the option reaches onnxruntime as session.disable_prepacking', async (t) => {
  const flag = (prepack: boolean) => (sessionOptions(2, prepack).extra as { session: Record<string, unknown> }).session.disable_prepacking;
  t.equal(flag(true), '0');
  t.equal(flag(false), '1');
});

t.test('without prepacked weights the shipped model gives the same logits and greedy text', async (t) => {
  const packed = await loadModel(MODEL_DIR, { threads: 2, decodeThreads: 1 });
  const unpacked = await loadModel(MODEL_DIR, { threads: 2, decodeThreads: 1, prepack: false });
  t.teardown(async () => {
    await packed.decoder.close();
    await unpacked.decoder.close();
  });
  t.equal(packed.decoder.prepacked, true);
  t.equal(unpacked.decoder.prepacked, false, 'a float32 graph honours ORT_PREPACK=0');
  const ids = packed.tokenizer.encode('ROMEO:\nBut soft, what light through yonder window breaks?');
  const a = await runAll(packed.decoder, ids);
  const b = await runAll(unpacked.decoder, ids);
  let worst = 0;
  for (const [i, row] of a.rows.entries()) worst = Math.max(worst, maxRelDiff(row, b.rows[i]!));
  t.ok(worst <= 1e-5, `every position's logits within 1e-5 of the largest logit (worst ${worst.toExponential(2)})`);
  const greedy = async (model: typeof packed) => (await new EngineHarness(model).run('HAMLET:\n', { maxTokens: 48, ignoreEos: true })).text;
  t.equal(await greedy(unpacked), await greedy(packed), '48 greedy tokens identical');
});

t.test('graphs whose kernels need prepacked weights (MatMulNBits) keep them whatever ORT_PREPACK says', async (t) => {
  t.equal(needsPrepacking([{ opType: 'MatMul' }, { opType: 'Gemm' }]), false);
  t.equal(needsPrepacking([{ opType: 'MatMul' }, { opType: 'MatMulNBits' }]), true);
});
