// What the KV pool holds for the cache manager: an entry's payload is a prefix block, a named
// session's cache, or a running request's reservation (its bytes only; the batch holds them).
import type { KvCache } from './kv-cache.js';
import type { KvPool, PoolEntry } from './pool.js';
import type { PrefixBlock } from './prefix-index.js';
import type { LowerTier } from './tiers/lower-tiers.js';

export interface Session {
  readonly id: string;
  /** Set on a session brought back from a lower tier, until a request continues it. */
  promotedFrom?: LowerTier | undefined;
  readonly tenant: string;
  readonly tokens: readonly number[];
  readonly kv: KvCache;
  /** When the session was first created (it keeps its age across turns). */
  readonly createdMs: number;
}

export type Payload = { kind: 'prefix'; block: PrefixBlock } | { kind: 'session'; session: Session } | { kind: 'active'; tenant: string };
export type Entry = PoolEntry<Payload>;
export type Pool = KvPool<Payload>;

/** A stored cache that matches a request's prompt for `tokens` tokens (out of `possible`). */
export interface Match {
  readonly tokens: number;
  readonly possible: number;
  /** What it reads: the blocks, or the session (to count where each came from). */
  readonly sources: readonly { promotedFrom?: LowerTier | undefined }[];
  /** The matched cache for the request to start from (the session's take-over, or the blocks). */
  take(): KvCache;
}
