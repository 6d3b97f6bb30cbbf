// The loader opens every model from a copy of its graph whose large inline weights stay in the
// file, referenced by offset (src/runtime/onnx/file-scan.ts modelByReference). Checked: each
// reference names exactly the bytes the tensor held; small and already-external tensors are
// left alone; onnxruntime computes the same outputs from the reference form as from the file,
// including for packed float_data; and the decoder serves the shipped model through it.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { modelByReference } from '../../src/runtime/onnx/file-scan.js';
import { ONNX_FIELD } from '../../src/runtime/onnx/graph.js';
import { servedModel } from '../../src/runtime/onnx/new-tokens-only.js';
import { type Field, encode, fields, messageField, stringField, text, varintField } from '../../src/runtime/onnx/proto.js';
import { sessionOptions } from '../../src/runtime/onnx-decoder.js';
import { externalizeOnnx } from '../helpers/onnx-external-data.js';
import { MODEL_DIR } from '../helpers/model.js';

const SHIPPED = join(MODEL_DIR, 'onnx/model.onnx');

interface Initializer {
  name: string;
  raw: Uint8Array | undefined;
  external: Map<string, string>;
}

function initializers(model: Uint8Array): Initializer[] {
  const graph = fields(fields(model).find((f) => f.no === ONNX_FIELD.modelGraph)!.data);
  return graph
    .filter((f) => f.no === ONNX_FIELD.graphInitializer)
    .map((f) => {
      const fs = fields(f.data);
      const external = new Map<string, string>();
      for (const e of fs.filter((g) => g.no === 13)) {
        const kv = fields(e.data);
        external.set(text(kv.find((g) => g.no === 1)!), text(kv.find((g) => g.no === 2)!));
      }
      return { name: text(fs.find((g) => g.no === 8)!), raw: fs.find((g) => g.no === 9 || g.no === 4)?.data, external };
    });
}

t.test('the shipped model: large weights referenced exactly, small ones copied', async (t) => {
  const file = readFileSync(SHIPPED);
  const before = new Map(initializers(file).map((i) => [i.name, i]));
  const minBytes = 4096;
  const { model, referencedBytes } = modelByReference(SHIPPED, minBytes);
  t.ok(model.length < file.length / 20, `the graph in memory is small (${model.length} of ${file.length} bytes)`);
  const after = initializers(model);
  t.equal(after.length, before.size, 'every initializer is still there');
  let referenced = 0;
  let sum = 0;
  for (const init of after) {
    const original = before.get(init.name)!.raw!;
    if (original.length < minBytes) {
      t.same(init.raw, original, `${init.name}: under the threshold, copied`, { diagnostic: false });
      t.equal(init.external.size, 0);
      continue;
    }
    referenced++;
    t.equal(init.raw, undefined, `${init.name}: its bytes are not in the copy`);
    t.equal(init.external.get('location'), basename(SHIPPED), `${init.name}: refers to the file itself`);
    const offset = Number(init.external.get('offset'));
    const length = Number(init.external.get('length'));
    sum += length;
    t.ok(Buffer.from(file.subarray(offset, offset + length)).equals(Buffer.from(original)), `${init.name}: offset and length name its bytes`);
  }
  t.ok(referenced > 10, `${referenced} tensors referenced`);
  t.equal(referencedBytes, sum, 'referencedBytes counts them');
});

t.test('onnxruntime computes the same logits from the reference form as from the file', async (t) => {
  const served = servedModel(SHIPPED);
  t.ok(served.referencedBytes > 0.9 * statSync(SHIPPED).size, 'nearly all of the file is referenced');
  t.equal(served.externalDataDir, join(MODEL_DIR, 'onnx'), 'resolved against the file’s directory');
  const fromFile = await ort.InferenceSession.create(SHIPPED, sessionOptions(1));
  const byReference = await ort.InferenceSession.create(modelByReference(SHIPPED).model, {
    ...sessionOptions(1),
    extra: { session: { model_external_initializers_file_folder_path: served.externalDataDir } },
  });
  t.teardown(() => Promise.all([fromFile.release(), byReference.release()]));
  const seq = 5;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from([72n, 101n, 108n, 108n, 111n]), [1, seq]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(seq).fill(1n), [1, seq]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from([0n, 1n, 2n, 3n, 4n]), [1, seq]),
  };
  for (const m of fromFile.inputMetadata) {
    if (!m.isTensor || !m.name.startsWith('past_key_values.')) continue;
    const [, heads, , dim] = m.shape as number[];
    feeds[m.name] = new ort.Tensor('float32', new Float32Array(0), [1, heads!, 0, dim!]);
  }
  const a = await fromFile.run(feeds);
  const b = await byReference.run(feeds);
  t.same(b.logits!.dims, a.logits!.dims, 'the same shape');
  t.ok(Buffer.from((b.logits!.data as Float32Array).buffer).equals(Buffer.from((a.logits!.data as Float32Array).buffer)), 'logits bit-identical');
  t.ok(a.logits!.data.length > 0, 'and some logits');
});

/** A one-node model, y = x · W, with W (4×8) stored as `storage`. */
function matMulModel(storage: 'raw' | 'float_data'): { bytes: Uint8Array; w: Float32Array } {
  const w = Float32Array.from({ length: 32 }, (_, i) => (i - 11.5) / 7);
  const data: Field = { no: storage === 'raw' ? 9 : 4, wireType: 2, value: 0, data: new Uint8Array(w.buffer) };
  const info = (name: string, dims: number[]) =>
    messageField(ONNX_FIELD.graphInput, [
      stringField(1, name),
      messageField(2, [
        messageField(1, [
          varintField(1, 1),
          messageField(
            2,
            dims.map((d) => messageField(1, [varintField(1, d)])),
          ),
        ]),
      ]),
    ]);
  const graph = [
    messageField(ONNX_FIELD.graphNode, [stringField(1, 'x'), stringField(1, 'W'), stringField(2, 'y'), stringField(4, 'MatMul')]),
    stringField(2, 'g'),
    messageField(ONNX_FIELD.graphInitializer, [varintField(1, 4), varintField(1, 8), varintField(2, 1), stringField(8, 'W'), data]),
    info('x', [2, 4]),
    { ...info('y', [2, 8]), no: ONNX_FIELD.graphOutput },
  ];
  const bytes = encode([varintField(1, 8), messageField(8, [stringField(1, ''), varintField(2, 17)]), messageField(ONNX_FIELD.modelGraph, graph)]);
  return { bytes, w };
}

t.test('raw_data and packed float_data are both referenced; onnxruntime reads the same weights', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-by-reference-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const x = new ort.Tensor(
    'float32',
    Float32Array.from({ length: 8 }, (_, i) => i - 3),
    [2, 4],
  );
  for (const storage of ['raw', 'float_data'] as const) {
    const path = join(dir, `${storage}.onnx`);
    const { bytes, w } = matMulModel(storage);
    writeFileSync(path, bytes);
    const { model, referencedBytes } = modelByReference(path, 16);
    t.equal(referencedBytes, w.byteLength, `${storage}: W referenced`);
    const [a, b] = await Promise.all([
      ort.InferenceSession.create(path),
      ort.InferenceSession.create(model, { extra: { session: { model_external_initializers_file_folder_path: dir } } }),
    ]);
    const [ya, yb] = [(await a.run({ x })).y!.data, (await b.run({ x })).y!.data];
    t.same(yb, ya, `${storage}: the same product`);
    t.not(Math.max(...(ya as Float32Array)), 0, `${storage}: and not a zero one`);
    await Promise.all([a.release(), b.release()]);
  }
});

t.test('tensors already in an external file are left as they are', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-by-reference-ext-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { modelPath } = await externalizeOnnx(SHIPPED, dir);
  const original = initializers(readFileSync(modelPath));
  const { model, referencedBytes } = modelByReference(modelPath, 16);
  const moved = original.filter((i) => i.external.size > 0);
  t.ok(moved.length > 0, 'the fixture keeps some weights in a .data file');
  const after = new Map(initializers(model).map((i) => [i.name, i]));
  for (const i of moved) t.same([...after.get(i.name)!.external], [...i.external], `${i.name}: its reference unchanged`, { diagnostic: false });
  const inline = original.filter((i) => i.external.size === 0 && (i.raw?.length ?? 0) >= 16);
  t.equal(
    referencedBytes,
    inline.reduce((n, i) => n + i.raw!.length, 0),
    'only the inline ones are referenced',
  );
});
