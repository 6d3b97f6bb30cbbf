// tools/quantize.py on the shipped (trained) model: the int4 and int8 files it writes load in
// kvserve's decoder, keep the float32 model's next-token choices over a Shakespeare passage,
// cost the bits per weight their block size implies (64 by default: llama.cpp's Q4_0 / Q8_0
// bytes) and record their settings in the file. Needs Debian's python3-onnx and python3-numpy (what the tool runs on).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadModel } from '../../src/runtime/load-model.js';
import { OnnxDecoder } from '../../src/runtime/onnx-decoder.js';
import { needsPython, PYTHON } from '../helpers/binaries.js';
import { argmax, MODEL_DIR, runAll } from '../helpers/model.js';

const SHIPPED = join(MODEL_DIR, 'onnx/model.onnx');
const passage = readFileSync(new URL('../fixtures/shakespeare-20k.txt', import.meta.url), 'utf8').slice(2000, 2400);

interface Quantized {
  path: string;
  floatMib: number;
  quantMib: number;
}

function quantize(dir: string, name: string, ...args: string[]): Quantized {
  const path = join(dir, name);
  const r = spawnSync(PYTHON, ['tools/quantize.py', '--out', path, ...args, SHIPPED], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tools/quantize.py ${args.join(' ')} failed: ${r.stderr}`);
  const m = /([\d.]+) MiB of float weights -> ([\d.]+) MiB/.exec(r.stderr);
  if (!m) throw new Error(`tools/quantize.py printed no size line: ${r.stderr}`);
  return { path, floatMib: Number(m[1]), quantMib: Number(m[2]) };
}

t.test('tools/quantize.py', async (t) => {
  if (!needsPython(t, 'onnx', 'numpy')) return;
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-quantize-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const reference = await loadModel(MODEL_DIR, { threads: 1 });
  t.teardown(() => reference.decoder.close());
  const ids = reference.tokenizer.encode(passage).slice(0, 128);
  const { rows: floatRows } = await runAll(reference.decoder, ids);

  /** Share of positions whose greedy next token matches float32's, and the largest logit gap. */
  const agreement = async (path: string) => {
    const decoder = await OnnxDecoder.load(path, { threads: 1 });
    try {
      const { rows } = await runAll(decoder, ids);
      let same = 0;
      let gap = 0;
      rows.forEach((row, i) => {
        if (argmax(row) === argmax(floatRows[i]!)) same++;
        for (let j = 0; j < row.length; j++) gap = Math.max(gap, Math.abs(row[j]! - floatRows[i]![j]!));
      });
      return { top1: same / rows.length, gap };
    } finally {
      await decoder.close();
    }
  };

  // Measured on this passage: int4 (block 64) agrees at 0.92 of positions, int8 at 0.99.
  for (const [bits, floor, bitsPerWeight] of [
    [4, 0.85, 4.5],
    [8, 0.95, 8.5],
  ] as const) {
    await t.test(`int${bits} with the default block size`, async (t) => {
      const q = quantize(dir, `model_q${bits}.onnx`, '--bits', String(bits));
      // A float32 scale per 64 weights: the weight bytes llama.cpp's Q${bits}_0 takes.
      t.ok(Math.abs(q.quantMib / q.floatMib - bitsPerWeight / 32) < 0.01, `${q.floatMib} MiB -> ${q.quantMib} MiB is ${bitsPerWeight} bits per weight`);
      t.ok(readFileSync(q.path).includes(`bits=${bits} block_size=64 accuracy_level=4 lm_head=quantized`), 'the file records its settings');
      const { top1, gap } = await agreement(q.path);
      t.ok(top1 >= floor, `greedy choices agree with float32 at ${top1} of positions (>= ${floor})`);
      t.ok(gap > 0, 'the weights did change');
    });
  }

  await t.test('a block size onnxruntime has no kernel for is refused', async (t) => {
    const r = spawnSync(PYTHON, ['tools/quantize.py', '--out', join(dir, 'model_b512.onnx'), '--block-size', '512', SHIPPED], { encoding: 'utf8' });
    t.equal(r.status, 2, 'a usage error');
    t.match(r.stderr, /--block-size: invalid choice: 512/);
  });

  await t.test('--keep-lm-head leaves the output projection in float32', async (t) => {
    const all = quantize(dir, 'model_all.onnx', '--bits', '4');
    const kept = quantize(dir, 'model_kept.onnx', '--bits', '4', '--keep-lm-head');
    // The tied output projection is 257 × 256 float32 weights: 0.25 MiB fewer quantized.
    t.ok(Math.abs(all.floatMib - kept.floatMib - (257 * 256 * 4) / 2 ** 20) < 0.02, `${all.floatMib} vs ${kept.floatMib} MiB quantized`);
    t.ok(readFileSync(kept.path).includes('lm_head=float'), 'the file says so');
    const a = await agreement(all.path);
    const k = await agreement(kept.path);
    t.ok(k.top1 >= 0.85, `agreement ${k.top1} with the float output projection (${a.top1} without)`);
  });
});
