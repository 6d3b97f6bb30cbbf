// Which token ids may come next from an automaton state: a depth-first walk of the vocabulary
// trie that prunes a subtree at the first rejected byte. Walks are memoized per state key in a
// bounded per-grammar cache, so steady-state decoding only pays for applying a cached mask.
import { type Frame, canEnd, inStringBody, remaining, stateKey, step } from './automaton.js';
import { stringBodyDenied, walkStringBody } from './string-table.js';
import type { TokenVocab } from './vocab.js';

export interface StateMask {
  /** The allowed ids (EOS included when the document may end) or, if `deny`, the disallowed ones. */
  readonly ids: Int32Array;
  readonly deny: boolean;
  /** Most bytes any allowed token leaves to write: below that budget, ranked() decides. */
  readonly maxAfter: number;
  /** Allowed ids by how many bytes they leave to write, fewest first (built on first need). */
  ranked: { ids: Int32Array; after: Int32Array } | undefined;
}

/** Cache bound, in stored ids over all states (4 bytes each): 64 MB per grammar at most. */
const MAX_CACHED_IDS = 16 << 20;

/** Per-vocabulary scratch space, reused by every walk (decoding runs on one thread). */
interface Scratch {
  ids: Int32Array;
  after: Int32Array;
  mark: Uint8Array;
  saved: Float32Array;
  states: (Frame | null)[];
}
const scratchByVocab = new WeakMap<TokenVocab, Scratch>();

function scratchFor(vocab: TokenVocab): Scratch {
  let s = scratchByVocab.get(vocab);
  if (s === undefined) {
    const n = vocab.size + vocab.eosIds.length;
    s = {
      ids: new Int32Array(n),
      after: new Int32Array(n),
      mark: new Uint8Array(vocab.size),
      saved: new Float32Array(n),
      states: new Array<Frame | null>(vocab.trie.maxDepth + 1).fill(null),
    };
    scratchByVocab.set(vocab, s);
  }
  return s;
}

/** Collects into scratch.ids/after every id allowed from `start`, with the bytes it leaves; returns the count. */
function walk(start: Frame, vocab: TokenVocab, sc: Scratch): number {
  if (inStringBody(start)) return walkStringBody(start, vocab, sc.ids, sc.after);
  const { byte, depth, end, idStart, ids, nodes } = vocab.trie;
  const states = sc.states;
  states[0] = start;
  let n = 0;
  for (let i = 1; i < nodes; ) {
    const d = depth[i]!;
    const next = step(states[d - 1]!, byte[i]!);
    if (next === null) {
      i = end[i]!;
      continue;
    }
    states[d] = next;
    const stop = idStart[i + 1]!;
    if (idStart[i]! < stop) {
      const after = remaining(next);
      for (let k = idStart[i]!; k < stop; k++) {
        sc.ids[n] = ids[k]!;
        sc.after[n++] = after;
      }
    }
    i++;
  }
  if (canEnd(start)) {
    for (const id of vocab.eosIds) {
      sc.ids[n] = id;
      sc.after[n++] = 0;
    }
  }
  states.fill(null); // drop references to frames of this walk
  return n;
}

export class MaskCache {
  readonly #vocab: TokenVocab;
  readonly #masks = new Map<string, StateMask>();
  #stored = 0;
  /** Walks done (cache misses), for the benchmark and tests. */
  walks = 0;

  constructor(vocab: TokenVocab) {
    this.#vocab = vocab;
  }

  get(f: Frame): StateMask {
    const key = stateKey(f);
    const hit = this.#masks.get(key);
    if (hit !== undefined) return hit;
    const mask = this.#build(f);
    if (this.#stored + mask.ids.length > MAX_CACHED_IDS) {
      this.#masks.clear(); // crude, but a full cache means a huge or deeply nested schema: rare
      this.#stored = 0;
    }
    this.#masks.set(key, mask);
    this.#stored += mask.ids.length;
    return mask;
  }

  #build(f: Frame): StateMask {
    this.walks++;
    const vocab = this.#vocab;
    if (inStringBody(f)) {
      const { denied, maxAfter } = stringBodyDenied(f, vocab);
      return { ids: denied, deny: true, maxAfter, ranked: undefined };
    }
    const sc = scratchFor(vocab);
    const n = walk(f, vocab, sc);
    let maxAfter = 0;
    for (let k = 0; k < n; k++) maxAfter = Math.max(maxAfter, sc.after[k]!);
    // More than half allowed: store (and later overwrite) the disallowed ids instead.
    if (n * 2 <= vocab.size) return { ids: sc.ids.slice(0, n), deny: false, maxAfter, ranked: undefined };
    sc.mark.fill(0);
    for (let k = 0; k < n; k++) if (sc.ids[k]! < vocab.size) sc.mark[sc.ids[k]!] = 1;
    const denied: number[] = [];
    for (let id = 0; id < vocab.size; id++) if (sc.mark[id] === 0) denied.push(id);
    return { ids: Int32Array.from(denied), deny: true, maxAfter, ranked: undefined };
  }

  /** Ranks a state's allowed ids by bytes left after them (a second walk: only near the budget's end). */
  ranked(f: Frame, mask: StateMask): { ids: Int32Array; after: Int32Array } {
    if (mask.ranked !== undefined) return mask.ranked;
    const sc = scratchFor(this.#vocab);
    const n = walk(f, this.#vocab, sc);
    // Counting sort: "bytes left" are small integers, and a comparison sort of 32k ids took ~20 ms.
    let top = 0;
    for (let k = 0; k < n; k++) top = Math.max(top, sc.after[k]!);
    const start = new Int32Array(top + 2);
    for (let k = 0; k < n; k++) start[sc.after[k]! + 1]!++;
    for (let v = 1; v <= top + 1; v++) start[v]! += start[v - 1]!;
    const ids = new Int32Array(n);
    const after = new Int32Array(n);
    for (let k = 0; k < n; k++) {
      const at = start[sc.after[k]!]!++;
      ids[at] = sc.ids[k]!;
      after[at] = sc.after[k]!;
    }
    mask.ranked = { ids, after };
    return mask.ranked;
  }

  /**
   * Sets every disallowed logit to -Infinity in place (ids past the vocabulary included); returns
   * how many ids stay allowed. With `budget` (bytes the output may still add, one per token at
   * worst), only tokens that leave a finishable document are kept; if none does, those that
   * leave the least.
   */
  apply(f: Frame, mask: StateMask, logits: Float32Array, budget: number): number {
    const size = this.#vocab.size;
    if (budget >= mask.maxAfter && mask.deny) {
      for (const id of mask.ids) logits[id] = -Infinity;
      if (logits.length > size) logits.fill(-Infinity, size);
      return size - mask.ids.length;
    }
    let ids = mask.ids;
    let count = ids.length;
    if (budget < mask.maxAfter) {
      const r = this.ranked(f, mask);
      const limit = Math.max(budget, r.after[0] ?? 0);
      ids = r.ids;
      count = 0;
      while (count < ids.length && r.after[count]! <= limit) count++;
    }
    const saved = scratchFor(this.#vocab).saved;
    for (let k = 0; k < count; k++) saved[k] = logits[ids[k]!]!;
    logits.fill(-Infinity);
    for (let k = 0; k < count; k++) logits[ids[k]!] = saved[k]!;
    return count;
  }
}
