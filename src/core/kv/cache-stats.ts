// What the KV cache manager reports: its counters (lookups, reused and computed prompt tokens,
// evictions by reason) and the shapes it reports them in, for /metrics and /v1/sessions.

import type { LowerTier, Tier } from './tiers/lower-tiers.js';

export type LookupResult = 'hit' | 'partial' | 'miss';
export type EvictionReason = 'lru' | 'ttl' | 'deleted';

export const LOOKUP_RESULTS = ['hit', 'partial', 'miss'] as const satisfies readonly LookupResult[];
export const EVICTION_REASONS = ['lru', 'ttl', 'deleted'] as const satisfies readonly EvictionReason[];
export const TIERS = ['ram', 'compressed', 'disk', 'remote'] as const satisfies readonly Tier[];
export const LOWER_TIERS = ['compressed', 'disk', 'remote'] as const satisfies readonly LowerTier[];

export interface SessionInfo {
  id: string;
  /** Tokens whose keys and values the session holds. */
  tokens: number;
  bytes: number;
  /** Unix seconds, as OpenAI's `created`. */
  created: number;
  last_used: number;
  /** In use by a running request (not evictable). */
  pinned: boolean;
  /** Where its cache is now: RAM, or a tier below it (brought back on its next turn). */
  tier: Tier;
}

export interface CacheSnapshot {
  bytes: number;
  /** The sum of every entry's bytes: equal to `bytes` (the pool's invariant, checked by tests). */
  entryBytes: number;
  capacityBytes: number;
  entries: Record<'session' | 'prefix' | 'active', number>;
  /** Of `bytes`, what each kind of entry holds (running sequences, sessions, prefix blocks). */
  bytesByKind: Record<'session' | 'prefix' | 'active', number>;
  pinnedEntries: number;
  /** Bytes in the pool by tenant (tenants holding any). */
  tenantBytes: Record<string, number>;
  lookups: Record<LookupResult, number>;
  reusedTokens: number;
  computedTokens: number;
  evictions: Record<EvictionReason, number>;
  evictedBytes: Record<EvictionReason, number>;
  /** Blocks (and sessions) a request reused, by the tier they were in when it arrived. */
  tierHits: Record<Tier, number>;
  /** Entries brought back to RAM from a lower tier. */
  promotions: Record<LowerTier, number>;
}

const zero = <K extends string>(keys: readonly K[]) => Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;

/** The manager's cumulative counters. */
export class CacheCounters {
  readonly lookups = zero(LOOKUP_RESULTS);
  reusedTokens = 0;
  computedTokens = 0;
  readonly evictions = zero(EVICTION_REASONS);
  readonly evictedBytes = zero(EVICTION_REASONS);
  readonly tierHits = zero(TIERS);
  readonly promotions = zero(LOWER_TIERS);

  lookup(result: LookupResult, reused: number, computed: number): void {
    this.lookups[result]++;
    this.reusedTokens += reused;
    this.computedTokens += computed;
  }

  /** A request reused these (blocks or a session): each counts for the tier it came from. */
  reused(sources: readonly { promotedFrom?: LowerTier | undefined }[]): void {
    for (const s of sources) {
      this.tierHits[s.promotedFrom ?? 'ram']++;
      s.promotedFrom = undefined;
    }
  }

  promoted(from: LowerTier): void {
    this.promotions[from]++;
  }

  evicted(reason: EvictionReason, bytes: number): void {
    this.evictions[reason]++;
    this.evictedBytes[reason] += bytes;
  }

  snapshot(): Pick<CacheSnapshot, 'lookups' | 'reusedTokens' | 'computedTokens' | 'evictions' | 'evictedBytes' | 'tierHits' | 'promotions'> {
    return {
      lookups: { ...this.lookups },
      reusedTokens: this.reusedTokens,
      computedTokens: this.computedTokens,
      evictions: { ...this.evictions },
      evictedBytes: { ...this.evictedBytes },
      tierHits: { ...this.tierHits },
      promotions: { ...this.promotions },
    };
  }
}
