// The model fingerprint changes with any byte of the graph, its external weights or the
// tokenizer, and with the KV layout or dtype; it is stable for the same files.
import t from 'tap';
import { copyFile, mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fingerprintFiles, fingerprintHex, modelFingerprint } from '../../src/runtime/fingerprint.js';
import { externalDataLocations } from '../../src/runtime/onnx/file-scan.js';
import type { KvLayout } from '../../src/core/kv/layout.js';
import { externalizeOnnx } from '../helpers/onnx-external-data.js';

const MODEL_DIR = fileURLToPath(new URL('../../models/tiny-shakespeare/', import.meta.url));
const LAYOUT: KvLayout = { layers: 4, kvHeads: 4, headDim: 32, dtype: 'float32' };

async function flipByte(file: string, at: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0]! ^= 0x01;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

t.test('fingerprint of an externalized model covers its .data file', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kvserve-fp-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { modelPath, dataPath } = await externalizeOnnx(path.join(MODEL_DIR, 'onnx/model.onnx'), dir);
  const tokenizerPath = path.join(dir, 'tokenizer.json');
  await copyFile(path.join(MODEL_DIR, 'tokenizer.json'), tokenizerPath);

  t.same(externalDataLocations(modelPath), ['model.onnx.data'], 'the walk finds the external data file');
  t.same(externalDataLocations(path.join(MODEL_DIR, 'onnx/model.onnx')), [], 'a self-contained model has none');
  t.same(
    fingerprintFiles({ onnxPath: modelPath, tokenizerPath }).map((f) => f.path),
    [modelPath, dataPath, tokenizerPath],
  );

  const input = { onnxPath: modelPath, tokenizerPath, layout: LAYOUT };
  const base = await modelFingerprint(input);
  t.equal(base.length, 32);
  t.equal(fingerprintHex(await modelFingerprint(input)), fingerprintHex(base), 'stable');

  const seen = new Set([fingerprintHex(base)]);
  const differs = async (what: string, fp: Promise<Uint8Array>) => {
    const hex = fingerprintHex(await fp);
    t.notOk(seen.has(hex), `${what} changes the fingerprint`);
    seen.add(hex);
  };
  await differs('dtype', modelFingerprint({ ...input, layout: { ...LAYOUT, dtype: 'float16' } }));
  await differs('kv heads', modelFingerprint({ ...input, layout: { ...LAYOUT, kvHeads: 8 } }));
  await flipByte(dataPath, 12345);
  await differs('one bit of the weights file', modelFingerprint(input));
  await flipByte(tokenizerPath, 10);
  await differs('one bit of tokenizer.json', modelFingerprint(input));
  await flipByte(modelPath, 200);
  // (A graph byte flip may break the protobuf walk: either a new fingerprint or an error.)
  const afterGraphFlip = await modelFingerprint(input).catch(() => undefined);
  if (afterGraphFlip) await differs('one bit of the graph', Promise.resolve(afterGraphFlip));
  else t.pass('a damaged graph fails loudly');
});

t.test('fp32 and fp16 variants of the shipped model differ; a missing file throws', async (t) => {
  const tokenizerPath = path.join(MODEL_DIR, 'tokenizer.json');
  const a = await modelFingerprint({ onnxPath: path.join(MODEL_DIR, 'onnx/model.onnx'), tokenizerPath, layout: LAYOUT });
  const b = await modelFingerprint({ onnxPath: path.join(MODEL_DIR, 'onnx/model_fp16.onnx'), tokenizerPath, layout: { ...LAYOUT, dtype: 'float16' } });
  t.not(fingerprintHex(a), fingerprintHex(b));
  await t.rejects(modelFingerprint({ onnxPath: path.join(MODEL_DIR, 'onnx/missing.onnx'), tokenizerPath, layout: LAYOUT }));
});
