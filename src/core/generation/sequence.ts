// One request's generation state: its prompt, sampler, detokenizer and stop matcher, and its
// KV cache while the prompt is prefilled (then the decode batch holds it). The engine advances
// it one model step at a time.
import type { KvCache } from '../kv/kv-cache.js';
import { IncrementalDetokenizer, type TokenDecoder } from './detokenizer.js';
import { Sampler, type SamplingParams } from './sampler.js';
import { StopMatcher } from './stop.js';

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

export interface GenerateRequest {
  promptIds: number[];
  maxTokens: number;
  sampling: SamplingParams;
  stop?: string[];
  /** Keep generating past end-of-sequence tokens (benchmarks). */
  ignoreEos?: boolean;
  /** Names a session whose cache this request continues and then replaces. */
  sessionId?: string;
  /** Isolation key: caches are never shared across tenants. */
  tenant?: string;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens whose keys and values came from the cache instead of being computed. */
  cachedTokens: number;
}

export class Sequence {
  readonly id: string;
  readonly promptIds: readonly number[];
  readonly generated: number[] = [];
  /** The sequence's own cache while its prompt is prefilled; undefined once it joined the batch. */
  kv: KvCache | undefined;
  /** Tokens whose keys and values are computed (in `kv` or in the batch). */
  length: number;
  readonly cachedTokens: number;
  readonly maxTokens: number;
  readonly ignoreEos: boolean;
  readonly sampler: Sampler;
  readonly #detok: IncrementalDetokenizer;
  readonly #stop: StopMatcher;
  aborted = false;
  timedOut = false;

  /** `kv` holds the prompt's first tokens when a cache was reused, else nothing. */
  constructor(id: string, req: GenerateRequest, kv: KvCache, decoder: TokenDecoder) {
    if (kv.length >= req.promptIds.length) throw new RangeError('a reused cache must leave at least one prompt token to feed');
    this.id = id;
    this.promptIds = req.promptIds;
    this.maxTokens = req.maxTokens;
    this.ignoreEos = req.ignoreEos ?? false;
    this.kv = kv;
    this.length = kv.length;
    this.cachedTokens = kv.length;
    this.sampler = new Sampler(req.sampling, req.promptIds);
    // The prompt's last tokens seed the detokenizer: some tokenizers decode a token differently
    // at the start of a text (SentencePiece's leading space).
    this.#detok = new IncrementalDetokenizer(decoder, req.promptIds);
    this.#stop = new StopMatcher(req.stop ?? []);
  }

  /** Prompt tokens not yet prefilled. */
  get promptLeft(): number {
    return Math.max(0, this.promptIds.length - this.length);
  }

  /** The token the next decode step feeds. */
  get lastToken(): number {
    const last = this.generated[this.generated.length - 1];
    if (last === undefined) throw new Error('no token sampled yet');
    return last;
  }

  /** Every token whose keys and values the cache holds. */
  cachedSequence(): number[] {
    return [...this.promptIds, ...this.generated].slice(0, this.length);
  }

  /** Turns a sampled token into emit-ready text; `stopped` when a stop sequence matched. */
  acceptText(token: number): { text: string; stopped: boolean } {
    return this.#stop.push(this.#detok.push(token));
  }

  /** Text held back at the end (a partial stop match that never completed, a trailing partial character). */
  flush(): string {
    const tail = this.#stop.push(this.#detok.flush());
    return tail.stopped ? tail.text : tail.text + this.#stop.flush();
  }

  usage(): Usage {
    return { promptTokens: this.promptIds.length, completionTokens: this.generated.length, cachedTokens: this.cachedTokens };
  }
}
