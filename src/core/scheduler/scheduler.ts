// The scheduler's front: takes requests in, admits them, and ends each with exactly one `done`.
//
// Admission is first come, first served: a request runs when a batch slot (maxRunning) is free
// and the KV cache manager can reserve its worst-case cache; otherwise it queues, up to
// maxQueued, beyond which it is refused at once (queue_full). A request that waits for KV room
// longer than admissionTimeoutMs is refused (kv_cache_full), and any request still unfinished
// after requestTimeoutMs ends (request_timeout). Admitted requests become Sequences that the
// step loop (step-loop.ts) advances. Results leave through an event sink, so the same
// scheduler runs in the engine worker or in-process.
import type { KvCacheManager } from '../kv/cache-manager.js';
import type { DecoderModel, PrefillModel } from '../model.js';
import { Constraints, type GrammarCache } from '../sampling/constraints.js';
import type { TokenDecoder } from '../sampling/detokenizer.js';
import { validateSampling } from '../sampling/params.js';
import type { BucketSnapshot } from '../../metrics/buckets.js';
import type { DoneEvent, EngineErrorCode, EngineEvent, SchedulerLimits } from './events.js';
import { type GenerateRequest, Sequence, type Usage } from './sequence.js';
import { StepLoop } from './step-loop.js';

export interface SchedulerOptions {
  eosIds: readonly number[];
  contextLength: number;
  cache: KvCacheManager;
  /** How long a request may wait for KV room before it is refused. */
  admissionTimeoutMs: number;
  limits: SchedulerLimits;
  /** The same model on a thread of its own: prompt chunks run there while the batch decodes. */
  prefillModel?: PrefillModel | undefined;
  /** Response formats compiled for the model's vocabulary; without it, responseFormat is refused. */
  grammars?: GrammarCache | undefined;
}

/** A request of n > 1 choices while it runs: its `done` sums them once all have ended. */
interface Group {
  members: Sequence[];
  left: number;
  usage: Usage;
  queueMs: number;
  failure?: { error?: string | undefined; errorCode?: EngineErrorCode | undefined };
}

interface Waiting {
  id: string;
  request: GenerateRequest;
  since: number;
  /** Its reusable cache is being fetched from the tiers below RAM: not admissible yet. */
  fetching?: boolean;
  /** Started the first time the request could not get KV room. */
  kvTimer?: NodeJS.Timeout;
}

export class Scheduler {
  readonly #decoder: TokenDecoder;
  readonly #options: SchedulerOptions;
  readonly #limits: SchedulerLimits;
  readonly #sink: (event: EngineEvent) => void;
  readonly #loop: StepLoop;
  /** Admitted in arrival order as slots and KV room free up. */
  readonly #waiting = new Map<string, Waiting>();
  readonly #deadlines = new Map<string, NodeJS.Timeout>();
  readonly #groups = new Map<string, Group>();

  constructor(model: DecoderModel, decoder: TokenDecoder, options: SchedulerOptions, sink: (e: EngineEvent) => void) {
    const { limits } = options;
    if (!(limits.maxRunning >= 1 && limits.maxQueued >= 0 && limits.maxPrefillTokensPerStep >= 1 && limits.requestTimeoutMs > 0)) {
      throw new RangeError(`invalid scheduler limits ${JSON.stringify(limits)}`);
    }
    this.#decoder = decoder;
    this.#options = options;
    this.#limits = limits;
    this.#sink = sink;
    this.#loop = new StepLoop({
      model,
      prefillModel: options.prefillModel,
      cache: options.cache,
      eosIds: options.eosIds,
      contextLength: options.contextLength,
      maxPrefillTokensPerStep: limits.maxPrefillTokensPerStep,
      requestTimeoutMs: limits.requestTimeoutMs,
      emit: sink,
      finished: (seq, done) => {
        this.#choiceDone(seq, done);
        this.#admitWaiting();
      },
    });
  }

  get running(): number {
    return this.#loop.size;
  }

  get waiting(): number {
    return this.#waiting.size;
  }

  get cache(): KvCacheManager {
    return this.#options.cache;
  }

  /** Batch size and duration of every step so far, for /metrics. */
  stepStats(): { batchSize: BucketSnapshot; durationSeconds: BucketSnapshot } {
    return this.#loop.stepStats();
  }

  /** Takes a request in; it ends with exactly one `done` event (a refusal, too). */
  submit(id: string, req: GenerateRequest): void {
    if (this.#loop.get(id) || this.#waiting.has(id) || this.#deadlines.has(id)) {
      // Not #refuse: that would end the request already running under this id.
      this.#sink({ type: 'done', id, finishReason: 'error', text: '', usage: emptyUsage(req), error: `duplicate request id ${id}`, errorCode: 'internal' });
      return;
    }
    const problem = this.#check(req);
    if (problem) {
      this.#refuse(id, req, problem.code, problem.message);
      return;
    }
    const since = performance.now();
    const cacheRequest = { tenant: req.tenant ?? 'default', sessionId: req.sessionId, promptIds: req.promptIds };
    // Reads from the tiers below RAM happen before admission, never inside a step.
    const fromTiers = this.#options.cache.tierPlan(cacheRequest);
    if (fromTiers.length === 0 && this.#waiting.size === 0 && this.#admit(id, req, since) === 'admitted') {
      this.#setDeadline(id);
      return;
    }
    if (this.#waiting.size >= this.#limits.maxQueued) {
      this.#refuse(id, req, 'queue_full', `the server is at capacity: ${this.#loop.size} requests running and ${this.#waiting.size} queued; retry shortly`);
      return;
    }
    const w: Waiting = { id, request: req, since, fetching: fromTiers.length > 0 };
    this.#waiting.set(id, w);
    this.#setDeadline(id);
    if (w.fetching) {
      void this.#options.cache
        .fetchFromTiers(cacheRequest, fromTiers)
        .catch(() => {}) // a tier that fails is a miss: the request prefills instead
        .finally(() => {
          w.fetching = false;
          if (this.#waiting.get(id) === w) this.#admitWaiting();
        });
      return;
    }
    this.#admitWaiting();
  }

  /** Takes effect at the next step boundary: the sequence computes no further token. */
  abort(id: string): void {
    const waiting = this.#waiting.get(id);
    if (waiting) {
      this.#dequeue(waiting);
      this.#done(id, { finishReason: 'abort', text: '', usage: emptyUsage(waiting.request) });
    }
    for (const seq of this.#members(id)) seq.aborted = true;
  }

  /** The running sequences of request `id`: its choices. */
  #members(id: string): Sequence[] {
    const group = this.#groups.get(id);
    if (group) return group.members;
    const running = this.#loop.get(id);
    return running ? [running] : [];
  }

  /**
   * A sequence ended. A request's only choice ends the request; a choice of several is sent
   * as a delta with its finish reason, and the last one ends the request with the usage of all.
   */
  #choiceDone(seq: Sequence, done: Omit<DoneEvent, 'type' | 'id'>): void {
    const g = this.#groups.get(seq.requestId);
    if (!g) {
      this.#done(seq.id, done);
      return;
    }
    const { finishReason, text, usage, queueMs, error, errorCode, ...extras } = done;
    if (finishReason === 'error') g.failure ??= { error, errorCode };
    else this.#sink({ type: 'delta', id: seq.requestId, text, finishReason, ...extras });
    g.usage.completionTokens += usage.completionTokens;
    if (seq.index === 0) g.usage.cachedTokens = usage.cachedTokens;
    if (--g.left > 0) return;
    this.#groups.delete(seq.requestId);
    this.#done(seq.requestId, { finishReason: g.failure ? 'error' : finishReason, text: '', usage: g.usage, queueMs: g.queueMs, ...g.failure });
  }

  /** Ends every request: queued ones at once, running ones at the next step boundary. */
  abortAll(): void {
    for (const id of [...this.#waiting.keys(), ...this.#loop.ids()]) this.abort(id);
  }

  /** Resolves when no sequence is running. */
  idle(): Promise<void> {
    return this.#loop.idle();
  }

  /**
   * What the HTTP layer validated already, asserted again at the core's edge (in-process
   * callers, the CLI): a request the engine cannot run is refused, never run half-way.
   */
  #check(req: GenerateRequest): { code: EngineErrorCode; message: string } | undefined {
    const context = this.#options.contextLength;
    if (req.promptIds.length === 0) return { code: 'invalid_request', message: 'promptIds must not be empty' };
    if (req.promptIds.length >= context) {
      return { code: 'invalid_request', message: `prompt of ${req.promptIds.length} tokens leaves no room in a context of ${context}` };
    }
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 0) return { code: 'invalid_request', message: 'maxTokens must be an integer >= 0' };
    const n = req.n ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > this.#limits.maxRunning) {
      return { code: 'invalid_request', message: `n must be an integer from 1 to ${this.#limits.maxRunning} (the most sequences run at once)` };
    }
    for (const k of [req.logprobs, req.promptLogprobs]) {
      if (k !== undefined && !(Number.isInteger(k) && k >= 0 && k <= 20))
        return { code: 'invalid_request', message: 'logprobs must be an integer from 0 to 20' };
    }
    try {
      validateSampling(req.sampling);
      if (req.responseFormat) {
        if (!this.#options.grammars) throw new Error('response_format is not available for this model');
        this.#options.grammars.get(req.responseFormat);
      }
    } catch (err) {
      return { code: 'invalid_request', message: (err as Error).message };
    }
    const { cache } = this.#options;
    if (!cache.canEverFit(req.promptIds.length * n, req.maxTokens * n)) {
      const needs = cache.worstCaseBytes(req.promptIds.length * n, req.maxTokens * n);
      return { code: 'kv_budget_exceeded', message: `the request needs up to ${needs} bytes of KV cache; the budget is ${cache.maxBytes}` };
    }
    return undefined;
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
    for (const seq of this.#members(id)) seq.timedOut = true;
  }

  /** Every request ends here, exactly once: its single `done` event. */
  #done(id: string, event: Omit<DoneEvent, 'type' | 'id'>): void {
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
    const n = req.n ?? 1;
    if (this.#loop.size + n > this.#limits.maxRunning) return 'no_slot';
    const leases = this.#options.cache.acquireGroup(
      {
        tenant: req.tenant ?? 'default',
        sessionId: req.sessionId,
        promptIds: req.promptIds,
        maxTokens: req.maxTokens,
        noReuse: req.promptLogprobs !== undefined,
        kvShare: req.kvShare,
      },
      n,
    );
    if (!leases) return 'no_kv';
    const queueMs = performance.now() - since;
    const grammar = req.responseFormat ? this.#options.grammars?.get(req.responseFormat) : undefined;
    const members = leases.map((lease, i) => {
      // Seeded choices are reproducible and differ: choice i draws with seed + i.
      const seed = req.sampling.seed;
      const sampling = i > 0 && seed !== undefined ? { ...req.sampling, seed: (seed + i) % (Number.MAX_SAFE_INTEGER + 1) } : req.sampling;
      return new Sequence(i === 0 ? id : `${id}#${i}`, { ...req, sampling }, lease, queueMs, this.#decoder, {
        requestId: id,
        ...(n > 1 ? { index: i } : {}),
        constraints: Constraints.of(req.logitBias, grammar),
        forked: i > 0,
      });
    });
    members[0]!.forks.push(...members.slice(1));
    if (n > 1) this.#groups.set(id, { members, left: n, usage: { ...emptyUsage(req) }, queueMs });
    for (const seq of members) this.#loop.add(seq);
    this.#sink({ type: 'admitted', id });
    return 'admitted';
  }

  /** Admits waiting requests, first come first served, while slots and KV room allow. */
  #admitWaiting(): void {
    for (const w of this.#waiting.values()) {
      if (w.fetching) continue;
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
}

function emptyUsage(req: GenerateRequest): Usage {
  return { promptTokens: req.promptIds.length, completionTokens: 0, cachedTokens: 0 };
}
