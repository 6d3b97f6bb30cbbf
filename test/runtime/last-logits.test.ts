// Prompt chunks read only their last position's logits, so the loader gives each decoder graph
// an input that cuts the output projection to that position (src/runtime/onnx/last-logits.ts).
// A call that asks for it must get that position's logits bit for bit as the full call does,
// and never a wrong row; every other call must be unchanged. Checked on the shipped model in
// float32 and float16, with weights in an external file, on the Optimum-form fixture (both
// rewrites at once), and with onnxruntime running the rewritten graph directly.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import t, { type Test } from 'tap';
import { KvCache } from '../../src/core/kv/kv-cache.js';
import type { DecoderModel } from '../../src/core/model.js';
import { type OnnxNode, readOnnxGraph } from '../../src/runtime/onnx/graph.js';
import { LOGITS_FROM, logitsProjection, withLogitsFrom } from '../../src/runtime/onnx/last-logits.js';
import { OnnxDecoder, sessionOptions } from '../../src/runtime/onnx-decoder.js';
import { externalizeOnnx } from '../helpers/onnx-external-data.js';
import { FP16_FILE, MODEL_DIR } from '../helpers/model.js';

const FIXTURE = new URL('../fixtures/tiny-llama/', import.meta.url).pathname;

/** Two rows of `seqLen` prompt tokens over `past` cached ones (row 1's cache one token shorter). */
async function compare(t: Test, decoder: DecoderModel, label: string, past: number, seqLen: number): Promise<void> {
  const { layout } = decoder;
  let cache = KvCache.empty(layout);
  if (past > 0) {
    const first = await decoder.forward({
      batch: 1,
      seqLen: past,
      pastLength: 0,
      inputIds: Array.from({ length: past }, (_, i) => 60 + (i % 40)),
      positionIds: Array.from({ length: past }, (_, i) => i),
      past: cache.tensors,
    });
    cache = KvCache.of(layout, first.newKv, past);
  }
  const batch = 2;
  // Row 1 masks the last cached slot: the kept position must still be each row's own last one.
  const twoRows = cache.tensors.map((tensor) => {
    const both = new (tensor.constructor as Float32ArrayConstructor)(tensor.length * 2);
    both.set(tensor);
    both.set(tensor, tensor.length);
    return both;
  });
  const input = {
    batch,
    seqLen,
    pastLength: past,
    pastValid: [past, Math.max(0, past - 1)],
    inputIds: Array.from({ length: batch * seqLen }, (_, i) => 70 + ((i * 7) % 50)),
    positionIds: Array.from({ length: batch * seqLen }, (_, i) => (i < seqLen ? past : Math.max(0, past - 1)) + (i % seqLen)),
    past: twoRows,
  };
  const full = await decoder.forward(input);
  const fullRows = [0, 1].map((b) => Float32Array.from(full.logits(b, seqLen - 1)));
  const last = await decoder.forward({ ...input, lastLogitsOnly: true });
  for (const b of [0, 1]) t.same(Float32Array.from(last.logits(b, seqLen - 1)), fullRows[b], `${label}: row ${b}'s last logits are bit-identical`);
  for (const [i, kv] of last.newKv.entries()) t.same(kv, full.newKv[i], `${label}: new keys and values unchanged (${i})`, { diagnostic: false });
  if (seqLen > 1) t.throws(() => last.logits(0, seqLen - 2), RangeError, `${label}: an earlier position's logits are refused, not misread`);
  t.equal(full.logits(1, 0).length, decoder.vocabSize, `${label}: without lastLogitsOnly every position is still there`);
}

t.test('the shipped model: last-position logits identical to the full call', async (t) => {
  for (const file of ['onnx/model.onnx', FP16_FILE]) {
    const decoder = await OnnxDecoder.load(join(MODEL_DIR, file), { threads: 1, decodeThreads: 1 });
    t.teardown(() => decoder.close());
    await compare(t, decoder, `${file}, no past`, 0, 12);
    await compare(t, decoder, `${file}, 9 cached`, 9, 5);
    await compare(t, decoder, `${file}, one token`, 9, 1);
  }
});

t.test('weights in an external file, and an Optimum-form graph (both rewrites)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-last-logits-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { modelPath } = await externalizeOnnx(join(MODEL_DIR, 'onnx/model.onnx'), dir);
  const external = await OnnxDecoder.load(modelPath, { threads: 1, decodeThreads: 1 });
  t.teardown(() => external.close());
  await compare(t, external, 'external data', 6, 8);

  const optimum = await OnnxDecoder.load(join(FIXTURE, 'concat/onnx/model.onnx'), { threads: 1, decodeThreads: 1 });
  t.teardown(() => optimum.close());
  t.ok(optimum.rewrittenFromConcat, 'the fixture is in Optimum form');
  await compare(t, optimum, 'Optimum form', 6, 8);
});

t.test('onnxruntime runs the rewritten graph: LOGITS_FROM = -1 gives one position, 0 all', async (t) => {
  const bytes = readFileSync(join(MODEL_DIR, 'onnx/model.onnx'));
  const projection = logitsProjection(readOnnxGraph(bytes));
  t.ok(projection, 'the shipped graph has a projection to cut');
  const rewritten = withLogitsFrom(bytes, projection!);
  t.equal(logitsProjection(readOnnxGraph(rewritten)), undefined, 'a rewritten graph is not rewritten twice');
  const session = await ort.InferenceSession.create(rewritten, sessionOptions(1));
  t.teardown(() => session.release());
  t.ok(session.inputNames.includes(LOGITS_FROM), `the graph takes ${LOGITS_FROM}`);
  const logits = session.outputMetadata.find((m) => m.name === 'logits');
  t.ok(logits?.isTensor && typeof logits.shape[2] === 'number', 'the logits output keeps its vocabulary size');
  const seq = 4;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from([82n, 79n, 77n, 69n]), [1, seq]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(seq).fill(1n), [1, seq]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from([0n, 1n, 2n, 3n]), [1, seq]),
  };
  for (const m of session.inputMetadata) {
    if (!m.isTensor || !m.name.startsWith('past_key_values.')) continue;
    const [, heads, , dim] = m.shape as number[];
    feeds[m.name] = new ort.Tensor('float32', new Float32Array(0), [1, heads!, 0, dim!]);
  }
  const dims = async (from: bigint) => (await session.run({ ...feeds, [LOGITS_FROM]: new ort.Tensor('int64', BigInt64Array.of(from), [1]) })).logits!.dims;
  t.same(await dims(-1n), [1, 1, logits!.isTensor ? logits!.shape[2] : 0], '-1: the last position');
  t.same(await dims(0n), [1, seq, logits!.isTensor ? logits!.shape[2] : 0], '0: every position');
});

t.test('which graphs are cut: logits from a product, possibly cast; nothing else', async (t) => {
  const node = (opType: string, inputs: string[], outputs: string[], name = outputs[0]!): OnnxNode => ({
    name,
    opType,
    inputs,
    outputs,
    ints: new Map(),
    int: new Map(),
    tensors: new Map(),
  });
  t.same(logitsProjection({ nodes: [node('MatMul', ['h', 'W'], ['logits'], 'lm_head')] }), { output: 'logits', hidden: 'h' }, 'MatMul');
  t.same(
    logitsProjection({ nodes: [node('MatMulNBits', ['h', 'B', 's'], ['z'], 'q4'), node('Cast', ['z'], ['logits'])] }),
    { output: 'z', hidden: 'h' },
    'MatMulNBits, then a Cast',
  );
  t.equal(
    logitsProjection({ nodes: [node('MatMul', ['h', 'W'], ['z']), node('Add', ['z', 'bias'], ['logits'])] }),
    undefined,
    'a bias after the product: not cut',
  );
  t.equal(logitsProjection({ nodes: [node('Gemm', ['h', 'W'], ['logits'])] }), undefined, 'another operator: not cut');
  t.equal(logitsProjection({ nodes: [] }), undefined, 'no logits: not cut');
});
