// The K/V payload codecs: exact codecs restore every bit; int8 restores every value within half
// a quantization step of its own (tensor, head, token) group, in the cache's dtype, as one slab.
import t from 'tap';
import fc from 'fast-check';
import type { EntryDims } from '../../../../src/core/kv/entry/format.js';
import { payloadBytes } from '../../../../src/core/kv/entry/format.js';
import type { KvData, KvDType } from '../../../../src/core/kv/layout.js';
import { decodePayload, encodePayload } from '../../../../src/core/kv/tiers/codec.js';
import { float32ArrayToHalf, halfArrayToFloat32 } from '../../../../src/core/float16.js';

const arbDims: fc.Arbitrary<EntryDims> = fc.record({
  layers: fc.integer({ min: 1, max: 3 }),
  kvHeads: fc.integer({ min: 1, max: 4 }),
  headDim: fc.integer({ min: 1, max: 40 }),
  tokens: fc.integer({ min: 1, max: 20 }),
});

/** K/V-like values: mostly small, some channels with large outliers, some all-zero tokens. */
function tensors(dims: EntryDims, dtype: KvDType, seed: number): KvData[] {
  let s = seed >>> 0 || 1;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  };
  const n = dims.kvHeads * dims.tokens * dims.headDim;
  return Array.from({ length: 2 * dims.layers }, () => {
    const x = Float32Array.from({ length: n }, (_, i) => {
      const token = Math.floor(i / dims.headDim) % dims.tokens;
      if (token === 1) return 0;
      return rand() * (i % dims.headDim === 3 ? 40 : 2);
    });
    return dtype === 'float32' ? x : float32ArrayToHalf(x);
  });
}

const f32 = (x: KvData) => (x instanceof Float32Array ? x : halfArrayToFloat32(x));
const bits = (x: KvData) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

t.test('exact codecs restore every bit', async (t) => {
  fc.assert(
    fc.property(
      arbDims,
      fc.integer(),
      fc.constantFrom<[KvDType, 'float32' | 'float16']>(['float32', 'float32'], ['float16', 'float16']),
      (dims, seed, [dtype, codec]) => {
        const src = tensors(dims, dtype, seed);
        const payload = encodePayload(codec, src, dims, dtype);
        if (payload.length !== payloadBytes(codec, dims)) throw new Error('payload size');
        const back = decodePayload(codec, payload, dims, dtype);
        back.forEach((b, i) => {
          if (!bits(b).equals(bits(src[i]!))) throw new Error(`tensor ${i} differs`);
        });
      },
    ),
    { numRuns: 100 },
  );
  t.pass('bit-identical');
});

t.test('float16 of a float32 cache: each value rounded to float16', async (t) => {
  const dims = { layers: 2, kvHeads: 2, headDim: 8, tokens: 5 };
  const src = tensors(dims, 'float32', 9);
  const back = decodePayload('float16', encodePayload('float16', src, dims, 'float32'), dims, 'float32');
  for (const [i, b] of back.entries()) t.same([...b], [...halfArrayToFloat32(float32ArrayToHalf(src[i] as Float32Array))]);
});

t.test('int8: within half a step of each (tensor, head, token) group, in the cache dtype, as one slab', async (t) => {
  fc.assert(
    fc.property(arbDims, fc.integer(), fc.constantFrom<KvDType>('float32', 'float16'), (dims, seed, dtype) => {
      const src = tensors(dims, dtype, seed);
      const payload = encodePayload('int8', src, dims, dtype);
      if (payload.length !== payloadBytes('int8', dims)) throw new Error('payload size');
      // From an unaligned copy too: a payload is a view into whatever buffer the bytes came in.
      const shifted = new Uint8Array(payload.length + 1);
      shifted.set(payload, 1);
      for (const p of [payload, shifted.subarray(1)]) {
        const back = decodePayload('int8', p, dims, dtype);
        if (back.some((b) => b.buffer !== back[0]!.buffer)) throw new Error('not one slab');
        back.forEach((b, ti) => {
          if ((dtype === 'float32') !== b instanceof Float32Array) throw new Error('wrong dtype');
          const x = f32(src[ti]!);
          const y = f32(b);
          const d = dims.headDim;
          for (let g = 0; g < x.length / d; g++) {
            let max = 0;
            for (let i = g * d; i < (g + 1) * d; i++) max = Math.max(max, Math.abs(x[i]!));
            // Half a step, plus float16 rounding of the restored value when the cache is float16.
            const tol = (max / 127) * 0.5 * (1 + 1e-6) + (dtype === 'float16' ? max * 2 ** -10 : 0);
            for (let i = g * d; i < (g + 1) * d; i++) {
              if (Math.abs(y[i]! - x[i]!) > tol) throw new Error(`tensor ${ti} element ${i}: ${x[i]} → ${y[i]}, tolerance ${tol}`);
              if (x[i] === 0 && y[i] !== 0) throw new Error('a zero did not stay zero');
            }
          }
        });
      }
    }),
    { numRuns: 150 },
  );
  t.pass('every value within tolerance');
});

t.test('caller bugs throw', async (t) => {
  const dims = { layers: 1, kvHeads: 1, headDim: 4, tokens: 2 };
  const src = tensors(dims, 'float32', 1);
  t.throws(() => encodePayload('int8', src.slice(1), dims, 'float32'), RangeError, 'tensor count');
  t.throws(() => encodePayload('int8', src, dims, 'float16'), TypeError, 'dtype');
  t.throws(() => encodePayload('float32', tensors(dims, 'float16', 1), dims, 'float16'), RangeError, 'float32 of float16');
  t.throws(() => decodePayload('int8', new Uint8Array(3), dims, 'float32'), RangeError, 'payload length');
});
