// Next-token distributions compared the same way by every fidelity bench (KV tiers, quantized
// weights): log-softmax in float64, top-1, and KL divergence of one distribution from another.

/** log-softmax of one row of logits, in float64. */
export function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - lse);
}

export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** KL(p ‖ q) in nats, from the two distributions' log-probabilities. */
export function klDivergence(lp: ArrayLike<number>, lq: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < lp.length; i++) s += Math.exp(lp[i]!) * (lp[i]! - lq[i]!);
  return s;
}
