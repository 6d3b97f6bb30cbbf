// What narrows a request's choice of token beyond sampling: OpenAI's logit_bias and a
// structured-output grammar (response_format). Applied to a copy of the logits, so a request
// without them costs nothing and the raw row stays for logprobs.
import { type Grammar, type GrammarState, type ResponseFormat, type TokenVocab, compileGrammar } from './grammar/index.js';

export class Constraints {
  readonly #bias: readonly (readonly [number, number])[];
  readonly #grammar: GrammarState | undefined;
  #row = new Float32Array(0);

  constructor(bias: readonly (readonly [number, number])[], grammar: GrammarState | undefined) {
    this.#bias = bias;
    this.#grammar = grammar;
  }

  /** Undefined when the request has neither: the sampler reads the model's row itself. */
  static of(bias: readonly (readonly [number, number])[] | undefined, grammar: Grammar | null | undefined): Constraints | undefined {
    if ((bias === undefined || bias.length === 0) && !grammar) return undefined;
    return new Constraints(bias ?? [], grammar?.start());
  }

  /** The JSON document is finished: generation stops (only EOS could follow). */
  get complete(): boolean {
    return this.#grammar?.complete ?? false;
  }

  /** `logits` biased and masked, in scratch reused every step. Throws when the grammar allows nothing. */
  apply(logits: Float32Array, tokensLeft: number): Float32Array {
    if (this.#row.length !== logits.length) this.#row = new Float32Array(logits.length);
    const row = this.#row;
    row.set(logits);
    // Bias first, then the mask: a +100 bias can never let a token the grammar forbids through.
    for (const [id, b] of this.#bias) if (id < row.length) row[id] = row[id]! + b;
    if (this.#grammar && this.#grammar.mask(row, tokensLeft) === 0) throw new Error('the response format allows no token here');
    return row;
  }

  accept(token: number): void {
    this.#grammar?.accept(token);
  }
}

/**
 * Compiled response formats for one vocabulary, by their JSON text: a client repeating its
 * schema compiles it once, and the masks cached inside the grammar are shared. Bounded, oldest
 * dropped first.
 */
export class GrammarCache {
  readonly #map = new Map<string, Grammar | null>();

  constructor(
    readonly vocab: TokenVocab,
    readonly max = 32,
  ) {}

  get(format: ResponseFormat): Grammar | null {
    const key = JSON.stringify(format);
    let g = this.#map.get(key);
    if (g === undefined) {
      g = compileGrammar(format, this.vocab);
      if (this.#map.size >= this.max) this.#map.delete(this.#map.keys().next().value!);
    } else {
      this.#map.delete(key);
    }
    this.#map.set(key, g);
    return g;
  }
}
