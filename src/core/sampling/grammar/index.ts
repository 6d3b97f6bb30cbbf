// Constrained decoding for OpenAI structured outputs (response_format json_object / json_schema):
// per step, only tokens that keep the output a valid prefix of a matching JSON document survive.
//
// Decision: our own byte automaton over a token trie, not xgrammar's WebAssembly build: in
// bench/grammar.ts it costs less per step at batch 16 on both tokenizers (figures in
// bench/results/grammar.json), and it is synchronous, needs no loader shim, and can close the
// document within a token budget.

import { type Frame, canEnd, initialFrame, isComplete, remaining, step } from './automaton.js';
import { MaskCache } from './mask.js';
import type { RootNode } from './nodes.js';
import { type SchemaOptions, compileJsonObject, compileSchema } from './schema.js';
import type { TokenVocab } from './vocab.js';

export { UnsupportedSchemaError } from './schema.js';
export { tokenVocab, type TokenVocab } from './vocab.js';

/** OpenAI's `response_format`. */
export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; json_schema: { name: string; description?: string; schema?: unknown; strict?: boolean | null } };

export interface GrammarOptions {
  /** Longest whitespace run between two JSON tokens (default 8). */
  maxWhitespace?: number;
}

/** A compiled response format for one vocabulary: immutable and shareable by many requests. */
export class Grammar {
  readonly #cache: MaskCache;

  constructor(
    readonly root: RootNode,
    readonly vocab: TokenVocab,
  ) {
    this.#cache = new MaskCache(vocab);
  }

  /** Cache misses so far: each one walked the vocabulary trie. */
  get walks(): number {
    return this.#cache.walks;
  }

  start(): GrammarState {
    return new GrammarState(this, this.#cache, initialFrame(this.root));
  }
}

/**
 * Compiles `format` for `vocab`; null for `text` (no constraint). Throws UnsupportedSchemaError
 * (naming the keywords) for schemas using keywords it cannot enforce, and Error for malformed or
 * unsatisfiable ones. Compile once per (format, tokenizer) and share: masks are cached inside.
 */
export function compileGrammar(format: ResponseFormat, vocab: TokenVocab, options: GrammarOptions = {}): Grammar | null {
  const opts: SchemaOptions = { maxWhitespace: options.maxWhitespace ?? 8 };
  switch (format.type) {
    case 'text':
      return null;
    case 'json_object':
      return new Grammar(compileJsonObject(opts), vocab);
    case 'json_schema': {
      const { schema, strict } = format.json_schema;
      return new Grammar(compileSchema(schema ?? true, { ...opts, strict: strict === true }), vocab);
    }
  }
}

/** One sequence's position in the grammar. Cheap to clone (the state is an immutable stack). */
export class GrammarState {
  readonly #grammar: Grammar;
  readonly #cache: MaskCache;
  #frame: Frame;
  #ended = false;

  constructor(grammar: Grammar, cache: MaskCache, frame: Frame) {
    this.#grammar = grammar;
    this.#cache = cache;
    this.#frame = frame;
  }

  /** The JSON document is finished: only EOS is allowed, and generation should stop. */
  get complete(): boolean {
    return isComplete(this.#frame);
  }

  /** EOS may come now (the document is complete, or is a top-level number that may end here). */
  get canEnd(): boolean {
    return canEnd(this.#frame);
  }

  /** Fewest bytes that finish the document: the engine's floor for tokens still needed. */
  get remaining(): number {
    return remaining(this.#frame);
  }

  /**
   * Sets the logits of disallowed tokens to -Infinity in place, EOS included until the document
   * may end; returns how many ids stay allowed (0 only if the vocabulary cannot continue).
   * `tokensLeft` (this step included), when the output is capped, keeps only tokens after which
   * the document can still be closed in time — exact when every byte is a token of its own (byte-
   * level BPE, byte fallback), so a capped output still parses.
   */
  mask(logits: Float32Array, tokensLeft = Infinity): number {
    if (this.#ended) throw new Error('the grammar has already accepted EOS');
    const f = this.#frame;
    return this.#cache.apply(f, this.#cache.get(f), logits, tokensLeft - 1);
  }

  /** Advances by one sampled token; throws if the grammar does not allow it here. */
  accept(tokenId: number): void {
    if (this.#ended) throw new Error('the grammar has already accepted EOS');
    const vocab = this.#grammar.vocab;
    if (vocab.eosIds.includes(tokenId)) {
      if (!canEnd(this.#frame)) throw new Error(`token ${tokenId} (EOS) is not allowed: the JSON document is not finished`);
      this.#ended = true;
      return;
    }
    const bytes = tokenId >= 0 && tokenId < vocab.size ? vocab.bytes[tokenId] : null;
    let f: Frame | null = bytes == null ? null : this.#frame;
    for (let i = 0; f !== null && i < bytes!.length; i++) f = step(f, bytes![i]!);
    if (f === null) throw new Error(`token ${tokenId} is not allowed by the grammar here`);
    this.#frame = f;
  }

  clone(): GrammarState {
    const c = new GrammarState(this.#grammar, this.#cache, this.#frame);
    c.#ended = this.#ended;
    return c;
  }
}
