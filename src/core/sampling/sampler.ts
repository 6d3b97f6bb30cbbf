// Turns one row of logits into the next token, per request, following vLLM/HF semantics so
// OpenAI-style parameters behave as clients expect. It runs once per generated token over
// vocabularies of ~150k, so every pass is O(V) and scratch buffers are allocated once per Sampler.

import { type SamplingParams, validateSampling } from './params.js';
import { Rng, randomSeed } from './rng.js';
import { F32_MAX, argmax, selectNucleus, siftDown } from './select.js';
import { softmaxWeights } from './softmax.js';

const EMPTY_F32 = new Float32Array(0);

function noLogitError(): RangeError {
  return new RangeError('no token has a logit above -Infinity');
}

/**
 * Per-request sampler. -Infinity masks a token. A model's non-finite logits are not trusted to
 * be absent: NaN carries no information, so it masks its token too, and +Infinity is read as
 * its limit, a logit that outgrows every other, so the +Infinity tokens share all the mass
 * equally (greedy: the lowest id), penalties or not (Infinity - x is Infinity). Only a row
 * with nothing else throws.
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
    // softmax(x / T) tends to the argmax as T -> 0, and below T = 1 / Number.MAX_VALUE
    // (~5.6e-309) 1/T is Infinity, which would make (x - max) * (1/T) NaN at the max itself.
    // So those temperatures are greedy, like 0 (and -0, which JSON and the schema let through:
    // 1 / -0 is -Infinity). Every other temperature keeps its exact 1/T: when that is finite
    // but huge, every weight but the max's underflows to 0, so the draw is already the argmax
    // (or one of exact ties at the max).
    const invT = 1 / this.params.temperature;
    let token: number;
    if (!(invT > 0 && invT < Infinity)) {
      // argmax skips NaN and takes the lowest +Infinity id already: no #sanitise pass.
      token = argmax(src);
      if (token < 0) throw noLogitError();
    } else {
      token = this.#sampleStochastic(src, invT);
      if (token < 0) {
        // The row holds NaN or +Infinity, found on the way rather than by a pass of its own
        // (the draw stops before using the RNG), or nothing in it is drawable.
        const clean = this.#sanitise(src);
        token = this.#sampleStochastic(clean, invT);
        // A clean row with finite 1/T always gives a token unless all of it is masked; even
        // so, no id outside the vocabulary ever leaves here.
        if (token < 0) token = argmax(clean);
        if (token < 0) throw noLogitError();
      }
    }
    if (this.#trackCounts) this.#counts.set(token, (this.#counts.get(token) ?? 0) + 1);
    this.#seen?.add(token);
    return token;
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
      // The largest logit whose boosted value x / rep left float32 range (see #boostPastRange).
      let top = -Infinity;
      for (const id of seen) {
        if (id >= V) continue;
        const raw = work[id]!;
        let x = raw > 0 ? raw / rep : raw * rep;
        const c = counts.get(id);
        if (c !== undefined) x -= freq * c + pres;
        work[id] = x;
        // Only the repetition penalty can push a finite logit out of float32 range: |freq * c +
        // pres| is far below float32 spacing out there.
        const y = work[id]!;
        if (y === Infinity && raw < Infinity) {
          if (raw > top) top = raw;
        } else if (y === -Infinity && raw > -Infinity) {
          // x * rep below -F32_MAX (a penalty > 1 on a logit below -3.4e37): the token falls
          // below every unpenalised logit by > 1e31, and so it does at -F32_MAX for any T <= 2.
          // It is not masked (masks are the model's), so it stays drawable if nothing else is,
          // though order among such tokens is then lost.
          work[id] = -F32_MAX;
        }
      }
      if (top > -Infinity) this.#boostPastRange(logits, work, seen, top);
    } else {
      for (const [id, c] of counts) if (id < V) work[id] = work[id]! - (freq * c + pres);
    }
    return work;
  }

  /**
   * A repetition penalty below 1 divides positive logits; a tiny one (1e-39, say) sends x / rep
   * past float32 range, where storing it gives +Infinity and (Infinity - max) gives NaN. The
   * exact values decide the draw anyway: each such token stands above every finite float32,
   * so every unpenalised logit, by at least half a float32 step there (~1e31), and two
   * penalised ones with different logits x differ by (x1 - x2) / rep >= (x / rep) * 2^-24,
   * also > 1e31 (float32 spacing near x is >= x * 2^-24). At any temperature the API accepts
   * (<= 2) exp() of minus that is 0, and as rep -> 0 it is so at every temperature: all the
   * mass goes to the seen tokens with the largest logit `top`, and only their frequency and
   * presence penalties still tell them apart. Shifted by -top / rep, that is a row of
   * -Infinity but for those, at -(freq * c + pres). A logit the model itself made +Infinity
   * still outranks them: then they are just finite, and #sanitise keeps the infinite ones.
   */
  #boostPastRange(logits: Float32Array, work: Float32Array, seen: ReadonlySet<number>, top: number): void {
    const p = this.params;
    const counts = this.#counts;
    if (logits.includes(Infinity)) {
      for (const id of seen) if (work[id] === Infinity && logits[id]! < Infinity) work[id] = F32_MAX;
      return;
    }
    work.fill(-Infinity);
    for (const id of seen) {
      if (logits[id] !== top) continue;
      const c = counts.get(id);
      work[id] = c === undefined ? 0 : -(p.frequencyPenalty * c + p.presencePenalty);
    }
  }

  /**
   * `src` with the class comment's reading of NaN and +Infinity: NaN -> -Infinity, and if any
   * +Infinity, 0 for those and -Infinity for the rest. `src` itself if it holds neither, else a
   * copy in #work. Costs a pass, so it runs only once a row is known to need it.
   */
  #sanitise(src: Float32Array): Float32Array {
    const V = src.length;
    let i = 0;
    while (i < V && src[i]! < Infinity) i++;
    if (i === V) return src;
    const inf = src.includes(Infinity, i);
    if (this.#work.length !== V) this.#work = new Float32Array(V);
    const work = this.#work; // may be `src` itself (penalised): each entry only reads its own
    for (let j = 0; j < V; j++) {
      const x = src[j]!;
      work[j] = inf ? (x === Infinity ? 0 : -Infinity) : x < Infinity ? x : -Infinity;
    }
    return work;
  }

  /**
   * Draws from softmax(src * invT) through top-k/top-p/min-p. -1 if `src` holds NaN or
   * +Infinity (then before any RNG draw; see sample()) or nothing drawable.
   */
  #sampleStochastic(src: Float32Array, invT: number): number {
    const p = this.params;
    const V = src.length;

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
    if (!(m > -Infinity && m < Infinity)) return -1;

    if (p.topP >= 1 && p.minP <= 0) {
      // Plain softmax draw; keeping the exponentials makes the draw a cheap second pass.
      if (this.#exps.length !== V) this.#exps = new Float32Array(V);
      const e = this.#exps;
      // The sum of the stored float32 weights, so the draw below sees the same total.
      const z = softmaxWeights(src, m, invT, e);
      if (!(z < Infinity)) return -1; // NaN: the max pass skips NaN, but the weights do not
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
      z = softmaxWeights(src, m, invT, full);
      if (!(z < Infinity)) return -1; // NaN
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
   * Applies top-p and min-p to the candidates in #ids[0, n) and draws one (-1: as for
   * #sampleStochastic; a NaN in the top-k heap is never evicted, so it is among them). `total`
   * is the softmax normaliser top-p mass is measured against (NaN: the candidates' own sum, i.e.
   * the top-k renormalised distribution, as vLLM masks before its softmax); `max` the largest
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
    if (!(m > -Infinity && m < Infinity)) return -1;
    if (this.#w.length < n) this.#w = new Float64Array(ids.length);
    const w = this.#w;
    let s = 0;
    for (let j = 0; j < n; j++) {
      const x = full === null ? Math.exp((src[ids[j]!]! - m) * invT) : full[ids[j]!]!;
      w[j] = x;
      s += x;
    }
    if (!(s < Infinity)) return -1; // NaN
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
    if (!(s > 0)) return -1;
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
