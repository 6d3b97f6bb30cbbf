// fp16 logits and KV tensors pass through these conversions, so a rounding or subnormal bug
// would silently skew every fp16 model. Checks known bit patterns, exhaustive round-trips and
// round-to-nearest-even against neighbouring half values.
import t from 'tap';
import fc from 'fast-check';
import { float32ArrayToHalf, halfArrayToFloat32, halfToFloat } from '../../src/core/float16.js';

const known: Array<[bits: number, value: number]> = [
  [0x0000, 0],
  [0x8000, -0],
  [0x3c00, 1],
  [0xbc00, -1],
  [0xc000, -2],
  [0x3800, 0.5],
  [0x3555, 0.333251953125],
  [0x4248, 3.140625],
  [0x7bff, 65504],
  [0xfbff, -65504],
  [0x0400, 2 ** -14], // smallest normal
  [0x03ff, 1023 * 2 ** -24], // largest subnormal
  [0x0001, 2 ** -24], // smallest subnormal
  [0x8001, -(2 ** -24)],
  [0x0200, 2 ** -15],
  [0x7c00, Infinity],
  [0xfc00, -Infinity],
];

t.test('halfToFloat decodes known bit patterns', async (t) => {
  for (const [bits, value] of known) {
    t.ok(Object.is(halfToFloat(bits), value), `0x${bits.toString(16)} -> ${value}`);
  }
  for (const nan of [0x7e00, 0x7c01, 0xfe00, 0x7fff]) t.ok(Number.isNaN(halfToFloat(nan)), `0x${nan.toString(16)} is NaN`);
  t.equal(halfToFloat(0x13c00), 1, 'only the low 16 bits are read');
});

t.test('float32ArrayToHalf encodes known values', async (t) => {
  const out = float32ArrayToHalf(Float32Array.from(known.map(([, v]) => v)));
  for (const [i, [bits, value]] of known.entries()) t.equal(out[i], bits, `${value} -> 0x${bits.toString(16)}`);
  const nan = float32ArrayToHalf(Float32Array.of(NaN))[0]!;
  t.equal(nan & 0x7c00, 0x7c00, 'NaN keeps an all-ones exponent');
  t.not(nan & 0x3ff, 0, 'NaN keeps a non-zero mantissa (not infinity)');
});

t.test('halfArrayToFloat32 matches halfToFloat for all 65536 patterns', async (t) => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const f = halfArrayToFloat32(all);
  t.equal(f.length, 65536);
  let bad = 0;
  for (let h = 0; h < 65536; h++) {
    const want = halfToFloat(h);
    const got = f[h]!;
    if (!(Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want)))) bad++;
  }
  t.equal(bad, 0, 'no mismatches');
});

t.test('half -> float32 -> half is the identity on all bit patterns (NaN payloads too)', async (t) => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = float32ArrayToHalf(halfArrayToFloat32(all));
  let bad = 0;
  for (let h = 0; h < 65536; h++) if (back[h] !== h) bad++;
  t.equal(bad, 0, 'no mismatches');
});

t.test('rounds to nearest, ties to even', async (t) => {
  const cases: Array<[value: number, bits: number, why: string]> = [
    [1 + 2 ** -11, 0x3c00, 'tie between 1 and next -> even (1)'],
    [1 + 3 * 2 ** -11, 0x3c02, 'tie between 0x3c01 and 0x3c02 -> even'],
    [1 + 2 ** -11 + 2 ** -20, 0x3c01, 'just above the tie rounds up'],
    [65519, 0x7bff, 'below the overflow midpoint stays finite'],
    [65520, 0x7c00, 'overflow midpoint rounds to infinity (even)'],
    [1e6, 0x7c00, 'overflow -> infinity'],
    [-1e6, 0xfc00, 'negative overflow -> -infinity'],
    [2 ** -25, 0x0000, 'half of the smallest subnormal: tie -> even (0)'],
    [2 ** -25 * 1.0000002, 0x0001, 'just above that rounds up to 2^-24'],
    [3 * 2 ** -25, 0x0002, 'tie between subnormals 1 and 2 -> even'],
    [5 * 2 ** -25, 0x0002, 'tie between subnormals 2 and 3 -> even'],
    [1023.5 * 2 ** -24, 0x0400, 'largest subnormal + half ulp carries into the smallest normal'],
    [1e-10, 0x0000, 'underflow -> +0'],
    [-1e-10, 0x8000, 'underflow keeps the sign'],
    [1e-40, 0x0000, 'float32 subnormal -> 0'],
    [2049, 0x6800, '2049 (tie) -> 2048'],
    [2051, 0x6802, '2051 (tie) -> 2052'],
  ];
  const out = float32ArrayToHalf(Float32Array.from(cases.map(([v]) => v)));
  for (const [i, [, bits, why]] of cases.entries()) t.equal(out[i], bits, why);
});

t.test('halfArrayToFloat32 destination handling', async (t) => {
  const src = Uint16Array.of(0x3c00, 0xc000);
  const dst = new Float32Array(2);
  t.equal(halfArrayToFloat32(src, dst), dst, 'exact-size dst is returned');
  t.same(Array.from(dst), [1, -2]);
  const big = new Float32Array(5).fill(7);
  const view = halfArrayToFloat32(src, big);
  t.equal(view.length, 2, 'oversized dst gives a view of src.length');
  t.equal(view.buffer, big.buffer, 'the view shares the scratch buffer');
  t.same(Array.from(big), [1, -2, 7, 7, 7], 'the tail is untouched');
  t.throws(() => halfArrayToFloat32(src, new Float32Array(1)), RangeError);
  const offset = new Float32Array(8).subarray(3, 5);
  halfArrayToFloat32(src, offset);
  t.same(Array.from(offset), [1, -2], 'dst with a byteOffset');
});

t.test('property: encoding picks the nearest half (ties to even)', async () => {
  fc.assert(
    fc.property(fc.float({ noNaN: true, min: -65504, max: 65504 }), (x) => {
      const h = float32ArrayToHalf(Float32Array.of(x))[0]!;
      const err = Math.abs(halfToFloat(h) - x);
      const mag = h & 0x7fff;
      // Neighbours in magnitude with the same sign, staying within the finite range.
      for (const n of [mag - 1, mag + 1]) {
        if (n < 0 || n > 0x7bff) continue;
        const nerr = Math.abs(halfToFloat((h & 0x8000) | n) - x);
        if (nerr < err) return false;
        if (nerr === err && (mag & 1) === 1) return false;
      }
      // Zero's other-sign neighbour (the smallest subnormal of the opposite sign).
      return mag !== 0 || Math.abs(x) <= 2 ** -25;
    }),
    { numRuns: 20000 },
  );
});
