// The tokenizer the engine speaks through: Hugging Face tokenizer.json via
// @huggingface/tokenizers (pure JS, the same implementation Transformers.js uses).
import { Tokenizer } from '@huggingface/tokenizers';
import type { TokenDecoder } from '../core/sampling/detokenizer.js';

export class TextTokenizer implements TokenDecoder {
  readonly #tok: Tokenizer;
  /** Number of distinct ids the tokenizer can produce (base vocabulary plus added tokens). */
  readonly vocabSize: number;
  readonly eosToken: string | undefined;
  readonly specialIds: ReadonlySet<number>;
  #maxTokenChars: number | undefined;
  readonly #single = new Map<number, string>();

  constructor(tokenizerJson: object, tokenizerConfig: Record<string, unknown>) {
    this.#tok = new Tokenizer(tokenizerJson, tokenizerConfig);
    let maxId = -1;
    for (const id of this.#tok.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.specialIds = new Set([...this.#tok.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id));
    const eos = tokenizerConfig.eos_token;
    this.eosToken =
      typeof eos === 'string' ? eos : typeof (eos as { content?: unknown } | null)?.content === 'string' ? (eos as { content: string }).content : undefined;
  }

  /**
   * The longest token of the vocabulary, in UTF-16 units (its text in tokenizer.json or as
   * decoded, whichever is longer): a text of n units is at least n / maxTokenChars tokens.
   * Computed on first use: decoding every id of a 49k vocabulary leaves ~40 MiB of garbage in the
   * thread's heap, and only the HTTP thread's size check asks (EngineClient.start, at load).
   */
  get maxTokenChars(): number {
    if (this.#maxTokenChars === undefined) {
      let maxChars = 1;
      for (const [token, id] of this.#tok.get_vocab(true)) {
        // (The library lists an undefined token for an id gap before an added token.)
        maxChars = Math.max(maxChars, (token as string | undefined)?.length ?? 0, this.#decodedLength(id));
      }
      this.#maxTokenChars = maxChars;
    }
    return this.#maxTokenChars;
  }

  /** One id's decoded length: a decoder may make a token's text longer (0 if it cannot decode it). */
  #decodedLength(id: number): number {
    try {
      return (this.#tok.decode([id], { skip_special_tokens: false }) as string | undefined)?.length ?? 0;
    } catch {
      return 0; // the load check names a tokenizer that does not fit the model
    }
  }

  encode(text: string): number[] {
    return this.#tok.encode(text).ids;
  }

  /** Decodes ids to text, dropping special tokens such as end-of-text. */
  decode(ids: readonly number[]): string {
    if (ids.length === 1) return this.#decodeOne(ids[0]!);
    return this.#tok.decode(ids as number[], { skip_special_tokens: true });
  }

  /**
   * One token's text, remembered per id: the streaming detokenizer asks for it on nearly every
   * step (the token just emitted becomes the next step's context), and each decode() call built
   * ~1 KB of garbage — half of the engine worker's allocations at 16 streams. Only ids of the
   * vocabulary are remembered, so the map is bounded by its size.
   */
  #decodeOne(id: number): string {
    const known = this.#single.get(id);
    if (known !== undefined) return known;
    const text: string = this.#tok.decode([id], { skip_special_tokens: true });
    if (Number.isInteger(id) && id >= 0 && id < this.vocabSize) this.#single.set(id, text);
    return text;
  }

  tokenToId(token: string): number | undefined {
    return this.#tok.token_to_id(token);
  }
}
