// The unnormalised softmax weights of a row of logits, the one O(V) pass of a sampled token that
// is more than a compare: 49,152 `Math.exp` calls cost ~0.6 ms per sequence per token
// (docs/benchmarks.md), more than the rest of the engine's work on a step. Here the exponential
// is a table of 2^(-j/32) times a degree-4 polynomial on the remainder (|r| < ln 2 / 32, where
// the polynomial's relative error is < 1e-10), ~2.5× faster, and the result is rounded to float32
// as before: it agrees with Math.fround(Math.exp(y)) to within one float32 unit in the last place,
// and bit for bit on all but fewer than 1 in 10,000 arguments.

/** Steps of the table per power of two. */
const STEPS = 32;
/** exp(y) < 2^-150 rounds to float32 zero: the table ends there. */
const LOWEST = -150 * STEPS;
/** TABLE[j] = 2^(-j / STEPS). */
const TABLE = Float64Array.from({ length: -LOWEST + 1 }, (_, j) => 2 ** (-j / STEPS));
const LOG2E = Math.LOG2E;
const STEP_LN = Math.LN2 / STEPS;

/**
 * out[i] = exp((src[i] - max) * invT) rounded to float32, for every i; returns the sum of the
 * stored values (in index order, as a draw over `out` accumulates them). `max` is the row's
 * largest logit, so the weights are <= 1 and the largest is exactly 1. -Infinity (a masked
 * token) and anything whose weight underflows float32 give 0; NaN gives NaN, and so does the
 * sum. `out` must be at least as long as `src`.
 */
export function softmaxWeights(src: Float32Array, max: number, invT: number, out: Float32Array): number {
  const scale = invT * LOG2E * STEPS; // y: the exponent in steps of 2^(1/STEPS)
  let sum = 0;
  for (let i = 0; i < src.length; i++) {
    const y = (src[i]! - max) * scale;
    let w: number;
    if (y >= LOWEST && y <= 0) {
      const k = Math.floor(y);
      const r = (y - k) * STEP_LN; // in [0, ln 2 / STEPS)
      w = Math.fround(TABLE[-k]! * (1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24))))));
    } else if (y < LOWEST) {
      w = 0;
    } else {
      // NaN, or a logit above `max` (not a caller of this module's): the exact function.
      w = Math.fround(Math.exp((src[i]! - max) * invT));
    }
    out[i] = w;
    sum += w;
  }
  return sum;
}
