// The KV cache tiers' metrics (RAM, compressed RAM, disk, the shared tier in Redis): bytes and budgets per tier, blocks
// served from each, entries moved between them, and the disk tier's rejections and writes.
import type { Registry } from 'prom-client';
import { LOWER_TIERS, TIERS } from '../core/kv/cache-stats.js';
import { REMOTE_OPS } from '../core/kv/tiers/remote-store.js';
import type { EngineStats } from '../workers/protocol.js';
import type { ScrapeSource } from './external.js';
import { externalHistogram } from './external.js';

type Samples = (s: EngineStats) => Array<{ labels?: Record<string, string>; value: number }>;
type Define = (name: string, help: string, samples: Samples) => void;

/** Demotion routes the tiers report ("from>to"), as labels; always present so dashboards see zeros. */
const ROUTES = ['ram>compressed', 'ram>disk', 'compressed>disk'];
const DISK_REJECT_REASONS = ['fingerprint', 'checksum', 'truncated', 'io'] as const;

export function registerTierMetrics(registry: Registry, source: ScrapeSource<EngineStats>, define: { counter: Define; gauge: Define }): void {
  const { counter, gauge } = define;
  const below = (s: EngineStats, tier: string, key: 'bytes' | 'capacityBytes') => (tier === 'compressed' || tier === 'disk' ? (s.tiers?.[key][tier] ?? 0) : 0);
  const tiers = ['ram', 'compressed', 'disk'] as const;
  gauge('kvserve_kv_cache_tier_bytes', 'Bytes held by each KV cache tier: ram (the pool), compressed (RAM, int8 or float16), disk.', (s) =>
    tiers.map((tier) => ({ labels: { tier }, value: tier === 'ram' ? s.cache.bytes : below(s, tier, 'bytes') })),
  );
  gauge('kvserve_kv_cache_tier_capacity_bytes', "Each KV cache tier's byte budget (0: the tier is off).", (s) =>
    tiers.map((tier) => ({ labels: { tier }, value: tier === 'ram' ? s.cache.capacityBytes : below(s, tier, 'capacityBytes') })),
  );
  counter('kvserve_kv_cache_tier_hits_total', 'Prefix blocks (and sessions) requests reused, by the tier they were in when the request arrived.', (s) =>
    TIERS.map((tier) => ({ labels: { tier }, value: s.cache.tierHits[tier] })),
  );
  counter(
    'kvserve_kv_cache_demotions_total',
    'Cache entries moved down a tier (from, to): ram>compressed and ram>disk on eviction, compressed>disk when only the disk copy remains.',
    (s) =>
      ROUTES.map((route) => {
        const [from, to] = route.split('>') as [string, string];
        return { labels: { from, to }, value: s.tiers?.demotions[route] ?? 0 };
      }),
  );
  counter('kvserve_kv_cache_demotions_dropped_total', 'Evicted cache entries not demoted: the tiers were too far behind, or it fit no budget.', (s) => [
    { value: s.tiers?.dropped ?? 0 },
  ]);
  counter('kvserve_kv_cache_promotions_total', 'Cache entries brought back to RAM from a lower tier, by the tier they came from.', (s) =>
    LOWER_TIERS.map((from) => ({ labels: { from }, value: s.cache.promotions[from] })),
  );
  counter(
    'kvserve_kv_cache_disk_rejected_total',
    'Disk tier files never served (removed), by reason: fingerprint (another model), checksum, truncated, io.',
    (s) => DISK_REJECT_REASONS.map((reason) => ({ labels: { reason }, value: s.tiers?.diskRejected[reason] ?? 0 })),
  );
  counter('kvserve_kv_cache_remote_errors_total', 'Shared tier (Redis) calls that failed or timed out, by op: get, set, del, connect.', (s) =>
    REMOTE_OPS.map((op) => ({ labels: { op }, value: s.tiers?.remote?.errors[op] ?? 0 })),
  );
  counter('kvserve_kv_cache_remote_bytes_total', 'Entry bytes moved to and from the shared tier (Redis), by direction: sent, received.', (s) =>
    (['sent', 'received'] as const).map((direction) => ({ labels: { direction }, value: s.tiers?.remote?.bytes[direction] ?? 0 })),
  );
  gauge('kvserve_kv_cache_remote_up', 'Whether the shared tier (Redis) is connected: 1 yes, 0 no or not configured.', (s) => [
    { value: s.tiers?.remote?.connected ? 1 : 0 },
  ]);
  externalHistogram({
    name: 'kvserve_kv_cache_disk_write_seconds',
    help: 'Time to write one entry file of the disk tier (temp file and rename), off the step loop.',
    source,
    registry,
    series: (s) => (s.tiers ? [{ snapshot: s.tiers.diskWriteSeconds }] : []),
  });
}
