// Every metric kvserve exports, defined once: name, help, labels, buckets. Names are an
// interface (dashboards depend on them): prefix kvserve_, units in names, counters end in
// _total. Each app instance has its own Registry, so two in one process never collide.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CacheSnapshot } from '../core/kv/cache-manager.js';
import type { FinishReason } from '../core/generation/sequence.js';
import type { EngineErrorCode } from '../core/generation/engine.js';
import { BATCH_SIZE_BUCKETS, type BucketSnapshot, LATENCY_BUCKETS, newObservations } from '../core/stats/buckets.js';

/** Why the engine refuses a request before it runs (kvserve_requests_rejected_total{reason}). */
export const REJECT_REASONS = [
  'queue_full',
  'kv_cache_full',
  'kv_budget_exceeded',
  'invalid_request',
  'request_timeout',
] as const satisfies readonly EngineErrorCode[];

export interface EngineStats {
  cache: CacheSnapshot;
  running: number;
  waiting: number;
  /** Per model step, cumulative since the worker started. */
  steps: { batchSize: BucketSnapshot; durationSeconds: BucketSnapshot };
}

export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'status'>;
  readonly requestsRunning: Gauge;
  readonly requestsQueued: Gauge;
  readonly aborted: Counter;
  readonly finished: Counter<'reason'>;
  readonly rejected: Counter<'reason'>;
  readonly timeToFirstToken: Histogram;
  readonly interTokenLatency: Histogram;
  readonly requestDuration: Histogram;
  readonly queueTime: Histogram;
  readonly promptTokens: Counter;
  readonly generatedTokens: Counter;
  readonly batchSize: Histogram;
  readonly stepDuration: Histogram;

  readonly #cacheLookups: Counter<'result'>;
  readonly #cacheReused: Counter;
  readonly #cacheComputed: Counter;
  readonly #cacheBytes: Gauge;
  readonly #cacheCapacity: Gauge;
  readonly #cacheEntries: Gauge<'kind'>;
  readonly #cachePinned: Gauge;
  readonly #evictions: Counter<'reason'>;
  readonly #evictedBytes: Counter<'reason'>;
  /** The engine's counters are cumulative; the last values seen turn them into increments. */
  #last: EngineStats | undefined;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'kvserve_' });
    // prom-client names these gauges *_total, which Prometheus reserves for counters
    // (promtool check metrics rejects them); the event-loop and memory metrics remain.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      this.registry.removeSingleMetric(`kvserve_${name}`);
    }
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Counter<L>({ name, help, labelNames, registers });
    const gauge = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Gauge<L>({ name, help, labelNames, registers });
    const histogram = (name: string, help: string, buckets = LATENCY_BUCKETS) => new Histogram({ name, help, buckets, registers });

    this.#cacheLookups = counter(
      'kvserve_kv_cache_lookups_total',
      'KV cache lookups at admission, by result: hit (whole reusable prompt cached), partial, miss.',
      ['result'],
    );
    this.#cacheReused = counter('kvserve_kv_cache_reused_tokens_total', 'Prompt tokens whose keys and values came from the cache.');
    this.#cacheComputed = counter('kvserve_kv_cache_computed_tokens_total', 'Prompt tokens prefilled (computed by the model).');
    this.#cacheBytes = gauge('kvserve_kv_cache_bytes', 'Bytes of K/V tensors held by the KV pool (running, session and prefix caches).');
    this.#cacheCapacity = gauge('kvserve_kv_cache_capacity_bytes', 'Byte budget of the KV pool.');
    this.#cacheEntries = gauge('kvserve_kv_cache_entries', 'Entries in the KV pool by kind: session, prefix (blocks), active (running requests).', ['kind']);
    this.#cachePinned = gauge('kvserve_kv_cache_pinned_entries', 'KV pool entries in use by running requests (never evicted).');
    this.#evictions = counter(
      'kvserve_kv_cache_evictions_total',
      'KV pool entries evicted, by reason: lru (budget), ttl (idle session), deleted (by a user).',
      ['reason'],
    );
    this.#evictedBytes = counter('kvserve_kv_cache_evicted_bytes_total', 'Bytes freed by KV pool evictions, by reason.', ['reason']);

    this.requests = counter('kvserve_requests_total', 'HTTP requests by route and status code.', ['route', 'status']);
    this.requestsRunning = gauge('kvserve_requests_running', 'Generations running in the engine.');
    this.requestsQueued = gauge('kvserve_requests_queued', 'Generations waiting for admission.');
    this.aborted = counter('kvserve_requests_aborted_total', 'Generations aborted (client gone or shutdown).');
    this.finished = counter('kvserve_request_finish_total', 'Generations finished, by finish reason.', ['reason']);
    this.rejected = counter('kvserve_requests_rejected_total', 'Generations refused before running, by reason.', ['reason']);
    this.timeToFirstToken = histogram('kvserve_time_to_first_token_seconds', 'From request arrival to the first generated text.');
    this.interTokenLatency = histogram('kvserve_inter_token_latency_seconds', 'Between successive streamed text deltas of one request.');
    this.requestDuration = histogram('kvserve_request_duration_seconds', 'From request arrival to the end of the response, generation requests only.');
    this.queueTime = histogram('kvserve_queue_time_seconds', 'Time a generation waited for admission (KV room) before it ran.');
    this.promptTokens = counter('kvserve_prompt_tokens_total', 'Prompt tokens of generation requests.');
    this.generatedTokens = counter('kvserve_generated_tokens_total', 'Tokens generated.');
    this.batchSize = histogram('kvserve_batch_size', 'Sequences advanced by one decode step (continuous batching).', BATCH_SIZE_BUCKETS);
    this.stepDuration = histogram('kvserve_step_duration_seconds', 'Duration of one scheduler step: the batched decode plus any prefill chunks run with it.');

    for (const result of ['hit', 'partial', 'miss']) this.#cacheLookups.inc({ result }, 0);
    for (const reason of ['lru', 'ttl', 'deleted']) {
      this.#evictions.inc({ reason }, 0);
      this.#evictedBytes.inc({ reason }, 0);
    }
    for (const reason of ['stop', 'length', 'abort', 'error'] satisfies FinishReason[]) this.finished.inc({ reason }, 0);
    for (const reason of REJECT_REASONS) this.rejected.inc({ reason }, 0);
  }

  /** Brings the engine-side metrics up to date from a stats snapshot (called at scrape time). */
  update(stats: EngineStats): void {
    const now = stats.cache;
    const last = this.#last?.cache;
    const delta = (a: number, b: number | undefined) => Math.max(0, a - (b ?? 0));
    for (const result of ['hit', 'partial', 'miss'] as const) this.#cacheLookups.inc({ result }, delta(now.lookups[result], last?.lookups[result]));
    this.#cacheReused.inc(delta(now.reusedTokens, last?.reusedTokens));
    this.#cacheComputed.inc(delta(now.computedTokens, last?.computedTokens));
    for (const reason of ['lru', 'ttl', 'deleted'] as const) {
      this.#evictions.inc({ reason }, delta(now.evictions[reason], last?.evictions[reason]));
      this.#evictedBytes.inc({ reason }, delta(now.evictedBytes[reason], last?.evictedBytes[reason]));
    }
    for (const [value, count] of newObservations(stats.steps.batchSize, this.#last?.steps.batchSize)) {
      for (let i = 0; i < count; i++) this.batchSize.observe(value);
    }
    for (const [value, count] of newObservations(stats.steps.durationSeconds, this.#last?.steps.durationSeconds)) {
      for (let i = 0; i < count; i++) this.stepDuration.observe(value);
    }
    this.#last = stats;
    this.#cacheBytes.set(now.bytes);
    this.#cacheCapacity.set(now.capacityBytes);
    for (const kind of ['session', 'prefix', 'active'] as const) this.#cacheEntries.set({ kind }, now.entries[kind]);
    this.#cachePinned.set(now.pinnedEntries);
    this.requestsRunning.set(stats.running);
    this.requestsQueued.set(stats.waiting);
  }
}
