// The scheduler: continuous batching over the running sequences.
//
// Each iteration (a "step") first prefills newcomers' prompts, in chunks of at most
// maxPrefillTokensPerStep tokens in total, then advances every decoding sequence by one token
// in ONE batched model call. A sequence whose prompt is done joins the batch at that same
// step; a finished or aborted one leaves at once and frees its slot for the queue. With a
// prefill model (a second copy of the model on a thread of its own, src/engine/
// prefill-thread.ts), chunks run there while the batch decodes instead: see #offload.
//
// Prefill runs as its own model call, chunked, rather than mixed into the decode call (a
// prompt that fits one chunk runs in its batch row: see #prefillInBatch).
// Measured on 2 cores (2026-11-29, shipped model, 1,040-token prompt): in one call 112 ms, in
// chunks of 256 / 128 / 64 / 32 tokens 78 / 80 / 87 / 104 ms (smaller attention blocks win
// until per-call overhead takes over), while a decode step of 16 sequences costs ~2–3 ms. A
// whole prompt in one call would freeze every running stream for its full prefill; a chunk of
// 64 delays them by ~3 ms per step. With 16 streaming clients (bench:concurrency), 64-token
// steps kept p99 inter-token latency at ~17 ms against ~23 ms with 256, at the same tokens/s
// within noise, and gave newcomers their first token sooner (29 vs 51 ms p50): hence the
// default of 64. A mixed call would need per-row sequence lengths, which the decoder graph
// does not take. The chunks are cut at fixed offsets of each prompt, so a request computes
// the same numbers whoever runs beside it, inline or on the prefill thread (tested).
//
// Admission: first come, first served. A request runs when a batch slot (maxRunning) is free
// and the KV cache manager can reserve its worst-case cache; otherwise it queues, up to
// maxQueued, beyond which it is refused at once (queue_full → 429). A request that waits for
// KV room longer than admissionTimeoutMs is refused (kv_cache_full → 503), and any request
// still unfinished after requestTimeoutMs ends (request_timeout). Results leave through an
// event sink so the same engine runs in a worker or in-process.
import type { KvCacheManager, Lease } from '../kv/cache-manager.js';
import { KvCache } from '../kv/kv-cache.js';
import type { KvData } from '../kv/layout.js';
import { BATCH_SIZE_BUCKETS, BucketHistogram, type BucketSnapshot, LATENCY_BUCKETS } from '../stats/buckets.js';
import { DecodeBatch } from './batch.js';
import type { TokenDecoder } from './detokenizer.js';
import type { DecoderModel, ForwardInput, ForwardOutput, PrefillModel } from './model.js';
import { type FinishReason, type GenerateRequest, Sequence, type Usage } from './sequence.js';

/** Resolves after one turn of the event loop: what arrived meanwhile (messages, I/O) is handled. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Why a request failed, for the HTTP layer to map onto a status. */
export type EngineErrorCode = 'kv_cache_full' | 'kv_budget_exceeded' | 'invalid_request' | 'queue_full' | 'request_timeout' | 'internal';

export type EngineEvent =
  | { type: 'delta'; id: string; text: string }
  | {
      type: 'done';
      id: string;
      finishReason: FinishReason;
      text: string;
      usage: Usage;
      /** Time the request waited in the queue before it ran. */
      queueMs?: number;
      error?: string;
      errorCode?: EngineErrorCode;
    };

export interface SchedulerLimits {
  /** Sequences running at once: the largest decode batch. */
  maxRunning: number;
  /** Requests waiting for a slot or KV room; one more is refused at once. */
  maxQueued: number;
  /** Prompt tokens prefilled per step, over all newcomers (also the chunk size). */
  maxPrefillTokensPerStep: number;
  /** A request still unfinished this long after it arrived ends with request_timeout. */
  requestTimeoutMs: number;
}

export interface EngineOptions {
  eosIds: readonly number[];
  contextLength: number;
  cache: KvCacheManager;
  /** How long a request may wait for KV room before it is refused. */
  admissionTimeoutMs: number;
  limits: SchedulerLimits;
  /**
   * The same model on a thread of its own. While the batch decodes, newcomers' prompt chunks
   * run there instead of between the decode steps (see #offload).
   */
  prefillModel?: PrefillModel | undefined;
}

interface Waiting {
  id: string;
  request: GenerateRequest;
  since: number;
  /** Started the first time the request could not get KV room. */
  kvTimer?: NodeJS.Timeout;
}

interface Running {
  seq: Sequence;
  lease: Lease;
  queueMs: number;
  /** In the decode batch (else still prefilling its prompt). */
  decoding: boolean;
  /** The last prefill chunk's keys and values, not yet in `seq.kv` nor in the batch. */
  tail?: { kv: KvData[]; length: number } | undefined;
  /** A prompt chunk of this sequence is being computed on the prefill thread. */
  offloaded?: boolean;
}

export class Engine {
  readonly #model: DecoderModel;
  readonly #decoder: TokenDecoder;
  readonly #eos: ReadonlySet<number>;
  readonly #options: EngineOptions;
  readonly #limits: SchedulerLimits;
  readonly #sink: (event: EngineEvent) => void;
  readonly #running = new Map<string, Running>();
  /** Running sequences still prefilling, in arrival order. */
  readonly #prefilling: Running[] = [];
  /** Prefilled sequences (first token out) joining the batch before the next step. */
  readonly #ready: Running[] = [];
  readonly #batch: DecodeBatch<Running>;
  /** An empty past [1, kv_heads, 0, head_dim] per tensor. */
  readonly #noPast: readonly KvData[];
  /** Admitted in arrival order as slots and KV room free up. */
  readonly #waiting = new Map<string, Waiting>();
  readonly #deadlines = new Map<string, NodeJS.Timeout>();
  #loop: Promise<void> | undefined;
  /** The chunk running on the prefill thread (one at a time), settled once it is taken in. */
  #offloading: Promise<void> | undefined;
  readonly #batchSizes = new BucketHistogram(BATCH_SIZE_BUCKETS);
  readonly #stepSeconds = new BucketHistogram(LATENCY_BUCKETS);

  constructor(model: DecoderModel, decoder: TokenDecoder, options: EngineOptions, sink: (e: EngineEvent) => void) {
    const { limits } = options;
    if (!(limits.maxRunning >= 1 && limits.maxQueued >= 0 && limits.maxPrefillTokensPerStep >= 1 && limits.requestTimeoutMs > 0)) {
      throw new RangeError(`invalid scheduler limits ${JSON.stringify(limits)}`);
    }
    this.#model = model;
    this.#decoder = decoder;
    this.#eos = new Set(options.eosIds);
    this.#options = options;
    this.#limits = limits;
    this.#sink = sink;
    this.#batch = new DecodeBatch(model.layout);
    this.#noPast = KvCache.empty(model.layout).tensors;
  }

  get running(): number {
    return this.#running.size;
  }

  get waiting(): number {
    return this.#waiting.size;
  }

  get cache(): KvCacheManager {
    return this.#options.cache;
  }

  /** Batch size and duration of every step so far, for /metrics. */
  stepStats(): { batchSize: BucketSnapshot; durationSeconds: BucketSnapshot } {
    return { batchSize: this.#batchSizes.snapshot(), durationSeconds: this.#stepSeconds.snapshot() };
  }

  submit(id: string, req: GenerateRequest): void {
    if (this.#running.has(id) || this.#waiting.has(id) || this.#deadlines.has(id)) throw new Error(`duplicate request id ${id}`);
    const refuse = (errorCode: EngineErrorCode, error: string) => this.#refuse(id, req, errorCode, error);
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
    const since = performance.now();
    if (this.#waiting.size === 0 && this.#admit(id, req, since) === 'admitted') return this.#setDeadline(id);
    if (this.#waiting.size >= this.#limits.maxQueued) {
      return refuse('queue_full', `the server is at capacity: ${this.#running.size} requests running and ${this.#waiting.size} queued; retry shortly`);
    }
    this.#waiting.set(id, { id, request: req, since });
    this.#setDeadline(id);
    this.#admitWaiting();
  }

  /** Takes effect at the next step boundary: the sequence computes no further token. */
  abort(id: string): void {
    const waiting = this.#waiting.get(id);
    if (waiting) {
      this.#dequeue(waiting);
      this.#done(id, { finishReason: 'abort', text: '', usage: emptyUsage(waiting.request) });
    }
    const running = this.#running.get(id);
    if (running) running.seq.aborted = true;
  }

  /** Ends every request: queued ones at once, running ones at the next step boundary. */
  abortAll(): void {
    for (const id of [...this.#waiting.keys(), ...this.#running.keys()]) this.abort(id);
  }

  /** Resolves when no sequence is running. */
  async idle(): Promise<void> {
    while (this.#loop) await this.#loop;
  }

  #setDeadline(id: string): void {
    const timer = setTimeout(() => this.#timeout(id), this.#limits.requestTimeoutMs);
    timer.unref?.();
    this.#deadlines.set(id, timer);
  }

  #timeout(id: string): void {
    const waiting = this.#waiting.get(id);
    if (waiting) {
      this.#dequeue(waiting);
      this.#refuse(id, waiting.request, 'request_timeout', `the request waited ${this.#limits.requestTimeoutMs} ms in the queue without starting`);
    }
    const running = this.#running.get(id);
    if (running) running.seq.timedOut = true;
  }

  /** Every request ends here, exactly once: its single `done` event. */
  #done(id: string, event: Omit<Extract<EngineEvent, { type: 'done' }>, 'type' | 'id'>): void {
    clearTimeout(this.#deadlines.get(id));
    this.#deadlines.delete(id);
    this.#sink({ type: 'done', id, ...event });
  }

  #refuse(id: string, req: GenerateRequest, errorCode: EngineErrorCode, error: string): void {
    this.#done(id, { finishReason: 'error', text: '', usage: emptyUsage(req), error, errorCode });
  }

  #dequeue(w: Waiting): void {
    clearTimeout(w.kvTimer);
    this.#waiting.delete(w.id);
  }

  #admit(id: string, req: GenerateRequest, since: number): 'admitted' | 'no_slot' | 'no_kv' {
    if (this.#running.size >= this.#limits.maxRunning) return 'no_slot';
    const lease = this.#options.cache.acquire({
      tenant: req.tenant ?? 'default',
      sessionId: req.sessionId,
      promptIds: req.promptIds,
      maxTokens: req.maxTokens,
    });
    if (!lease) return 'no_kv';
    const r: Running = { seq: new Sequence(id, req, lease.kv, this.#decoder), lease, queueMs: performance.now() - since, decoding: false };
    this.#running.set(id, r);
    this.#prefilling.push(r);
    this.#loop ??= this.#run();
    return 'admitted';
  }

  /** Admits waiting requests, first come first served, while slots and KV room allow. */
  #admitWaiting(): void {
    for (const w of this.#waiting.values()) {
      const result = this.#admit(w.id, w.request, w.since);
      if (result === 'admitted') {
        this.#dequeue(w);
        continue;
      }
      if (result === 'no_kv' && !w.kvTimer) {
        w.kvTimer = setTimeout(() => {
          // Room may have freed without a finish to notice it (a session expired).
          this.#admitWaiting();
          if (!this.#waiting.has(w.id)) return;
          this.#dequeue(w);
          this.#refuse(w.id, w.request, 'kv_cache_full', 'the KV cache is full of running requests; retry shortly');
          // The head of the queue is gone: those behind it may fit now.
          this.#admitWaiting();
        }, this.#options.admissionTimeoutMs);
      }
      return;
    }
  }

  async #run(): Promise<void> {
    try {
      // An offloaded chunk keeps the loop alive: its result is taken in here, never after.
      while (this.#running.size > 0 || this.#offloading) {
        // One turn of the event loop before the step is laid out takes in what came during
        // the last model call: a prefill chunk's result (its sequence then decodes in this
        // step, not the next: its second token came two steps after its first, 6.8 ms at
        // p50 with 16 clients), a newcomer (its prefill starts a step sooner: TTFT p50 at 16
        // clients 25-26 vs 29-30 ms, 3 alternated rounds), an abort. It costs a few µs.
        await nextTurn();
        const start = performance.now();
        for (const r of [...this.#running.values()]) {
          if (r.seq.aborted) this.#finish(r, 'abort', '');
          else if (r.seq.timedOut) this.#fail(r, 'request_timeout', `the request ran past ${this.#limits.requestTimeoutMs} ms`);
        }
        await this.#prefillStep();
        if (this.#ready.length > 0) {
          // Newcomers' first tokens leave before they join the batch (a join copies the whole
          // prompt cache): one turn of the event loop lets the sink deliver them.
          await nextTurn();
          for (const r of this.#ready.splice(0)) this.#join(r);
        }
        if (this.#batch.size > 0) {
          await this.#decodeStep();
        } else if (this.#offloading) {
          // Nothing to decode: wait for the prefill thread (a wait, not a step).
          await this.#offloading;
          continue;
        }
        this.#stepSeconds.observe((performance.now() - start) / 1000);
      }
    } finally {
      // Cleared in the same tick as the emptiness check above, so a submit() can never
      // see a loop that is about to end and fail to start a new one.
      this.#loop = undefined;
    }
  }

  /**
   * Prefill chunks, first come first served, up to the step's token budget. While the batch
   * decodes and a prefill thread exists, chunks go there instead, one at a time, except a
   * cached prefix's one-chunk suffix (it reads the batch row, and is short).
   */
  async #prefillStep(): Promise<void> {
    let budget = this.#limits.maxPrefillTokensPerStep;
    const thread = this.#options.prefillModel;
    for (const r of [...this.#prefilling]) {
      if (r.offloaded) continue;
      const { seq } = r;
      const chunk = Math.min(seq.promptLeft, this.#limits.maxPrefillTokensPerStep);
      // A prompt whose uncached part is one chunk is prefilled in its batch row.
      const inBatch = chunk === seq.promptLeft && seq.length === seq.cachedTokens;
      if (thread?.alive && this.#batch.size > 0 && !(inBatch && seq.cachedTokens > 0)) {
        if (!this.#offloading) this.#offload(thread, r, chunk);
        continue;
      }
      if (chunk > budget) return;
      budget -= chunk;
      try {
        if (inBatch) await this.#prefillInBatch(r, chunk);
        else await this.#prefillChunk(r, chunk);
      } catch (err) {
        this.#fail(r, 'internal', (err as Error).message);
      }
    }
  }

  /**
   * Runs one prompt chunk on the prefill thread while the decode steps go on; the result is
   * taken in between two steps, as an inline chunk's would be. Decode steps meanwhile run on
   * one thread, leaving the prefill thread a core. Measured on 2 cores (2026-11-29, 16-row
   * steps over 224 slots, a 64-token chunk every 8 steps): inline, steps took 2.2 ms and 7 ms
   * with a chunk (p99 7.3 ms), 5,500-5,650 tokens/s; beside them, 2.7 ms with p99 3.3-3.6
   * ms, 5,980-6,000 tokens/s. With nothing decoding, prompts are prefilled inline on all
   * cores: that is the fastest first token for a lone request.
   */
  #offload(thread: PrefillModel, r: Running, n: number): void {
    const input = this.#chunkInput(r, n);
    r.offloaded = true;
    // The sequence may have ended (aborted, timed out) while its chunk ran: then nothing is kept.
    const current = (): boolean => this.#running.get(r.seq.id) === r;
    // One handler for the call failing and for taking its result in failing.
    this.#offloading = thread
      .forward(input)
      .then((out) => current() && this.#chunkDone(r, n, input.pastLength, out))
      .catch((err: Error) => current() && this.#fail(r, 'internal', err.message))
      .finally(() => {
        r.offloaded = false;
        this.#offloading = undefined;
      })
      .then(() => undefined);
  }

  /**
   * The whole uncached prompt in one call, computed in the sequence's own batch row: its
   * cached prefix is copied there first (into the batch's warm buffers), the call reads the
   * row as its past (unused slots masked; no past at all when nothing is cached) and the new
   * keys and values are written after it.
   * Nothing is copied again when it starts decoding, so its first token is out at once.
   * (Whether a prompt takes this path depends on it alone, not on its neighbours: the same
   * request computes the same numbers in any batch — tested.)
   */
  async #prefillInBatch(r: Running, n: number): Promise<void> {
    const { seq } = r;
    const cached = seq.length;
    this.#prefilling.splice(this.#prefilling.indexOf(r), 1);
    this.#batch.add(r, seq.kv!, undefined, n);
    seq.kv = undefined;
    r.decoding = true;
    // With nothing cached the call reads no past at all: attending over the row's empty slots
    // cost a 64-token chunk 3.8 instead of 3.1 ms at 256 slots (2026-11-29).
    const out = await this.#model.forward({
      batch: 1,
      seqLen: n,
      pastLength: cached === 0 ? 0 : this.#batch.slots,
      inputIds: seq.promptIds.slice(cached, cached + n),
      positionIds: Array.from({ length: n }, (_, i) => cached + i),
      ...(cached === 0 ? { past: this.#noPast } : { pastValid: [cached], past: this.#batch.rowPast(r) }),
    });
    this.#batch.write(r, out.newKv, n);
    seq.length = cached + n;
    this.#options.cache.grow(r.lease, seq.length);
    this.#accept(r, out.logits(0, n - 1));
  }

  async #prefillChunk(r: Running, n: number): Promise<void> {
    const input = this.#chunkInput(r, n);
    this.#chunkDone(r, n, input.pastLength, await this.#model.forward(input));
  }

  /** The call computing the next `n` prompt tokens over the sequence's own cache. */
  #chunkInput(r: Running, n: number): ForwardInput {
    const { seq } = r;
    const kv = seq.kv!;
    const past = kv.length;
    return {
      batch: 1,
      seqLen: n,
      pastLength: past,
      inputIds: seq.promptIds.slice(past, past + n),
      positionIds: Array.from({ length: n }, (_, i) => past + i),
      past: kv.tensors,
      lastLogitsOnly: true,
    };
  }

  /** Takes in a chunk computed over the sequence's own cache (`past` tokens long). */
  #chunkDone(r: Running, n: number, past: number, out: ForwardOutput): void {
    const { seq } = r;
    const kv = seq.kv!;
    seq.length = past + n;
    this.#options.cache.grow(r.lease, seq.length);
    if (seq.promptLeft > 0) {
      kv.append(out.newKv, n);
      return;
    }
    this.#prefilling.splice(this.#prefilling.indexOf(r), 1);
    // The prompt's last chunk goes straight into the batch row (one copy, not two); a
    // sequence that ends here keeps its cache as one piece for the pool.
    r.tail = { kv: out.newKv, length: n };
    if (this.#accept(r, out.logits(0, n - 1))) this.#ready.push(r);
  }

  /** A prefilled sequence enters the decode batch. */
  #join(r: Running): void {
    this.#batch.add(r, r.seq.kv!, r.tail);
    r.tail = undefined;
    r.seq.kv = undefined;
    r.decoding = true;
  }

  /** One token for every sequence in the batch, in one model call. */
  async #decodeStep(): Promise<void> {
    const batch = this.#batch;
    const rows = [...batch.items];
    const lengths = [...batch.lengths];
    let out;
    try {
      out = await this.#model.forward({
        batch: rows.length,
        seqLen: 1,
        pastLength: batch.slots,
        inputIds: rows.map((r) => r.seq.lastToken),
        positionIds: lengths,
        pastValid: lengths,
        past: batch.past(),
        singleThread: this.#offloading !== undefined,
      });
    } catch (err) {
      for (const r of rows) this.#fail(r, 'internal', (err as Error).message);
      return;
    }
    // Rows cannot change during the call: only this loop adds or removes them.
    batch.append(out.newKv);
    this.#batchSizes.observe(rows.length);
    for (const [b, r] of rows.entries()) {
      r.seq.length = lengths[b]! + 1;
      this.#options.cache.grow(r.lease, r.seq.length);
      this.#accept(r, out.logits(b, 0));
    }
  }

  /**
   * Samples the sequence's next token from `logits` and takes it: emits its text, or finishes
   * the sequence. Returns whether it goes on. A row the sampler cannot draw from (a model that
   * emitted only NaN or -Infinity) fails this request alone, not the step or the loop.
   */
  #accept(r: Running, logits: Float32Array): boolean {
    let token: number;
    try {
      token = r.seq.sampler.sample(logits);
    } catch (err) {
      this.#fail(r, 'internal', `sampling failed: ${(err as Error).message}`);
      return false;
    }
    const { seq } = r;
    seq.generated.push(token);
    if (!seq.ignoreEos && this.#eos.has(token)) return this.#finish(r, 'stop', seq.flush());
    const { text, stopped } = seq.acceptText(token);
    if (stopped) return this.#finish(r, 'stop', text);
    // length + 1 is the sequence length once the token just sampled is counted.
    if (seq.generated.length >= seq.maxTokens || seq.length + 1 >= this.#options.contextLength) {
      return this.#finish(r, 'length', text + seq.flush());
    }
    if (text) this.#sink({ type: 'delta', id: seq.id, text });
    return true;
  }

  #fail(r: Running, errorCode: EngineErrorCode, error: string): void {
    this.#finish(r, 'error', '', { error, errorCode });
  }

  /** Ends a running sequence: its cache goes back to the pool, its slot to the queue. Returns false. */
  #finish(r: Running, finishReason: FinishReason, text: string, failure?: { error: string; errorCode: EngineErrorCode }): false {
    const { seq, lease, queueMs } = r;
    if (!this.#running.delete(seq.id)) return false;
    let kv: KvCache | undefined;
    if (r.decoding) {
      // Read in place: the pool copies what it keeps, then the row goes.
      kv = this.#batch.view(r);
    } else {
      kv = seq.kv;
      if (kv && r.tail) kv.append(r.tail.kv, r.tail.length);
      for (const list of [this.#prefilling, this.#ready]) {
        const i = list.indexOf(r);
        if (i >= 0) list.splice(i, 1);
      }
    }
    // A failed step may have left the cache half-updated: keep nothing from it.
    const keep = finishReason === 'error' && failure?.errorCode === 'internal' ? undefined : kv;
    this.#options.cache.release(lease, keep ? { kv: keep, tokens: seq.cachedSequence() } : undefined);
    if (r.decoding) this.#batch.remove(r);
    this.#done(seq.id, { finishReason, text, usage: seq.usage(), queueMs, ...failure });
    this.#admitWaiting();
    return false;
  }
}

function emptyUsage(req: GenerateRequest): Usage {
  return { promptTokens: req.promptIds.length, completionTokens: 0, cachedTokens: 0 };
}
