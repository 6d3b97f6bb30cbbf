// Selection primitives of the sampler: argmax with the lowest id on ties, a bounded min-heap
// for top-k, and a weighted quickselect for the top-p nucleus. Per-token paths allocate nothing.

/** Largest finite float32. */
export const F32_MAX = 3.4028234663852886e38;

/** Index of the largest value, lowest index on ties; -1 if none is > -Infinity. */
export function argmax(x: Float32Array): number {
  let best = -Infinity;
  let id = -1;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v > best) {
      best = v;
      id = i;
    }
  }
  return id;
}

// Min-heap of token ids keyed on src[id]. "Worse" = smaller logit, or equal logit and higher id,
// so the kept set breaks ties towards the lowest id, like greedy.
function worse(src: Float32Array, a: number, b: number): boolean {
  const x = src[a]!;
  const y = src[b]!;
  return x < y || (x === y && a > b);
}

export function siftDown(h: Int32Array, n: number, src: Float32Array, i: number): void {
  const id = h[i]!;
  for (;;) {
    let c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && worse(src, h[c + 1]!, h[c]!)) c++;
    if (!worse(src, h[c]!, id)) break;
    h[i] = h[c]!;
    i = c;
  }
  h[i] = id;
}

/**
 * Reorders ids/w[0, n) (w[j] = weight of ids[j]) so that [0, result) is the nucleus: the
 * smallest set of most likely tokens (ties -> lowest id) whose weight reaches `target`. A
 * weighted quickselect: partition around a pivot and keep only the side holding the boundary,
 * so expected O(n) where a sort is O(n log n). If the weights never reach `target` (rounding,
 * or min-p already cut the candidates), all n are kept. Exported for tests; `maxRounds`
 * bounds pathological pivots.
 */
export function selectNucleus(src: Float32Array, ids: Int32Array, w: Float64Array, n: number, target: number, maxRounds = 64): number {
  const swap = (i: number, j: number): void => {
    const id = ids[i]!;
    ids[i] = ids[j]!;
    ids[j] = id;
    const x = w[i]!;
    w[i] = w[j]!;
    w[j] = x;
  };
  // "Token a ranks before b": larger logit, or equal logit and lower id (a strict total order).
  const before = (a: number, b: number): boolean => {
    const x = src[a]!;
    const y = src[b]!;
    return x > y || (x === y && a < b);
  };
  let lo = 0;
  let hi = n;
  let need = target;
  for (let round = 0; hi - lo > 32 && round < maxRounds; round++) {
    const mid = (lo + hi) >>> 1;
    const last = hi - 1;
    // Median of three, moved to `last`.
    if (before(ids[mid]!, ids[lo]!)) swap(mid, lo);
    if (before(ids[last]!, ids[lo]!)) swap(last, lo);
    if (before(ids[mid]!, ids[last]!)) swap(mid, last);
    const pivot = ids[last]!;
    let store = lo;
    let mass = 0;
    for (let i = lo; i < last; i++) {
      if (before(ids[i]!, pivot)) {
        swap(i, store);
        mass += w[store]!;
        store++;
      }
    }
    swap(store, last);
    if (mass >= need) {
      hi = store;
    } else if (mass + w[store]! >= need) {
      return store + 1;
    } else {
      need -= mass + w[store]!;
      lo = store + 1;
    }
  }
  // Sort what is left, then scan it in rank order.
  if (hi - lo > 32) {
    // Only after maxRounds bad pivots, so allocating here does not touch the per-token path.
    const pos = Array.from({ length: hi - lo }, (_, j) => lo + j).sort((a, b) => (before(ids[a]!, ids[b]!) ? -1 : 1));
    const sortedIds = pos.map((q) => ids[q]!);
    const sortedW = pos.map((q) => w[q]!);
    for (let j = 0; j < pos.length; j++) {
      ids[lo + j] = sortedIds[j]!;
      w[lo + j] = sortedW[j]!;
    }
  } else {
    for (let i = lo + 1; i < hi; i++) {
      for (let j = i; j > lo && before(ids[j]!, ids[j - 1]!); j--) swap(j, j - 1);
    }
  }
  let acc = 0;
  for (let j = lo; j < hi; j++) {
    acc += w[j]!;
    if (acc >= need) return j + 1;
  }
  return hi;
}
