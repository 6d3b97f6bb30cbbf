// Turns one row of logits into the next token, per request, following vLLM/HF semantics so
// OpenAI-style parameters behave as clients expect. It runs once per generated token over
// vocabularies of ~150k, so every pass is O(V) and scratch buffers are allocated once per Sampler.

import { Rng, randomSeed } from './rng.js';

export interface SamplingParams {
  temperature: number; // 0 => greedy (argmax, ties -> lowest id)
  topK: number; // 0 => disabled
  topP: number; // 1 => disabled
  minP: number; // 0 => disabled (keep tokens with p >= minP * pMax)
  repetitionPenalty: number; // 1 => disabled; HF/CTRL style over prompt + generated tokens
  frequencyPenalty: number; // 0 => disabled; OpenAI style over generated tokens only
  presencePenalty: number; // 0 => disabled; OpenAI style over generated tokens only
  seed?: number; // same seed + same logits sequence => same tokens
}

export const defaultSampling: SamplingParams = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  frequencyPenalty: 0,
  presencePenalty: 0,
});

function isNum(v: unknown): v is number {
  return typeof v === 'number' && !Number.isNaN(v);
}

function reject(field: keyof SamplingParams, rule: string, value: unknown): never {
  throw new RangeError(`${field} ${rule} (got ${String(value)})`);
}

/** Throws a RangeError naming the offending field; the message is safe to return to clients. */
export function validateSampling(p: SamplingParams): void {
  const { temperature, topK, topP, minP, repetitionPenalty, frequencyPenalty, presencePenalty, seed } = p;
  if (!isNum(temperature) || !Number.isFinite(temperature) || temperature < 0) {
    reject('temperature', 'must be a finite number >= 0', temperature);
  }
  if (!Number.isSafeInteger(topK) || topK < 0) reject('topK', 'must be an integer >= 0', topK);
  if (!isNum(topP) || !(topP > 0 && topP <= 1)) reject('topP', 'must be in (0, 1]', topP);
  if (!isNum(minP) || !(minP >= 0 && minP <= 1)) reject('minP', 'must be in [0, 1]', minP);
  if (!isNum(repetitionPenalty) || !Number.isFinite(repetitionPenalty) || repetitionPenalty <= 0) {
    reject('repetitionPenalty', 'must be a finite number > 0', repetitionPenalty);
  }
  if (!isNum(frequencyPenalty) || !(frequencyPenalty >= -2 && frequencyPenalty <= 2)) {
    reject('frequencyPenalty', 'must be in [-2, 2]', frequencyPenalty);
  }
  if (!isNum(presencePenalty) || !(presencePenalty >= -2 && presencePenalty <= 2)) {
    reject('presencePenalty', 'must be in [-2, 2]', presencePenalty);
  }
  if (seed !== undefined && (!Number.isSafeInteger(seed) || seed < 0)) {
    reject('seed', 'must be a non-negative safe integer', seed);
  }
}

const EMPTY_F32 = new Float32Array(0);

/** Index of the largest value, lowest index on ties; -1 if none is > -Infinity. */
function argmax(x: Float32Array): number {
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

function siftDown(h: Int32Array, n: number, src: Float32Array, i: number): void {
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

function noLogitError(): RangeError {
  return new RangeError('no token has a logit above -Infinity');
}

/**
 * Per-request sampler. Logits must not contain NaN or +Infinity; -Infinity masks a token.
 * Scratch is at most two V-sized Float32Arrays plus candidate arrays that grow only as far as a
 * request's distributions need (about 1.2 MB at V = 150k in the common case).
 */
export class Sampler {
  readonly params: Readonly<SamplingParams>;
  /** The seed actually in use (drawn from the OS when the request gave none), for logging/replay. */
  readonly seed: number;

  readonly #rng: Rng;
  /** Generated-token counts for frequency/presence penalties; sparse, so penalties cost O(seen). */
  readonly #counts = new Map<number, number>();
  readonly #trackCounts: boolean;
  /** Prompt + generated ids for the repetition penalty; null when that penalty is off. */
  readonly #seen: Set<number> | null;

  // Scratch, grown on demand and reused for every token.
  #work: Float32Array = EMPTY_F32; // penalised copy of the logits
  #exps: Float32Array = EMPTY_F32; // unnormalised probabilities, full vocabulary
  #ids = new Int32Array(64); // top-k heap / candidate ids
  #w = new Float64Array(64); // candidate weights

  // The distribution of the last sample(), kept for logprob().
  #lastSrc: Float32Array | null = null;
  #lastInvT = 1;
  #lastMax = NaN;
  #lastLogZ = NaN; // log sum exp((x - max) * invT)

  constructor(params: SamplingParams, promptIds: readonly number[]) {
    validateSampling(params);
    this.params = Object.freeze({ ...params });
    this.seed = params.seed ?? randomSeed();
    this.#rng = new Rng(this.seed);
    this.#trackCounts = params.frequencyPenalty !== 0 || params.presencePenalty !== 0;
    if (params.repetitionPenalty !== 1) {
      const seen = new Set<number>();
      for (const id of promptIds) if (Number.isInteger(id) && id >= 0) seen.add(id);
      this.#seen = seen;
    } else {
      this.#seen = null;
    }
  }

  /** Picks the next token from one row of logits (length = vocab size). Does not mutate `logits`. Records the token for penalties. */
  sample(logits: Float32Array): number {
    if (logits.length === 0) throw new RangeError('logits is empty');
    const src = this.#penalise(logits);
    let token: number;
    if (this.params.temperature === 0) {
      token = argmax(src);
      if (token < 0) throw noLogitError();
      this.#lastSrc = src;
      this.#lastInvT = 1;
      this.#lastMax = src[token]!;
      this.#lastLogZ = NaN;
    } else {
      token = this.#sampleStochastic(src);
    }
    if (this.#trackCounts) this.#counts.set(token, (this.#counts.get(token) ?? 0) + 1);
    this.#seen?.add(token);
    return token;
  }

  /**
   * log-probability of `token` under the distribution the last sample() drew from: after
   * penalties and temperature, before top-k/top-p/min-p (what OpenAI `logprobs` reports). For
   * greedy requests temperature 1 is used, since the argmax "distribution" is degenerate.
   * Without active penalties this reads the `logits` passed to sample() again, so call it
   * before that buffer is reused. The first call after a sample() may cost one O(V) pass.
   */
  logprob(token: number): number {
    const src = this.#lastSrc;
    if (src === null) throw new Error('logprob() called before sample()');
    if (!Number.isInteger(token) || token < 0 || token >= src.length) {
      throw new RangeError(`token ${token} is outside the vocabulary (size ${src.length})`);
    }
    const invT = this.#lastInvT;
    if (Number.isNaN(this.#lastLogZ)) {
      let m = this.#lastMax;
      if (Number.isNaN(m)) {
        m = -Infinity;
        for (let i = 0; i < src.length; i++) if (src[i]! > m) m = src[i]!;
        this.#lastMax = m;
      }
      let z = 0;
      for (let i = 0; i < src.length; i++) z += Math.exp((src[i]! - m) * invT);
      this.#lastLogZ = Math.log(z);
    }
    return (src[token]! - this.#lastMax) * invT - this.#lastLogZ;
  }

  #penalise(logits: Float32Array): Float32Array {
    const p = this.params;
    const seen = this.#seen;
    const counts = this.#counts;
    const repActive = seen !== null && seen.size > 0;
    if (!repActive && counts.size === 0) return logits;
    const V = logits.length;
    if (this.#work.length !== V) this.#work = new Float32Array(V);
    const work = this.#work;
    work.set(logits);
    const freq = p.frequencyPenalty;
    const pres = p.presencePenalty;
    // vLLM order: repetition penalty first, then frequency and presence.
    if (repActive) {
      const rep = p.repetitionPenalty;
      for (const id of seen) {
        if (id >= V) continue;
        let x = work[id]!;
        x = x > 0 ? x / rep : x * rep;
        const c = counts.get(id);
        if (c !== undefined) x -= freq * c + pres;
        work[id] = x;
      }
    } else {
      for (const [id, c] of counts) if (id < V) work[id] = work[id]! - (freq * c + pres);
    }
    return work;
  }

  #sampleStochastic(src: Float32Array): number {
    const p = this.params;
    const V = src.length;
    const invT = 1 / p.temperature;
    this.#lastSrc = src;
    this.#lastInvT = invT;
    this.#lastMax = NaN;
    this.#lastLogZ = NaN;

    if (p.topK > 0 && p.topK < V) {
      // Bounded min-heap: O(V) comparisons plus O(log k) only for the few logits that beat
      // the current k-th best, and no V-sized index array (quickselect would need one).
      const k = p.topK;
      this.#ensureIds(k);
      const h = this.#ids;
      for (let i = 0; i < k; i++) h[i] = i;
      for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(h, k, src, i);
      let floor = src[h[0]!]!;
      for (let i = k; i < V; i++) {
        if (src[i]! > floor) {
          h[0] = i;
          siftDown(h, k, src, 0);
          floor = src[h[0]!]!;
        }
      }
      // top-p then renormalises over these k, as vLLM masks before its softmax.
      return this.#finish(src, k, invT, NaN, NaN, null);
    }

    let m = -Infinity;
    for (let i = 0; i < V; i++) if (src[i]! > m) m = src[i]!;
    if (!(m > -Infinity)) throw noLogitError();
    this.#lastMax = m;

    if (p.topP >= 1 && p.minP <= 0) {
      // Plain softmax draw; keeping the exponentials makes the draw a cheap second pass.
      if (this.#exps.length !== V) this.#exps = new Float32Array(V);
      const e = this.#exps;
      let z = 0;
      for (let i = 0; i < V; i++) {
        const x = Math.exp((src[i]! - m) * invT);
        e[i] = x;
        z += e[i]!; // sum the stored float32 value so the draw below sees the same total
      }
      this.#lastLogZ = Math.log(z);
      const u = this.#rng.next() * z;
      let acc = 0;
      let last = -1;
      for (let i = 0; i < V; i++) {
        const x = e[i]!;
        if (x > 0) {
          acc += x;
          last = i;
          if (u < acc) return i;
        }
      }
      return last; // u fell past the accumulated total by rounding
    }

    // top-p and/or min-p without top-k. Sorting all V logits would cost O(V log V) per token, so
    // first cut to a candidate set: a token with p_i < (1 - topP) / V cannot be in the nucleus,
    // because fewer than V such tokens hold < 1 - topP of the mass together, so the nucleus (a
    // prefix of the sorted order) lies entirely among the rest. Peaked LLM distributions leave
    // a few hundred candidates; a flat one keeps many, but then the nucleus really is that big,
    // which is why selectNucleus() selects rather than sorts. min-p is a further threshold.
    let thr = -Infinity;
    let z = NaN;
    let full: Float32Array | null = null;
    if (p.topP < 1) {
      // Kept so the candidates' weights need no second exp.
      if (this.#exps.length !== V) this.#exps = new Float32Array(V);
      full = this.#exps;
      z = 0;
      for (let i = 0; i < V; i++) {
        full[i] = Math.exp((src[i]! - m) * invT);
        z += full[i]!;
      }
      this.#lastLogZ = Math.log(z);
      // p_i >= tau  <=>  (x_i - m) * invT >= ln(tau * z)
      thr = m + Math.log(((1 - p.topP) / V) * z) / invT;
    }
    if (p.minP > 0) thr = Math.max(thr, m + Math.log(p.minP) / invT);
    let n = 0;
    let ids = this.#ids;
    for (let i = 0; i < V; i++) {
      if (src[i]! >= thr) {
        if (n === ids.length) {
          this.#ensureIds(n + 1, V);
          ids = this.#ids;
        }
        ids[n++] = i;
      }
    }
    return this.#finish(src, n, invT, z, m, full);
  }

  /**
   * Applies top-p and min-p to the candidates in #ids[0, n) and draws one. `total` is the
   * softmax normaliser top-p mass is measured against (NaN: the candidates' own sum, i.e. the
   * top-k renormalised distribution, as vLLM masks before its softmax); `max` the largest
   * candidate logit if already known; `full` the weights of the whole vocabulary if computed.
   */
  #finish(src: Float32Array, n: number, invT: number, total: number, max: number, full: Float32Array | null): number {
    const p = this.params;
    const ids = this.#ids;
    let m = max;
    if (Number.isNaN(m)) {
      m = -Infinity;
      for (let j = 0; j < n; j++) if (src[ids[j]!]! > m) m = src[ids[j]!]!;
    }
    if (!(m > -Infinity)) throw noLogitError();
    if (this.#w.length < n) this.#w = new Float64Array(ids.length);
    const w = this.#w;
    let s = 0;
    for (let j = 0; j < n; j++) {
      const x = full === null ? Math.exp((src[ids[j]!]! - m) * invT) : full[ids[j]!]!;
      w[j] = x;
      s += x;
    }
    if (p.topP < 1) n = selectNucleus(src, ids, w, n, p.topP * (Number.isNaN(total) ? s : total));
    if (p.minP > 0) {
      // w is relative to the most likely token (w = 1 there), so this is p >= minP * pMax.
      let kept = 0;
      for (let j = 0; j < n; j++) {
        if (w[j]! >= p.minP) {
          ids[kept] = ids[j]!;
          w[kept] = w[j]!;
          kept++;
        }
      }
      n = kept;
    }
    s = 0;
    for (let j = 0; j < n; j++) s += w[j]!;
    const u = this.#rng.next() * s;
    let acc = 0;
    let last = 0;
    for (let j = 0; j < n; j++) {
      const x = w[j]!;
      if (x > 0) {
        acc += x;
        last = j;
        if (u < acc) return ids[j]!;
      }
    }
    return ids[last]!;
  }

  /** Grows #ids to hold n (doubling, but never past `limit` >= n, the vocabulary size). */
  #ensureIds(n: number, limit = n): void {
    if (this.#ids.length >= n) return;
    let cap = this.#ids.length;
    while (cap < n) cap *= 2;
    cap = Math.min(cap, limit);
    const ids = new Int32Array(cap);
    ids.set(this.#ids);
    this.#ids = ids;
  }
}
