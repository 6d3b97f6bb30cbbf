// The model loader: layout discovered from the graph, both directory layouts (Optimum's
// onnx/model.onnx and genai's root model.onnx + external data), agreement with PyTorch,
// and one clear line for every broken directory.
import t from 'tap';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/runtime/load-model.js';
import { ModelLoadError } from '../../src/runtime/model-dir.js';
import { externalizeOnnx } from '../helpers/onnx-external-data.js';
import { MODEL_DIR, maxAbsDiff, runAll } from '../helpers/model.js';

const json = (file: string) => JSON.parse(readFileSync(join(MODEL_DIR, file), 'utf8'));
const config = json('config.json');

function scratchDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-model-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('shipped model: layout comes from the graph and agrees with config.json', async (t) => {
  const { decoder, info } = await loadModel(MODEL_DIR);
  t.teardown(() => decoder.close());
  t.same(info.layout, {
    layers: config.num_hidden_layers,
    kvHeads: config.num_key_value_heads,
    headDim: config.head_dim,
    dtype: 'float32',
  });
  t.equal(info.vocabSize, config.vocab_size);
  t.equal(info.contextLength, config.max_position_embeddings);
  t.same(info.eosIds, [config.eos_token_id]);
  t.equal(info.id, 'tiny-shakespeare');
  t.type(info.chatTemplate, 'string');
});

t.test('onnxruntime logits match the PyTorch reference written at export', async (t) => {
  const ref = json('reference.json') as { input_ids: number[]; positions: number[]; logits: number[][] };
  const { decoder } = await loadModel(MODEL_DIR);
  t.teardown(() => decoder.close());
  const { rows } = await runAll(decoder, ref.input_ids);
  ref.positions.forEach((pos, i) => {
    const diff = maxAbsDiff(rows[pos]!, Float32Array.from(ref.logits[i]!));
    t.ok(diff < 1e-4, `position ${pos}: max |Δ| ${diff.toExponential(2)}`);
  });
});

t.test('genai layout: model.onnx + model.onnx.data at the root, facts from genai_config.json', async (t) => {
  const dir = scratchDir(t);
  await externalizeOnnx(join(MODEL_DIR, 'onnx/model.onnx'), dir);
  copyFileSync(join(MODEL_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  writeFileSync(
    join(dir, 'genai_config.json'),
    JSON.stringify({ model: { context_length: 512, eos_token_id: [256, 10], vocab_size: 257, decoder: { filename: 'model.onnx' } } }),
  );
  const loaded = await loadModel(dir);
  const shipped = await loadModel(MODEL_DIR);
  t.teardown(() => Promise.all([loaded.decoder.close(), shipped.decoder.close()]));
  t.equal(loaded.info.contextLength, 512);
  t.same(loaded.info.eosIds, [10, 256]);
  t.same(loaded.info.layout, shipped.info.layout);
  const ids = loaded.tokenizer.encode('JULIET:\nO Romeo');
  const a = (await runAll(loaded.decoder, ids)).rows.at(-1)!;
  const b = (await runAll(shipped.decoder, ids)).rows.at(-1)!;
  t.equal(maxAbsDiff(a, b), 0, 'external weights give identical logits');
});

t.test('broken model directories fail with one line naming the file', async (t) => {
  const cases: Array<{ name: string; setup: (dir: string) => void; file: RegExp; problem: RegExp }> = [
    { name: 'missing directory', setup: (dir) => rmSync(dir, { recursive: true }), file: /kvserve-model-/, problem: /directory not found/ },
    { name: 'empty directory', setup: () => {}, file: /onnx\/model\.onnx/, problem: /no ONNX model found/ },
    {
      name: 'corrupt .onnx',
      setup: (dir) => {
        mkdirSync(join(dir, 'onnx'));
        writeFileSync(join(dir, 'onnx/model.onnx'), readFileSync(join(MODEL_DIR, 'onnx/model.onnx')).subarray(0, 4096));
        copyFileSync(join(MODEL_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
      },
      file: /onnx\/model\.onnx/,
      problem: /not a loadable ONNX model/,
    },
    {
      name: 'missing tokenizer',
      setup: (dir) => {
        mkdirSync(join(dir, 'onnx'));
        copyFileSync(join(MODEL_DIR, 'onnx/model.onnx'), join(dir, 'onnx/model.onnx'));
      },
      file: /tokenizer\.json/,
      problem: /file not found/,
    },
    {
      name: 'tokenizer larger than the graph vocabulary',
      setup: (dir) => {
        mkdirSync(join(dir, 'onnx'));
        copyFileSync(join(MODEL_DIR, 'onnx/model.onnx'), join(dir, 'onnx/model.onnx'));
        const tok = json('tokenizer.json');
        tok.added_tokens.push({ ...tok.added_tokens[0], id: 299, content: '<|extra|>' });
        writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok));
      },
      file: /tokenizer\.json/,
      problem: /300 tokens but the model's logits cover only 257/,
    },
    {
      name: 'malformed config.json',
      setup: (dir) => {
        mkdirSync(join(dir, 'onnx'));
        copyFileSync(join(MODEL_DIR, 'onnx/model.onnx'), join(dir, 'onnx/model.onnx'));
        copyFileSync(join(MODEL_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
        writeFileSync(join(dir, 'config.json'), '{"vocab_size": 257,');
      },
      file: /config\.json/,
      problem: /not valid JSON/,
    },
  ];
  for (const c of cases) {
    const dir = scratchDir(t);
    c.setup(dir);
    const err = await loadModel(dir).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.type(err, ModelLoadError, c.name);
    const message = (err as Error).message;
    t.notMatch(message, /\n/, `${c.name}: one line`);
    t.match(message, c.file, `${c.name}: names the file`);
    t.match(message, c.problem, `${c.name}: says the problem (${message})`);
  }
});
