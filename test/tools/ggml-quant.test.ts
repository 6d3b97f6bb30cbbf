// ggml's Q8_0 / Q4_0 blocks as tools/gguf/ggml-quant.ts writes them (bench:quant gives them to
// llama.cpp): the byte layout of ggml's block_q8_0 / block_q4_0, the error bound of the rounding,
// and a GGUF of the shipped model that node-llama-cpp's own reader accepts with those types.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import t from 'tap';
import { convertToGguf } from '../../tools/gguf/convert.js';
import { dequantize, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, quantizeQ4_0, quantizeQ8_0 } from '../../tools/gguf/ggml-quant.js';

t.test('Q4_0: float16 scale = the largest-magnitude value ÷ -8, byte j = element j | element j+16 << 4', async (t) => {
  // Both halves are -4, -3.5, …, 3.5: the extreme -4 gives d = 0.5 and codes x / 0.5 + 8 = 0…15.
  const x = Float32Array.from({ length: 32 }, (_, i) => ((i % 16) - 8) / 2);
  const b = quantizeQ4_0(x);
  t.equal(b.length, Q4_0_BLOCK_BYTES);
  t.same([b[0], b[1]], [0x00, 0x38], 'd = 0.5 as binary16, little-endian');
  t.same(
    [...b.subarray(2)],
    Array.from({ length: 16 }, (_, j) => j | (j << 4)),
  );
  t.same([...dequantize('q4_0', b, 32)], [...x]);
});

t.test('Q8_0: float16 scale = max|x| ÷ 127, then int8 codes', async (t) => {
  const x = Float32Array.from({ length: 32 }, (_, i) => (i === 5 ? -127 : i - 16) / 4);
  const b = quantizeQ8_0(x);
  t.equal(b.length, Q8_0_BLOCK_BYTES);
  t.same([b[0], b[1]], [0x00, 0x34], 'd = 0.25 as binary16');
  t.same(
    [...new Int8Array(b.buffer, 2, 32)],
    Array.from({ length: 32 }, (_, i) => (i === 5 ? -127 : i - 16)),
  );
});

t.test('rounding error stays within half a step (Q8_0) and one step (Q4_0), plus the float16 scale rounding', async (t) => {
  let seed = 7;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return (seed / 2 ** 31) * 2 - 1;
  };
  const x = Float32Array.from({ length: 32 * 64 }, rand);
  for (const [type, q, levels] of [
    ['q8_0', quantizeQ8_0, 127],
    ['q4_0', quantizeQ4_0, 8],
  ] as const) {
    const y = dequantize(type, q(x), x.length);
    let worst = 0;
    for (let b = 0; b < x.length; b += 32) {
      const amax = Math.max(...x.subarray(b, b + 32).map(Math.abs));
      for (let j = b; j < b + 32; j++) worst = Math.max(worst, Math.abs(x[j]! - y[j]!) / (amax / levels));
    }
    t.ok(worst <= (type === 'q8_0' ? 0.6 : 1.1), `${type}: worst error ${worst.toFixed(3)} steps`);
  }
});

t.test('a q8_0 / q4_0 GGUF of the shipped model reads back in node-llama-cpp with those tensor types', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-gguf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sizes: Record<string, number> = {};
  for (const [type, ggml] of [
    ['q8_0', 8],
    ['q4_0', 2],
  ] as const) {
    const out = join(dir, `${type}.gguf`);
    convertToGguf('models/tiny-shakespeare', out, { type });
    sizes[type] = statSync(out).size;
    const info = await readGgufFileInfo(out, { logWarnings: false });
    const tensors = info.fullTensorInfo ?? [];
    const q = tensors.find((x) => x.name === 'blk.0.attn_q.weight');
    t.equal(q?.ggmlType, ggml, `${type}: matrices`);
    t.equal(tensors.find((x) => x.name === 'blk.0.attn_norm.weight')?.ggmlType, 0, `${type}: norms stay float32`);
    t.equal(info.metadata.general.file_type, type === 'q8_0' ? 7 : 2);
  }
  t.ok(sizes.q4_0! < sizes.q8_0!, 'q4_0 is the smaller file');
});
