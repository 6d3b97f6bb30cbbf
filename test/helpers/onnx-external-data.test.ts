// externalizeOnnx must produce the big-model layout (graph in .onnx, weights in .onnx.data)
// without changing what the model computes: onnxruntime has to load it and give the same logits.
import t from 'tap';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { externalizeOnnx } from './onnx-external-data.js';

const MODEL = fileURLToPath(new URL('../../models/tiny-shakespeare/onnx/model.onnx', import.meta.url));

/** Feeds for one prefill step with an empty KV cache, shaped from the model's own metadata. */
function prefillFeeds(session: ort.InferenceSession, tokens: number[]): Record<string, ort.Tensor> {
  const ids = (f: (i: number) => number) =>
    new ort.Tensor(
      'int64',
      BigInt64Array.from(
        tokens.map((_, i) => f(i)),
        BigInt,
      ),
      [1, tokens.length],
    );
  const feeds: Record<string, ort.Tensor> = {
    input_ids: ids((i) => tokens[i]!),
    attention_mask: ids(() => 1),
    position_ids: ids((i) => i),
  };
  for (const meta of session.inputMetadata) {
    if (!meta.name.startsWith('past_key_values.')) continue;
    if (!meta.isTensor || meta.type !== 'float32') throw new Error(`unexpected past input ${meta.name}`);
    // Symbolic dims are batch_size (1) and past_sequence_length (0: nothing cached yet).
    const dims = meta.shape.map((d) => (typeof d === 'number' ? d : d === 'batch_size' ? 1 : 0));
    feeds[meta.name] = new ort.Tensor('float32', new Float32Array(0), dims);
  }
  return feeds;
}

t.test('externalized model gives the same logits', { skip: existsSync(MODEL) ? false : `missing ${MODEL}` }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kvserve-extdata-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const { modelPath, dataPath } = await externalizeOnnx(MODEL, dir);
  t.equal(modelPath, path.join(dir, 'model.onnx'));
  t.equal(dataPath, path.join(dir, 'model.onnx.data'));

  const [orig, graph, data] = await Promise.all([stat(MODEL), stat(modelPath), stat(dataPath)]);
  t.ok(graph.size < orig.size * 0.1, `graph-only .onnx is small (${graph.size} of ${orig.size} bytes)`);
  // The weights moved rather than vanished (the .data file may exceed this because of alignment padding).
  t.ok(data.size > orig.size - graph.size * 2, `.data holds the weights (${data.size} bytes)`);

  const [ref, ext] = await Promise.all([ort.InferenceSession.create(MODEL), ort.InferenceSession.create(modelPath)]);
  t.teardown(() => Promise.all([ref.release(), ext.release()]));
  t.same(ext.inputNames, ref.inputNames);
  t.ok(
    ref.inputNames.some((n) => n.startsWith('past_key_values.')),
    'model takes a KV cache',
  );

  const tokens = [20, 8, 15, 15, 18, 1, 23, 18, 21, 15, 7];
  const [a, b] = await Promise.all([ref.run(prefillFeeds(ref, tokens)), ext.run(prefillFeeds(ext, tokens))]);
  const la = a.logits;
  const lb = b.logits;
  if (!la || !lb) throw new Error('model has no logits output');
  t.same(lb.dims, la.dims);
  t.equal(la.dims[1], tokens.length);
  const bytes = (x: ort.Tensor) => Buffer.from((x.data as Float32Array).buffer, (x.data as Float32Array).byteOffset, (x.data as Float32Array).byteLength);
  t.ok(bytes(la).equals(bytes(lb)), 'logits are bit-identical');
});
