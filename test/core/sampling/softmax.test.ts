// softmaxWeights replaces Math.exp in the sampler's O(V) pass: it must give the float32 weights
// Math.exp gave (to one unit in the last place), exactly 1 at the maximum, exactly 0 where the
// weight underflows or the token is masked, NaN for NaN, and the sum of what it stored.
import t from 'tap';
import { softmaxWeights } from '../../../src/core/sampling/softmax.js';

/** Math.exp's float32 weights, the reference. */
function reference(src: Float32Array, max: number, invT: number): Float32Array {
  return Float32Array.from(src, (x) => Math.exp((x - max) * invT));
}

/** Distance in float32 units in the last place between two non-negative float32 values. */
function ulps(a: number, b: number): number {
  const bits = new Int32Array(Float32Array.of(a, b).buffer);
  return Math.abs(bits[0]! - bits[1]!);
}

t.test('agrees with Math.exp to one float32 ulp over the whole range', async (t) => {
  // Every logit from the maximum down to past float32 underflow, densely, at several temperatures.
  const n = 400_000;
  for (const invT of [1, 1 / 0.7, 1 / 2, 1 / 1e-3]) {
    const span = 110 / invT;
    const src = Float32Array.from({ length: n }, (_, i) => 3 - (span * i) / n);
    const max = 3;
    const out = new Float32Array(n);
    softmaxWeights(src, max, invT, out);
    const ref = reference(src, max, invT);
    let worst = 0;
    let differ = 0;
    for (let i = 0; i < n; i++) {
      const d = ulps(out[i]!, ref[i]!);
      if (d > worst) worst = d;
      if (d > 0) differ++;
    }
    t.ok(worst <= 1, `1/T = ${invT}: at most 1 ulp from Math.exp (worst ${worst})`);
    t.ok(differ / n < 1e-3, `1/T = ${invT}: ${differ} of ${n} weights differ from Math.exp's at all`);
  }
});

t.test('the maximum weighs 1, masked and underflowing tokens 0, NaN propagates', async (t) => {
  const src = Float32Array.of(-1, 2.5, -Infinity, 2.5 - 104, 2.5 - 103, 0);
  const out = new Float32Array(src.length);
  const sum = softmaxWeights(src, 2.5, 1, out);
  t.equal(out[1], 1, 'exp(0) is exactly 1');
  t.equal(out[2], 0, '-Infinity is 0');
  t.equal(out[3], 0, 'a weight below float32 range is 0, as Math.exp stored in float32 gives');
  t.equal(out[4], Math.fround(Math.exp(-103)), 'a weight in the subnormal range is kept');
  t.equal(
    sum,
    out.reduce((a, b) => a + b, 0),
    'returns the sum of the stored values',
  );

  const nan = new Float32Array(3);
  t.ok(Number.isNaN(softmaxWeights(Float32Array.of(0, Number.NaN, -1), 0, 1, nan)), 'a NaN logit makes the sum NaN');
  t.ok(Number.isNaN(nan[1]!), 'and its weight NaN');
  t.equal(nan[2], Math.fround(Math.exp(-1)), 'the other weights are still computed');
});

t.test('a logit above the given max still gets its exact weight', async (t) => {
  const out = new Float32Array(2);
  softmaxWeights(Float32Array.of(1, 0), 0, 1, out);
  t.equal(out[0], Math.fround(Math.E), 'exp(1)');
});
