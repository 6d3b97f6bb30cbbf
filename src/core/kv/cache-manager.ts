// Decides where a request's KV cache comes from and where it goes. At admission it reserves
// the request's worst-case cache against the budget (never overcommitting: a request that does
// not fit waits), and starts it from the longest reusable prefix — its named session or shared
// prefix blocks. At the end it offers the cache back: as the session, or as prefix blocks.
//
//   acquire ──▶ budget check ──▶ session match ┐                     ┌─▶ SessionStore.finish
//                              └─▶ block match ┴─▶ Lease … grow … release ─┴─▶ BlockStore.keep
import { BlockStore } from './block-store.js';
import { CacheCounters, type CacheSnapshot, type LookupResult, type SessionInfo } from './cache-stats.js';
import type { Entry, Match, Payload } from './entries.js';
import { KvCache } from './kv-cache.js';
import { type KvLayout, kvBytesPerToken } from './layout.js';
import { KvPool, type RemovalReason, monotonicNow } from './pool.js';
import { type InUseSession, SessionStore } from './session-store.js';
import type { LowerTiers } from './tiers/lower-tiers.js';
import { TierLink, type TierRequest } from './tiers/tier-link.js';

export interface CacheRequest {
  tenant: string;
  sessionId?: string | undefined;
  promptIds: readonly number[];
  maxTokens: number;
  /** Reuse nothing: the whole prompt is computed (a request scoring its prompt needs every position's logits). */
  noReuse?: boolean | undefined;
  /** The tenant's share of the budget (0–1]; unset: all of it. */
  kvShare?: number | undefined;
}

/** A running request's hold on the cache, from admission to release. */
export interface Lease {
  /** The sequence's starting cache: the first `cachedTokens` prompt tokens, already computed. */
  readonly kv: KvCache;
  readonly cachedTokens: number;
  readonly result: LookupResult;
}

interface LeaseState extends Lease {
  readonly request: CacheRequest;
  readonly active: Entry;
  /** Bytes this lease may hold at most: its cache at full length. */
  readonly committedBytes: number;
  /** Set when the request continues a session: the session lives in the lease until release. */
  readonly session: InUseSession | undefined;
  released: boolean;
}

export interface KvCacheManagerOptions {
  layout: KvLayout;
  maxBytes: number;
  /** Prefix-cache granularity in tokens. */
  blockSize: number;
  /** Sessions idle longer than this are evicted. */
  sessionTtlMs: number;
  /** The tiers below RAM (compressed, disk): evictions are demoted there, lookups reach them. */
  tiers?: LowerTiers | undefined;
  now?: () => number;
}

export class KvCacheManager {
  readonly layout: KvLayout;
  readonly bytesPerToken: number;
  readonly #pool: KvPool<Payload>;
  readonly #blocks: BlockStore;
  readonly #sessions: SessionStore;
  readonly #tiers: TierLink | undefined;
  readonly #counters = new CacheCounters();
  readonly #ttlMs: number;
  readonly #now: () => number;
  /** Sum of the running leases' worst cases: admission keeps it within the budget. */
  #committedBytes = 0;

  constructor(options: KvCacheManagerOptions) {
    if (!(options.sessionTtlMs > 0)) throw new RangeError('sessionTtlMs must be positive');
    this.layout = options.layout;
    this.bytesPerToken = kvBytesPerToken(options.layout);
    this.#ttlMs = options.sessionTtlMs;
    this.#now = options.now ?? monotonicNow;
    this.#pool = new KvPool<Payload>({
      maxBytes: options.maxBytes,
      now: this.#now,
      onRemove: (e, r) => this.#removed(e, r),
      onAdd: (e) => this.#tiers?.added(e),
      tenantOf,
    });
    this.#blocks = new BlockStore(this.#pool, options.layout, options.blockSize);
    this.#sessions = new SessionStore(this.#pool, this.#counters, this.bytesPerToken, this.#now);
    this.#tiers = options.tiers && new TierLink(options.tiers, this.#blocks, this.#sessions, this.#counters, options.layout);
  }

  /**
   * The entries below RAM `request` could reuse (empty: nothing to fetch, admit at once). A
   * request fetches them with fetchFromTiers() before it is admitted.
   */
  tierPlan(request: TierRequest): string[] {
    return this.#tiers?.plan(request, this.blockSize) ?? [];
  }

  /** Brings back what tierPlan() named, within the budget (never over it). */
  async fetchFromTiers(request: TierRequest, keys: readonly string[]): Promise<void> {
    await this.#tiers?.fetch(request, keys);
  }

  /** Graceful stop: every cache RAM holds goes down to the tiers, least recently used first. */
  demoteAll(): void {
    if (!this.#tiers) return;
    for (const e of this.#pool.lruOrder()) if (e.kind !== 'active') this.#pool.remove(e, 'shutdown');
  }

  get blockSize(): number {
    return this.#blocks.blockSize;
  }

  get maxBytes(): number {
    return this.#pool.maxBytes;
  }

  get bytesInUse(): number {
    return this.#pool.bytesInUse;
  }

  /** Bytes a request could ever need: prompt + max_tokens tokens of cache. */
  worstCaseBytes(promptTokens: number, maxTokens: number): number {
    return (promptTokens + maxTokens) * this.bytesPerToken;
  }

  /** Whether a request of this size could be admitted on an otherwise idle server. */
  canEverFit(promptTokens: number, maxTokens: number): boolean {
    return this.worstCaseBytes(promptTokens, maxTokens) <= this.maxBytes;
  }

  /**
   * Admits a request: finds its longest cached prefix and reserves room for its cache at full
   * length. Returns undefined — changing nothing — when running requests already hold too
   * much of the budget; the caller waits or refuses.
   */
  acquire(request: CacheRequest): Lease | undefined {
    return this.acquireGroup(request, 1)?.[0];
  }

  /**
   * Admits a request of `n` choices: choice 0 as acquire() does, choices 1..n-1 with an empty
   * starting cache and no lookup, since they copy choice 0's prompt when it is computed. Each
   * reserves its own worst case (each batch row holds its copy). All or none.
   */
  acquireGroup(request: CacheRequest, n: number): Lease[] | undefined {
    this.expireSessions();
    const { promptIds, tenant } = request;
    const committedBytes = this.worstCaseBytes(promptIds.length, request.maxTokens);
    if (this.#committedBytes + n * committedBytes > this.maxBytes) return undefined;
    // The share comes with each request (the key file may be reloaded): the latest one holds.
    this.#pool.setShare(tenant, request.kvShare ?? 1);
    const leases = [this.#acquireOne(request, committedBytes)];
    for (let i = 1; i < n; i++) {
      const kv = KvCache.empty(this.layout);
      const active = this.#pool.add('active', { kind: 'active', tenant }, 0, 1)!;
      this.#committedBytes += committedBytes;
      const fork: CacheRequest = { tenant, promptIds, maxTokens: request.maxTokens };
      leases.push({ kv, cachedTokens: 0, result: 'miss', request: fork, active, committedBytes, session: undefined, released: false } as LeaseState);
    }
    return leases;
  }

  #acquireOne(request: CacheRequest, committedBytes: number): Lease {
    const { promptIds, tenant, sessionId } = request;
    // At least the last prompt token is always fed to the model: its logits start generation.
    const reusable = request.noReuse ? 0 : promptIds.length - 1;
    const fromSession = sessionId === undefined ? undefined : this.#sessions.match(tenant, sessionId, promptIds, reusable);
    const fromBlocks = this.#blocks.match(tenant, promptIds, reusable);
    // A session is taken over only when it contributes tokens; otherwise it is left alone.
    const useSession = fromSession !== undefined && fromSession.tokens > 0 && fromSession.tokens >= fromBlocks.tokens;
    const best: Match = useSession ? fromSession : fromBlocks;
    const kv = best.take();
    // Cannot fail: committed bytes bound every running cache, everything else is evictable.
    if (!this.#pool.makeRoom(kv.byteLength)) throw new Error('KV pool accounting broken: no room for an admitted request');
    const active = this.#pool.add('active', { kind: 'active', tenant }, kv.byteLength, 1)!;
    this.#committedBytes += committedBytes;

    const result: LookupResult = best.tokens === 0 ? 'miss' : best.tokens >= best.possible ? 'hit' : 'partial';
    this.#counters.lookup(result, best.tokens, promptIds.length - best.tokens);
    this.#counters.reused(best.tokens > 0 ? best.sources : []);
    const session = useSession ? this.#sessions.use(tenant, sessionId!, fromSession.createdMs, active) : undefined;
    const lease: LeaseState = { kv, cachedTokens: best.tokens, result, request, active, committedBytes, session, released: false };
    return lease;
  }

  /**
   * Accounts a running request's cache after a step grew it to `tokens` tokens. (A sequence in
   * the decode batch holds exactly these bytes of the batch's buffers; the batch's unused
   * slots are the scheduler's working memory, not the pool's.)
   */
  grow(lease: Lease, tokens: number): void {
    const { active } = lease as LeaseState;
    if (!this.#pool.resize(active, tokens * this.bytesPerToken)) throw new Error('KV pool accounting broken: an admitted request cannot grow');
    this.#pool.touch(active);
  }

  /**
   * Ends a lease. With `final` (the sequence's cache and the tokens it covers) the cache is
   * kept: as the request's session, or else as prefix blocks for later prompts. `final.kv` may
   * be transient (a batch row): what is kept is copied before this returns.
   */
  release(lease: Lease, final?: { kv: KvCache; tokens: readonly number[] }): void {
    const state = lease as LeaseState;
    if (state.released) return;
    state.released = true;
    this.#pool.remove(state.active, 'released');
    this.#committedBytes -= state.committedBytes;
    const { tenant, sessionId } = state.request;
    if (sessionId !== undefined) this.#sessions.finish(tenant, sessionId, state.session, final);
    else if (final && final.kv.length > 0) this.#blocks.keep(tenant, final.kv, final.tokens);
  }

  /** Evicts sessions idle past the TTL; returns how many. */
  expireSessions(): number {
    return this.#pool.expire('session', this.#now() - this.#ttlMs);
  }

  sessions(tenant: string): SessionInfo[] {
    return [...this.#sessions.list(tenant), ...(this.#tiers?.sessions(tenant) ?? [])];
  }

  session(tenant: string, id: string): SessionInfo | undefined {
    return this.#sessions.get(tenant, id) ?? this.#tiers?.sessions(tenant).find((s) => s.id === id);
  }

  deleteSession(tenant: string, id: string): boolean {
    const inRam = this.#sessions.delete(tenant, id);
    const below = this.#tiers?.deleteSession(tenant, id) ?? false;
    return inRam || below;
  }

  snapshot(): CacheSnapshot {
    const entries = { session: 0, prefix: 0, active: 0 };
    const bytesByKind = { session: 0, prefix: 0, active: 0 };
    let pinnedEntries = 0;
    let entryBytes = 0;
    for (const e of this.#pool.entries()) {
      entries[e.kind]++;
      bytesByKind[e.kind] += e.bytes;
      entryBytes += e.bytes;
      if (e.refs > 0) pinnedEntries++;
    }
    return {
      bytes: this.#pool.bytesInUse,
      entryBytes,
      capacityBytes: this.#pool.maxBytes,
      entries,
      bytesByKind,
      pinnedEntries,
      tenantBytes: this.#pool.tenantBytes(),
      ...this.#counters.snapshot(),
    };
  }

  #removed(entry: Entry, reason: RemovalReason): void {
    this.#blocks.removed(entry);
    this.#sessions.removed(entry);
    this.#tiers?.removed(entry, reason);
    if (reason === 'lru' || reason === 'ttl' || reason === 'deleted') this.#counters.evicted(reason, entry.bytes);
  }
}

function tenantOf(payload: Payload): string {
  return payload.kind === 'prefix' ? payload.block.tenant : payload.kind === 'session' ? payload.session.tenant : payload.tenant;
}
