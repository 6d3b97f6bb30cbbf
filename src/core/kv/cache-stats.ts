// What the KV cache manager reports: its counters (lookups, reused and computed prompt tokens,
// evictions by reason) and the shapes it reports them in, for /metrics and /v1/sessions.

export type LookupResult = 'hit' | 'partial' | 'miss';
export type EvictionReason = 'lru' | 'ttl' | 'deleted';

export const LOOKUP_RESULTS = ['hit', 'partial', 'miss'] as const satisfies readonly LookupResult[];
export const EVICTION_REASONS = ['lru', 'ttl', 'deleted'] as const satisfies readonly EvictionReason[];

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
}

export interface CacheSnapshot {
  bytes: number;
  capacityBytes: number;
  entries: Record<'session' | 'prefix' | 'active', number>;
  pinnedEntries: number;
  lookups: Record<LookupResult, number>;
  reusedTokens: number;
  computedTokens: number;
  evictions: Record<EvictionReason, number>;
  evictedBytes: Record<EvictionReason, number>;
}

const zero = <K extends string>(keys: readonly K[]) => Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;

/** The manager's cumulative counters. */
export class CacheCounters {
  readonly lookups = zero(LOOKUP_RESULTS);
  reusedTokens = 0;
  computedTokens = 0;
  readonly evictions = zero(EVICTION_REASONS);
  readonly evictedBytes = zero(EVICTION_REASONS);

  lookup(result: LookupResult, reused: number, computed: number): void {
    this.lookups[result]++;
    this.reusedTokens += reused;
    this.computedTokens += computed;
  }

  evicted(reason: EvictionReason, bytes: number): void {
    this.evictions[reason]++;
    this.evictedBytes[reason] += bytes;
  }

  snapshot(): Pick<CacheSnapshot, 'lookups' | 'reusedTokens' | 'computedTokens' | 'evictions' | 'evictedBytes'> {
    return {
      lookups: { ...this.lookups },
      reusedTokens: this.reusedTokens,
      computedTokens: this.computedTokens,
      evictions: { ...this.evictions },
      evictedBytes: { ...this.evictedBytes },
    };
  }
}
