// The metrics the engine worker counts — KV cache, queue, steps, and the engine thread's own
// heap and GC pauses — read from its stats at scrape time (no work when nobody scrapes).
import type { Registry } from 'prom-client';
import { EVICTION_REASONS, LOOKUP_RESULTS, LOWER_TIERS, TIERS } from '../core/kv/cache-stats.js';
import type { EngineStats } from '../workers/protocol.js';
import { type ScrapeSource, externalHistogram, externalMetric } from './external.js';
import { registerTierMetrics } from './tier-metrics.js';

const noSteps = { bounds: [], counts: [0], sum: 0 };
const zeros = <K extends string>(keys: readonly K[]) => Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;

/** Figures of an engine that has done nothing yet. */
export const EMPTY: EngineStats = {
  cache: {
    bytes: 0,
    capacityBytes: 0,
    entries: { session: 0, prefix: 0, active: 0 },
    bytesByKind: { session: 0, prefix: 0, active: 0 },
    pinnedEntries: 0,
    entryBytes: 0,
    tenantBytes: {},
    lookups: zeros(LOOKUP_RESULTS),
    reusedTokens: 0,
    computedTokens: 0,
    evictions: zeros(EVICTION_REASONS),
    evictedBytes: zeros(EVICTION_REASONS),
    tierHits: zeros(TIERS),
    promotions: zeros(LOWER_TIERS),
  },
  running: 0,
  waiting: 0,
  steps: { batchSize: noSteps, durationSeconds: noSteps },
  heap: { usedBytes: 0, totalBytes: 0, externalBytes: 0, arrayBuffersBytes: 0 },
  gc: {},
  tiers: undefined,
};

export function registerEngineMetrics(registry: Registry, source: ScrapeSource<EngineStats>): void {
  type Samples = (s: EngineStats) => Array<{ labels?: Record<string, string>; value: number }>;
  // The label names are those of the samples' labels (prom-client lists them per metric).
  const labelsOf = (samples: Samples): string[] => Object.keys(samples(EMPTY)[0]?.labels ?? {});
  const counter = (name: string, help: string, samples: Samples) =>
    externalMetric({ name, help, type: 'counter', source, registry, samples, labelNames: labelsOf(samples) });
  const gauge = (name: string, help: string, samples: Samples) =>
    externalMetric({ name, help, type: 'gauge', source, registry, samples, labelNames: labelsOf(samples) });
  const one = (value: number) => [{ value }];

  counter('kvserve_kv_cache_lookups_total', 'KV cache lookups at admission, by result: hit (whole reusable prompt cached), partial, miss.', (s) =>
    LOOKUP_RESULTS.map((result) => ({ labels: { result }, value: s.cache.lookups[result] })),
  );
  counter('kvserve_kv_cache_reused_tokens_total', 'Prompt tokens whose keys and values came from the cache.', (s) => one(s.cache.reusedTokens));
  counter('kvserve_kv_cache_computed_tokens_total', 'Prompt tokens prefilled (computed by the model).', (s) => one(s.cache.computedTokens));
  gauge('kvserve_kv_cache_bytes', 'Bytes of K/V tensors held by the KV pool (running, session and prefix caches).', (s) => one(s.cache.bytes));
  gauge('kvserve_kv_cache_capacity_bytes', 'Byte budget of the KV pool.', (s) => one(s.cache.capacityBytes));
  gauge('kvserve_kv_cache_entries', 'Entries in the KV pool by kind: session, prefix (blocks), active (running requests).', (s) =>
    (['session', 'prefix', 'active'] as const).map((kind) => ({ labels: { kind }, value: s.cache.entries[kind] })),
  );
  // Tenants come from the key file (a bounded label set); only those holding bytes appear.
  externalMetric({
    name: 'kvserve_kv_cache_tenant_bytes',
    help: 'Bytes of the KV pool held by each tenant (running, session and prefix caches).',
    type: 'gauge',
    source,
    registry,
    labelNames: ['tenant'],
    samples: (s) => Object.entries(s.cache.tenantBytes).map(([tenant, value]) => ({ labels: { tenant }, value })),
  });
  gauge('kvserve_kv_cache_pinned_entries', 'KV pool entries in use by running requests (never evicted).', (s) => one(s.cache.pinnedEntries));
  counter('kvserve_kv_cache_evictions_total', 'KV pool entries evicted, by reason: lru (budget), ttl (idle session), deleted (by a user).', (s) =>
    EVICTION_REASONS.map((reason) => ({ labels: { reason }, value: s.cache.evictions[reason] })),
  );
  counter('kvserve_kv_cache_evicted_bytes_total', 'Bytes freed by KV pool evictions, by reason.', (s) =>
    EVICTION_REASONS.map((reason) => ({ labels: { reason }, value: s.cache.evictedBytes[reason] })),
  );

  registerTierMetrics(registry, source, { counter, gauge });

  gauge('kvserve_requests_running', 'Generations running in the engine.', (s) => one(s.running));
  gauge('kvserve_requests_queued', 'Generations waiting for admission.', (s) => one(s.waiting));
  externalHistogram({
    name: 'kvserve_batch_size',
    help: 'Sequences advanced by one decode step (continuous batching).',
    source,
    registry,
    series: (s) => [{ snapshot: s.steps.batchSize }],
  });
  externalHistogram({
    name: 'kvserve_step_duration_seconds',
    help: 'Duration of one scheduler step: the batched decode plus any prefill chunks run with it.',
    source,
    registry,
    series: (s) => [{ snapshot: s.steps.durationSeconds }],
  });

  gauge('kvserve_engine_heap_used_bytes', "The engine thread's V8 heap in use.", (s) => one(s.heap.usedBytes));
  gauge('kvserve_engine_heap_total_bytes', "The engine thread's V8 heap size.", (s) => one(s.heap.totalBytes));
  gauge('kvserve_engine_external_memory_bytes', "Memory of C++ objects bound to the engine thread's JavaScript objects.", (s) => one(s.heap.externalBytes));
  gauge('kvserve_engine_array_buffers_bytes', 'ArrayBuffer memory of the whole process (K/V tensors live here).', (s) => one(s.heap.arrayBuffersBytes));
  externalHistogram({
    name: 'kvserve_engine_gc_duration_seconds',
    help: 'Garbage-collection pauses of the engine thread, by kind (each pause stalls every running stream).',
    source,
    registry,
    labelNames: ['kind'],
    series: (s) => Object.entries(s.gc).map(([kind, snapshot]) => ({ labels: { kind }, snapshot })),
  });
}
