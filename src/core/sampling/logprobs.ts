// Log-probabilities of the raw model distribution (log-softmax of the logits, before
// temperature, penalties, logit_bias or a grammar mask), as vLLM returns them by default: the
// figures a scoring client (lm-evaluation-harness) compares across models.

export interface TopLogprob {
  id: number;
  logprob: number;
}

export interface TokenLogprob extends TopLogprob {
  /** The `k` most likely ids, most likely first. */
  top: TopLogprob[];
}

/** JSON has no -Infinity: a masked (or NaN) logit reads as this, as in vLLM. */
export const MIN_LOGPROB = -9999;

/** log Σ exp(x) over the finite logits (NaN and -Infinity count as absent). */
export function logSumExp(logits: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > m) m = logits[i]!;
  if (!(m > -Infinity)) return Infinity;
  if (m === Infinity) return Infinity;
  let s = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]!;
    if (x > -Infinity) s += Math.exp(x - m);
  }
  return m + Math.log(s);
}

function lp(x: number, lse: number): number {
  const v = x - lse;
  return Math.max(v, MIN_LOGPROB);
}

/** `id`'s log-probability in `logits` and the `k` most likely ids' (k ≤ 20: an insertion list). */
export function tokenLogprob(logits: Float32Array, id: number, k: number): TokenLogprob {
  const lse = logSumExp(logits);
  const top: TopLogprob[] = [];
  if (k > 0) {
    const ids: number[] = [];
    for (let i = 0; i < logits.length; i++) {
      const x = logits[i]!;
      if (!(x > -Infinity)) continue;
      if (ids.length === k && x <= logits[ids[k - 1]!]!) continue;
      let j = ids.length < k ? ids.length : k - 1;
      while (j > 0 && logits[ids[j - 1]!]! < x) {
        ids[j] = ids[j - 1]!;
        j--;
      }
      ids[j] = i;
    }
    for (const i of ids) top.push({ id: i, logprob: lp(logits[i]!, lse) });
  }
  const x = id >= 0 && id < logits.length ? logits[id]! : Number.NaN;
  return { id, logprob: x > -Infinity ? lp(x, lse) : MIN_LOGPROB, top };
}
