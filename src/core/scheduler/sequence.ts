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
//   forked ──▶ ready                          choice i > 0 of an n-choice request: its first
//                                              token is sampled from choice 0's prompt logits
import type { Lease } from '../kv/cache-manager.js';
import { KvCache } from '../kv/kv-cache.js';
import type { KvData } from '../kv/layout.js';
import type { ForwardInput, ForwardOutput } from '../model.js';
import type { Constraints } from '../sampling/constraints.js';
import type { ResponseFormat } from '../sampling/grammar/index.js';
import { type TokenLogprob, tokenLogprob } from '../sampling/logprobs.js';
import { IncrementalDetokenizer, type TokenDecoder } from '../sampling/detokenizer.js';
import type { SamplingParams } from '../sampling/params.js';
import { Sampler } from '../sampling/sampler.js';
import { StopMatcher } from '../sampling/stop.js';

export type Phase = 'forked' | 'prefilling' | 'offloaded' | 'ready' | 'decoding' | 'finished';

const NEXT: Record<Phase, readonly Phase[]> = {
  forked: ['ready', 'finished'],
  prefilling: ['offloaded', 'ready', 'decoding', 'finished'],
  offloaded: ['prefilling', 'ready', 'finished'],
  ready: ['decoding', 'finished'],
  decoding: ['finished'],
  finished: [],
};

export interface GenerateRequest {
  promptIds: number[];
  /** 0: score the prompt only (with promptLogprobs), no token generated. */
  maxTokens: number;
  /** Choices sampled from one prefill: the prompt's cache is computed once and copied into n batch rows. */
  n?: number;
  /** Set: every generated token's log-probability and its this many (0–20) most likely alternatives. */
  logprobs?: number;
  /**
   * Set: every prompt token's log-probability after the first, with this many alternatives. The
   * prompt is then computed in full, never taken from the cache (the cache keeps keys and
   * values, not logits).
   */
  promptLogprobs?: number;
  /** [token id, bias added to its logit] (OpenAI's logit_bias). */
  logitBias?: [number, number][];
  /** Structured output: the grammar masks every step (OpenAI's response_format). */
  responseFormat?: ResponseFormat;
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

/** What a sequence adds to its next event: the logprobs gathered since its last one. */
export interface EventExtras {
  index?: number;
  logprobs?: TokenLogprob[];
  promptLogprobs?: TokenLogprob[];
}

export interface SequenceOptions {
  /** The request's id (a choice i > 0 runs under `${requestId}#${i}`). */
  requestId?: string;
  /** Its choice index, when the request has several. */
  index?: number;
  constraints?: Constraints | undefined;
  /** Starts waiting for choice 0's prompt (phase forked). */
  forked?: boolean;
}

export class Sequence {
  readonly id: string;
  readonly requestId: string;
  readonly index: number | undefined;
  #phase: Phase;
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
  /** Choices i > 0 waiting for this one's prompt (phase forked). */
  readonly forks: Sequence[] = [];
  readonly #constraints: Constraints | undefined;
  readonly #topLogprobs: number | undefined;
  readonly promptTop: number | undefined;
  #logprobs: TokenLogprob[] = [];
  /** The prompt's scores so far; handed to the first event, and to the forks. */
  promptScores: TokenLogprob[] | undefined;

  /** The lease's cache holds the prompt's first tokens when a cache was reused, else nothing. */
  constructor(id: string, req: GenerateRequest, lease: Lease, queueMs: number, decoder: TokenDecoder, opts: SequenceOptions = {}) {
    const { kv } = lease;
    if (kv.length >= req.promptIds.length) throw new RangeError('a reused cache must leave at least one prompt token to feed');
    this.id = id;
    this.requestId = opts.requestId ?? id;
    this.index = opts.index;
    this.#phase = opts.forked ? 'forked' : 'prefilling';
    this.#constraints = opts.constraints;
    this.#topLogprobs = req.logprobs;
    this.promptTop = req.promptLogprobs;
    if (req.promptLogprobs !== undefined) this.promptScores = [];
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

  /** The call computing the next `n` prompt tokens over the sequence's own cache. */
  chunkInput(n: number): ForwardInput {
    const kv = this.kv!;
    const past = kv.length;
    return {
      batch: 1,
      seqLen: n,
      pastLength: past,
      inputIds: this.promptIds.slice(past, past + n),
      positionIds: Array.from({ length: n }, (_, i) => past + i),
      past: kv.tensors,
      // Scoring the prompt needs every position's logits; nothing else does.
      lastLogitsOnly: this.promptScores === undefined,
    };
  }

  /** Every token whose keys and values the cache holds. */
  cachedSequence(): number[] {
    return [...this.promptIds, ...this.generated].slice(0, this.length);
  }

  /**
   * A choice i > 0 starts from choice 0's prompt: its keys and values (`kv` and `tail`, only
   * read: they are copied into the batch row at join), its length and its prompt scores. The
   * prompt is computed once for all n choices.
   */
  forkFrom(leader: Sequence, kv: KvCache, tail: { kv: KvData[]; length: number } | undefined): void {
    // Its own KvCache object over the shared tensors: finishing appends to a cache in place.
    this.kv = KvCache.of(kv.layout, [...kv.tensors], kv.length);
    this.tail = tail;
    this.length = leader.length;
    this.promptScores = leader.promptScores;
    this.to('ready');
  }

  /**
   * Samples and takes the next token: the text it adds, and why the sequence ends if it does
   * (`end`). Throws when the row allows no token.
   */
  advance(logits: Float32Array, eos: ReadonlySet<number>, contextLength: number): { text: string; end?: 'stop' | 'length' } {
    if (this.maxTokens === 0) return { text: '', end: 'length' };
    const token = this.#choose(logits, Math.min(this.maxTokens - this.generated.length, contextLength - this.length));
    this.generated.push(token);
    if (!this.ignoreEos && eos.has(token)) return { text: this.flush(), end: 'stop' };
    const { text, stopped } = this.acceptText(token);
    if (stopped) return { text, end: 'stop' };
    // A finished JSON document ends the output (EOS is all its grammar would allow next).
    if (this.#constraints?.complete) return { text: text + this.flush(), end: 'stop' };
    // length + 1 is the sequence length once the token just sampled is counted.
    if (this.generated.length >= this.maxTokens || this.length + 1 >= contextLength) return { text: text + this.flush(), end: 'length' };
    return { text };
  }

  /** The next token from `logits` (the model's row, left as it is): constrained, sampled, scored. */
  #choose(logits: Float32Array, tokensLeft: number): number {
    const c = this.#constraints;
    const token = this.sampler.sample(c ? c.apply(logits, tokensLeft) : logits);
    if (this.#topLogprobs !== undefined) this.#logprobs.push(tokenLogprob(logits, token, this.#topLogprobs));
    c?.accept(token);
    return token;
  }

  /** Scores the prompt tokens a chunk's logits predict: position past + s predicts token past + s + 1. */
  scorePrompt(out: ForwardOutput, past: number, n: number): void {
    const scores = this.promptScores;
    if (!scores) return;
    for (let s = 0; s < n && past + s + 1 < this.promptIds.length; s++) {
      scores.push(tokenLogprob(out.logits(0, s), this.promptIds[past + s + 1]!, this.promptTop!));
    }
  }

  /** The logprobs gathered since the last event, for the next one (and the choice index). */
  drain(): EventExtras {
    const out: EventExtras = {};
    if (this.index !== undefined) out.index = this.index;
    if (this.#logprobs.length > 0) {
      out.logprobs = this.#logprobs;
      this.#logprobs = [];
    }
    if (this.promptScores && this.promptScores.length + 1 >= this.promptIds.length) {
      out.promptLogprobs = this.promptScores;
      this.promptScores = undefined;
    }
    return out;
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
