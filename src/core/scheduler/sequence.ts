// One admitted request's state in the scheduler: its phase, prompt, sampler, detokenizer and
// stop matcher, its hold on the KV cache, and its own cache while the prompt is prefilled (then
// the decode batch holds it). The step loop advances it one model call at a time.
//
//   (queued: a request, not yet a sequence)
//        │ admitted
//        ▼
//   prefilling ──▶ offloaded ──▶ prefilling …   a prompt chunk at a time (inline or on the
//        │  │           │                       prefill thread)
//        │  └──────┬────┘ last chunk: first token sampled
//        │         ▼
//        │       ready ──▶ decoding            joins the decode batch before the next step
//        └──────────────▶ decoding            a one-chunk prompt prefilled in its batch row
//   any phase ──▶ finished                     stop, length, abort, timeout or failure
import type { Lease } from '../kv/cache-manager.js';
import type { KvCache } from '../kv/kv-cache.js';
import type { KvData } from '../kv/layout.js';
import { IncrementalDetokenizer, type TokenDecoder } from '../sampling/detokenizer.js';
import type { SamplingParams } from '../sampling/params.js';
import { Sampler } from '../sampling/sampler.js';
import { StopMatcher } from '../sampling/stop.js';

export type Phase = 'prefilling' | 'offloaded' | 'ready' | 'decoding' | 'finished';

const NEXT: Record<Phase, readonly Phase[]> = {
  prefilling: ['offloaded', 'ready', 'decoding', 'finished'],
  offloaded: ['prefilling', 'ready', 'finished'],
  ready: ['decoding', 'finished'],
  decoding: ['finished'],
  finished: [],
};

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
  /** The tenant's share of the KV budget (0–1]: past it, its cached entries are evicted first. */
  kvShare?: number;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens whose keys and values came from the cache instead of being computed. */
  cachedTokens: number;
}

export class Sequence {
  readonly id: string;
  #phase: Phase = 'prefilling';
  /** The sequence's hold on the KV cache, from admission to finish. */
  readonly lease: Lease;
  /** How long the request waited in the queue. */
  readonly queueMs: number;
  /** The last prefill chunk's keys and values, not yet in `kv` nor in the batch (phase ready). */
  tail: { kv: KvData[]; length: number } | undefined;
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

  /** The lease's cache holds the prompt's first tokens when a cache was reused, else nothing. */
  constructor(id: string, req: GenerateRequest, lease: Lease, queueMs: number, decoder: TokenDecoder) {
    const { kv } = lease;
    if (kv.length >= req.promptIds.length) throw new RangeError('a reused cache must leave at least one prompt token to feed');
    this.id = id;
    this.lease = lease;
    this.queueMs = queueMs;
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

  get phase(): Phase {
    return this.#phase;
  }

  /** Moves to `next`; a transition the diagram above does not have is a scheduler bug. */
  to(next: Phase): void {
    if (!NEXT[this.#phase].includes(next)) throw new Error(`sequence ${this.id}: ${this.#phase} → ${next} is not a transition`);
    this.#phase = next;
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
