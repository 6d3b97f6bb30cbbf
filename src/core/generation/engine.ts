// The generation loop: owns every running sequence and advances them one model step at a
// time (prefill the uncached prompt once, then one token per step from the cached keys and
// values). The KV cache manager admits each request, hands it any reusable prefix, and takes
// its cache back when it ends. Results leave through an event sink so the same engine runs
// in a worker or in-process.
import type { KvCacheManager, Lease } from '../kv/cache-manager.js';
import { BATCH_SIZE_BUCKETS, BucketHistogram, type BucketSnapshot, LATENCY_BUCKETS } from '../stats/buckets.js';
import type { TokenDecoder } from './detokenizer.js';
import type { DecoderModel } from './model.js';
import { type FinishReason, type GenerateRequest, Sequence, type Usage } from './sequence.js';

/** Why a request failed, for the HTTP layer to map onto a status. */
export type EngineErrorCode = 'kv_cache_full' | 'kv_budget_exceeded' | 'invalid_request' | 'internal';

export type EngineEvent =
  | { type: 'delta'; id: string; text: string }
  | {
      type: 'done';
      id: string;
      finishReason: FinishReason;
      text: string;
      usage: Usage;
      /** Time the request waited for admission (KV room) before it ran. */
      queueMs?: number;
      error?: string;
      errorCode?: EngineErrorCode;
    };

export interface EngineOptions {
  eosIds: readonly number[];
  contextLength: number;
  cache: KvCacheManager;
  /** How long a request may wait for KV room before it is refused. */
  admissionTimeoutMs: number;
}

interface Waiting {
  id: string;
  request: GenerateRequest;
  timer: NodeJS.Timeout;
  since: number;
}

interface Running {
  seq: Sequence;
  lease: Lease;
  queueMs: number;
}

export class Engine {
  readonly #model: DecoderModel;
  readonly #decoder: TokenDecoder;
  readonly #eos: ReadonlySet<number>;
  readonly #options: EngineOptions;
  readonly #sink: (event: EngineEvent) => void;
  readonly #running = new Map<string, Running>();
  /** Admitted in arrival order once KV room frees up. */
  readonly #waiting = new Map<string, Waiting>();
  #loop: Promise<void> | undefined;
  readonly #batchSizes = new BucketHistogram(BATCH_SIZE_BUCKETS);
  readonly #stepSeconds = new BucketHistogram(LATENCY_BUCKETS);

  constructor(model: DecoderModel, decoder: TokenDecoder, options: EngineOptions, sink: (e: EngineEvent) => void) {
    this.#model = model;
    this.#decoder = decoder;
    this.#eos = new Set(options.eosIds);
    this.#options = options;
    this.#sink = sink;
  }

  get running(): number {
    return this.#running.size;
  }

  get waiting(): number {
    return this.#waiting.size;
  }

  /** Batch size and duration of every step so far, for /metrics. */
  stepStats(): { batchSize: BucketSnapshot; durationSeconds: BucketSnapshot } {
    return { batchSize: this.#batchSizes.snapshot(), durationSeconds: this.#stepSeconds.snapshot() };
  }

  get cache(): KvCacheManager {
    return this.#options.cache;
  }

  submit(id: string, req: GenerateRequest): void {
    if (this.#running.has(id) || this.#waiting.has(id)) throw new Error(`duplicate request id ${id}`);
    const refuse = (errorCode: EngineErrorCode, error: string) =>
      this.#sink({ type: 'done', id, finishReason: 'error', text: '', usage: emptyUsage(req), error, errorCode });
    if (req.promptIds.length === 0) return refuse('invalid_request', 'promptIds must not be empty');
    if (req.promptIds.length >= this.#options.contextLength) {
      return refuse('invalid_request', `prompt of ${req.promptIds.length} tokens leaves no room in a context of ${this.#options.contextLength}`);
    }
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) return refuse('invalid_request', 'maxTokens must be a positive integer');
    const { cache } = this.#options;
    if (!cache.canEverFit(req.promptIds.length, req.maxTokens)) {
      return refuse(
        'kv_budget_exceeded',
        `the request needs up to ${cache.worstCaseBytes(req.promptIds.length, req.maxTokens)} bytes of KV cache; the budget is ${cache.maxBytes}`,
      );
    }
    if (this.#waiting.size > 0 || !this.#admit(id, req, 0)) {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        refuse('kv_cache_full', 'the KV cache is full of running requests; retry shortly');
        // The head of the queue is gone: those behind it may fit now.
        this.#admitWaiting();
      }, this.#options.admissionTimeoutMs);
      this.#waiting.set(id, { id, request: req, timer, since: performance.now() });
    }
  }

  /** Takes effect at the next step boundary: the sequence computes no further token. */
  abort(id: string): void {
    const waiting = this.#waiting.get(id);
    if (waiting) {
      clearTimeout(waiting.timer);
      this.#waiting.delete(id);
      this.#sink({ type: 'done', id, finishReason: 'abort', text: '', usage: emptyUsage(waiting.request) });
    }
    const running = this.#running.get(id);
    if (running) running.seq.aborted = true;
  }

  /** Resolves when no sequence is running. */
  async idle(): Promise<void> {
    while (this.#loop) await this.#loop;
  }

  #admit(id: string, req: GenerateRequest, queueMs: number): boolean {
    const lease = this.#options.cache.acquire({
      tenant: req.tenant ?? 'default',
      sessionId: req.sessionId,
      promptIds: req.promptIds,
      maxTokens: req.maxTokens,
    });
    if (!lease) return false;
    this.#running.set(id, { seq: new Sequence(id, req, lease.kv, this.#decoder), lease, queueMs });
    this.#loop ??= this.#run();
    return true;
  }

  /** Admits waiting requests, first come first served, while they fit. */
  #admitWaiting(): void {
    for (const w of this.#waiting.values()) {
      if (!this.#admit(w.id, w.request, performance.now() - w.since)) return;
      clearTimeout(w.timer);
      this.#waiting.delete(w.id);
    }
  }

  async #run(): Promise<void> {
    try {
      while (this.#running.size > 0) {
        for (const r of [...this.#running.values()]) {
          if (r.seq.aborted) {
            this.#finish(r, 'abort', '');
            continue;
          }
          try {
            const start = performance.now();
            await this.#step(r);
            this.#batchSizes.observe(1);
            this.#stepSeconds.observe((performance.now() - start) / 1000);
          } catch (err) {
            this.#finish(r, 'error', '', (err as Error).message);
          }
        }
      }
    } finally {
      // Cleared in the same tick as the emptiness check above, so a submit() can never
      // see a loop that is about to end and fail to start a new one.
      this.#loop = undefined;
    }
  }

  async #step(r: Running): Promise<void> {
    const { seq, lease } = r;
    const tokens = seq.pendingTokens();
    const past = seq.kv.length;
    const total = past + tokens.length;
    const out = await this.#model.forward({
      batch: 1,
      seqLen: tokens.length,
      pastLength: past,
      inputIds: tokens,
      positionIds: tokens.map((_, i) => past + i),
      past: seq.kv.tensors,
    });
    seq.kv.replace(out.present, total);
    this.#options.cache.grow(lease, seq.kv);
    const token = seq.sampler.sample(out.logits(0, tokens.length - 1));
    seq.generated.push(token);

    if (!seq.ignoreEos && this.#eos.has(token)) return this.#finish(r, 'stop', seq.flush());
    const { text, stopped } = seq.acceptText(token);
    if (stopped) return this.#finish(r, 'stop', text);
    // total + 1 is the sequence length once the token just sampled is counted.
    if (seq.generated.length >= seq.maxTokens || total + 1 >= this.#options.contextLength) {
      return this.#finish(r, 'length', text + seq.flush());
    }
    if (text) this.#sink({ type: 'delta', id: seq.id, text });
  }

  #finish({ seq, lease, queueMs }: Running, finishReason: FinishReason, text: string, error?: string): void {
    this.#running.delete(seq.id);
    // A failed step may have left the cache half-updated: keep nothing from it.
    this.#options.cache.release(lease, finishReason === 'error' ? undefined : { kv: seq.kv, tokens: seq.cachedSequence() });
    this.#sink({
      type: 'done',
      id: seq.id,
      finishReason,
      text,
      usage: seq.usage(),
      queueMs,
      ...(error ? { error, errorCode: 'internal' as const } : {}),
    });
    this.#admitWaiting();
  }
}

function emptyUsage(req: GenerateRequest): Usage {
  return { promptTokens: req.promptIds.length, completionTokens: 0, cachedTokens: 0 };
}
