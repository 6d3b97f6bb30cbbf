// Test helpers: generate under a grammar the way the engine would (random logits, masked in place,
// then sampled), build hand-made vocabularies, and validate outputs with ajv.
import { Ajv } from 'ajv';
import type { Grammar } from '../../../../src/core/sampling/grammar/index.js';
import { buildTrie, type TokenVocab } from '../../../../src/core/sampling/grammar/vocab.js';

/** mulberry32: a seeded PRNG so every failing case replays. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Sampled {
  ids: number[];
  text: string;
  /** The grammar reached `complete`, took EOS, or ran out of budget where the document may end. */
  finished: boolean;
}

/**
 * Samples uniformly among allowed tokens (the argmax of iid random logits after masking) until
 * the document is complete or EOS is drawn, with `maxTokens` passed as the budget so the grammar
 * closes the document in time. Throws if a mask ever allows nothing.
 */
export function sample(grammar: Grammar, seed: number, maxTokens: number): Sampled {
  const { vocab } = grammar;
  const rand = rng(seed);
  const row = new Float32Array(vocab.size + 3); // a model's logits may be padded past the vocabulary
  const st = grammar.start();
  const ids: number[] = [];
  let finished = false;
  while (ids.length < maxTokens) {
    for (let i = 0; i < row.length; i++) row[i] = rand();
    if (st.mask(row, maxTokens - ids.length) === 0) throw new Error(`nothing allowed after ${JSON.stringify(decode(vocab, ids))}`);
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
    if (row[best] === -Infinity || best >= vocab.size) throw new Error('sampled a masked token');
    st.accept(best);
    if (vocab.eosIds.includes(best)) {
      finished = true;
      break;
    }
    ids.push(best);
    if (st.complete) {
      finished = true;
      break;
    }
  }
  // Out of budget, the output still stands if it may end here (a top-level number never "completes").
  return { ids, text: decode(vocab, ids), finished: finished || st.canEnd };
}

/** The output's bytes as text; throws on invalid UTF-8 (the grammar must never produce it). */
export function decode(vocab: TokenVocab, ids: readonly number[]): string {
  const parts = ids.map((id) => vocab.bytes[id]!);
  return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(parts));
}

/** A vocabulary of the given tokens (strings are UTF-8; arrays are raw bytes) with EOS last. */
export function customVocab(tokens: readonly (string | number[])[]): TokenVocab {
  const bytes: (Uint8Array | null)[] = tokens.map((t) => (typeof t === 'string' ? new TextEncoder().encode(t) : Uint8Array.from(t)));
  bytes.push(null);
  return { size: bytes.length, bytes, eosIds: [bytes.length - 1], trie: buildTrie(bytes) };
}

/** Every ASCII byte and every other byte as a token: any output can be spelled. */
export function byteTokens(): number[][] {
  return Array.from({ length: 256 }, (_, b) => [b]);
}

export function idOf(vocab: TokenVocab, token: string | number[]): number {
  const want = typeof token === 'string' ? new TextEncoder().encode(token) : Uint8Array.from(token);
  const id = vocab.bytes.findIndex((b) => b !== null && Buffer.compare(Buffer.from(b), Buffer.from(want)) === 0);
  if (id < 0) throw new Error(`no token ${JSON.stringify(token)}`);
  return id;
}

const ajv = new Ajv({ strict: false, allErrors: true });

/** Ajv's verdict on `value` against `schema`: null if valid, else the errors as text. */
export function validate(schema: object | boolean, value: unknown): string | null {
  const check = ajv.compile(schema);
  return check(value) ? null : ajv.errorsText(check.errors);
}
