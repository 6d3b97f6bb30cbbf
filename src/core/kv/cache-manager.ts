// Decides where a request's KV cache comes from and where it goes: looks up the longest
// reusable prefix (the request's named session, or shared prefix blocks), admits the request
// only if its worst-case cache fits the budget, and on finish offers the cache back to the
// pool as a session or as prefix blocks. Counts every lookup, reused token and eviction.
import { KvCache } from './kv-cache.js';
import { type KvLayout, kvBytesPerToken } from './layout.js';
import { KvPool, type PoolEntry, type RemovalReason } from './pool.js';
import { type PrefixBlock, chainKeys, cutBlock, sameTokens } from './prefix-index.js';

export type LookupResult = 'hit' | 'partial' | 'miss';
export type EvictionReason = 'lru' | 'ttl' | 'deleted';

interface Session {
  readonly id: string;
  readonly tenant: string;
  readonly tokens: readonly number[];
  readonly kv: KvCache;
  /** When the session was first created (it keeps its age across turns). */
  readonly createdMs: number;
}

type Payload = { kind: 'prefix'; block: PrefixBlock } | { kind: 'session'; session: Session } | { kind: 'active' };
type Entry = PoolEntry<Payload>;

export interface CacheRequest {
  tenant: string;
  sessionId?: string | undefined;
  promptIds: readonly number[];
  maxTokens: number;
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

/** A session taken over by the running request that continues it. */
interface InUseSession {
  readonly id: string;
  readonly tenant: string;
  readonly createdMs: number;
  readonly lease: LeaseState;
  deleted: boolean;
}

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

export interface KvCacheManagerOptions {
  layout: KvLayout;
  maxBytes: number;
  /** Prefix-cache granularity in tokens. */
  blockSize: number;
  /** Sessions idle longer than this are evicted. */
  sessionTtlMs: number;
  now?: () => number;
}

const zero = <K extends string>(keys: readonly K[]) => Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;

export class KvCacheManager {
  readonly layout: KvLayout;
  readonly blockSize: number;
  readonly bytesPerToken: number;
  readonly #pool: KvPool<Payload>;
  readonly #blocks = new Map<string, Entry>();
  readonly #sessions = new Map<string, Entry>();
  readonly #sessionsInUse = new Map<string, InUseSession>();
  readonly #ttlMs: number;
  readonly #now: () => number;
  #committedBytes = 0;
  readonly #counters = {
    lookups: zero(['hit', 'partial', 'miss'] as const),
    reusedTokens: 0,
    computedTokens: 0,
    evictions: zero(['lru', 'ttl', 'deleted'] as const),
    evictedBytes: zero(['lru', 'ttl', 'deleted'] as const),
  };

  constructor(options: KvCacheManagerOptions) {
    if (!Number.isInteger(options.blockSize) || options.blockSize < 1) throw new RangeError('blockSize must be a positive integer');
    if (!(options.sessionTtlMs > 0)) throw new RangeError('sessionTtlMs must be positive');
    this.layout = options.layout;
    this.blockSize = options.blockSize;
    this.bytesPerToken = kvBytesPerToken(options.layout);
    this.#ttlMs = options.sessionTtlMs;
    this.#now = options.now ?? Date.now;
    this.#pool = new KvPool<Payload>({ maxBytes: options.maxBytes, now: this.#now, onRemove: (e, r) => this.#onRemove(e, r) });
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
   * Admits a request: finds its longest cached prefix, pins it, and reserves room for its
   * cache at full length. Returns undefined — changing nothing — when running requests
   * already hold too much of the budget; the caller waits or refuses.
   */
  acquire(request: CacheRequest): Lease | undefined {
    this.expireSessions();
    const { promptIds } = request;
    const committedBytes = this.worstCaseBytes(promptIds.length, request.maxTokens);
    if (this.#committedBytes + committedBytes > this.maxBytes) return undefined;

    // At least the last prompt token is always fed to the model: its logits start generation.
    const reusable = promptIds.length - 1;
    const fromSession = this.#sessionMatch(request, reusable);
    const fromBlocks = this.#blockMatch(request, reusable);
    // A session is taken over only when it contributes tokens; otherwise it is left alone.
    const best = fromSession && fromSession.tokens > 0 && fromSession.tokens >= fromBlocks.tokens ? fromSession : fromBlocks;
    const kv = best.take();
    // Cannot fail: committed bytes bound every running cache, everything else is evictable.
    if (!this.#pool.makeRoom(kv.byteLength)) throw new Error('KV pool accounting broken: no room for an admitted request');
    const active = this.#pool.add('active', { kind: 'active' }, kv.byteLength, 1)!;
    this.#committedBytes += committedBytes;

    const result: LookupResult = best.tokens === 0 ? 'miss' : best.tokens >= best.possible ? 'hit' : 'partial';
    this.#counters.lookups[result]++;
    this.#counters.reusedTokens += best.tokens;
    this.#counters.computedTokens += promptIds.length - best.tokens;
    const lease: LeaseState = { kv, cachedTokens: best.tokens, result, request, active, committedBytes, session: undefined, released: false };
    if (best === fromSession && best.tokens > 0) this.#useSession(lease, fromSession.createdMs);
    return lease;
  }

  /**
   * Accounts a running request's cache after a step grew it to `tokens` tokens. (A sequence in
   * the decode batch holds exactly these bytes of the batch's buffers; the batch's unused
   * slots, under SLOT_ROUND per row, are the scheduler's working memory, not the pool's.)
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
    const inUse = state.session;
    const key = sessionId === undefined ? undefined : sessionKey(tenant, sessionId);
    if (inUse && this.#sessionsInUse.get(key!) === inUse) this.#sessionsInUse.delete(key!);
    if (inUse?.deleted) {
      // Deleted while its request ran: what it would have kept is dropped now.
      this.#count('deleted', final?.kv.byteLength ?? 0);
      return;
    }
    if (!final || final.kv.length === 0) return;
    if (sessionId !== undefined) {
      // Another request holds this session: it writes the session back when it ends.
      const holder = this.#sessionsInUse.get(key!);
      if (!inUse && holder && !holder.deleted) return;
      this.#keepSession(tenant, sessionId, final.kv, final.tokens.slice(0, final.kv.length), inUse?.createdMs);
    } else {
      this.#keepBlocks(tenant, final.kv, final.tokens);
    }
  }

  /** Evicts sessions idle past the TTL; returns how many. */
  expireSessions(): number {
    return this.#pool.expire('session', this.#now() - this.#ttlMs);
  }

  sessions(tenant: string): SessionInfo[] {
    const kept = [...this.#sessions.values()].filter((e) => this.#session(e).tenant === tenant).map((e) => this.#info(e));
    const running = [...this.#sessionsInUse.values()].filter((s) => s.tenant === tenant && !s.deleted).map((s) => this.#inUseInfo(s));
    return [...running, ...kept];
  }

  session(tenant: string, id: string): SessionInfo | undefined {
    const key = sessionKey(tenant, id);
    const inUse = this.#sessionsInUse.get(key);
    if (inUse && !inUse.deleted) return this.#inUseInfo(inUse);
    const e = this.#sessions.get(key);
    return e && this.#info(e);
  }

  deleteSession(tenant: string, id: string): boolean {
    const key = sessionKey(tenant, id);
    const inUse = this.#sessionsInUse.get(key);
    if (inUse && !inUse.deleted) {
      inUse.deleted = true;
      return true;
    }
    const e = this.#sessions.get(key);
    if (e) this.#pool.remove(e, 'deleted');
    return e !== undefined;
  }

  snapshot(): CacheSnapshot {
    const entries = zero(['session', 'prefix', 'active'] as const);
    let pinnedEntries = 0;
    for (const e of this.#pool.entries()) {
      entries[e.kind]++;
      if (e.refs > 0) pinnedEntries++;
    }
    const c = this.#counters;
    return {
      bytes: this.#pool.bytesInUse,
      capacityBytes: this.#pool.maxBytes,
      entries,
      pinnedEntries,
      lookups: { ...c.lookups },
      reusedTokens: c.reusedTokens,
      computedTokens: c.computedTokens,
      evictions: { ...c.evictions },
      evictedBytes: { ...c.evictedBytes },
    };
  }

  #sessionMatch(request: CacheRequest, reusable: number) {
    if (request.sessionId === undefined) return undefined;
    const entry = this.#sessions.get(sessionKey(request.tenant, request.sessionId));
    if (!entry) return undefined;
    const { tokens, kv, tenant, createdMs } = this.#session(entry);
    if (tenant !== request.tenant) return undefined;
    let n = 0;
    const limit = Math.min(reusable, kv.length);
    while (n < limit && tokens[n] === request.promptIds[n]) n++;
    return {
      tokens: n,
      possible: reusable,
      createdMs,
      // The request takes the session's cache over (no copy when all of it is reused): the
      // pool then counts those bytes once, as the request's, until release keeps the session again.
      take: () => {
        this.#pool.remove(entry, 'released');
        return n === kv.length ? kv : kv.slice(n);
      },
    };
  }

  #blockMatch(request: CacheRequest, reusable: number) {
    const keys = chainKeys(request.tenant, request.promptIds as number[], this.blockSize, reusable);
    const entries: Entry[] = [];
    for (const [i, key] of keys.entries()) {
      const e = this.#blocks.get(key);
      if (!e || !sameTokens(this.#block(e), request.promptIds, i * this.blockSize)) break;
      entries.push(e);
    }
    const tokens = entries.length * this.blockSize;
    return {
      tokens,
      possible: keys.length * this.blockSize,
      // The request's cache reads the blocks' arrays, so an evicted block's memory lives on
      // until the request has copied it (its bytes count in the request's own entry meanwhile,
      // the budget is never exceeded); the blocks themselves stay evictable. Touched tail first: parents stay more recent.
      take: () => {
        for (let i = entries.length - 1; i >= 0; i--) this.#pool.touch(entries[i]!);
        if (tokens === 0) return KvCache.empty(this.layout);
        // Not joined here: a prompt prefilled in its batch row copies the blocks straight in.
        return KvCache.ofBlocks(
          this.layout,
          entries.map((e) => this.#block(e).tensors),
          this.blockSize,
        );
      },
    };
  }

  #keepSession(tenant: string, id: string, kv: KvCache, tokens: readonly number[], createdMs?: number): void {
    const key = sessionKey(tenant, id);
    const old = this.#sessions.get(key);
    if (old) this.#pool.remove(old, 'released');
    if (!this.#pool.makeRoom(kv.byteLength)) return;
    // A view of a batch row is copied here, the one copy a finished sequence costs.
    const session: Session = { id, tenant, tokens, kv: kv.own(), createdMs: createdMs ?? this.#now() };
    this.#sessions.set(key, this.#pool.add('session', { kind: 'session', session }, kv.byteLength)!);
  }

  #useSession(lease: LeaseState, createdMs: number): void {
    const { tenant, sessionId } = lease.request;
    const inUse: InUseSession = { id: sessionId!, tenant, createdMs, lease, deleted: false };
    (lease as { session: InUseSession | undefined }).session = inUse;
    this.#sessionsInUse.set(sessionKey(tenant, sessionId!), inUse);
  }

  #keepBlocks(tenant: string, kv: KvCache, tokens: readonly number[]): void {
    const keys = chainKeys(tenant, tokens as number[], this.blockSize, kv.length);
    // The chain is pinned while it is built so that making room for a new block never
    // evicts one of its own parents.
    const chain: Entry[] = [];
    for (const [i, key] of keys.entries()) {
      const start = i * this.blockSize;
      const existing = this.#blocks.get(key);
      if (existing && sameTokens(this.#block(existing), tokens, start)) {
        this.#pool.pin(existing);
        chain.push(existing);
        continue;
      }
      const tensors = cutBlock(kv, start, this.blockSize);
      const bytes = tensors.reduce((sum, t) => sum + t.byteLength, 0);
      // A block that does not fit ends the chain: later blocks are unreachable without it.
      if (!this.#pool.makeRoom(bytes)) break;
      if (existing) this.#pool.remove(existing, 'released');
      const block: PrefixBlock = { key, tokens: Int32Array.from(tokens.slice(start, start + this.blockSize)), tensors };
      const entry = this.#pool.add('prefix', { kind: 'prefix', block }, bytes, 1)!;
      this.#blocks.set(key, entry);
      chain.push(entry);
    }
    // Unpin the tail first so parents are more recently used than their children: LRU then
    // evicts a chain from its end and never strands a block behind an evicted parent.
    for (let i = chain.length - 1; i >= 0; i--) this.#pool.unpin(chain[i]!);
  }

  #onRemove(entry: Entry, reason: RemovalReason): void {
    const p = entry.payload;
    if (p.kind === 'prefix' && this.#blocks.get(p.block.key) === entry) this.#blocks.delete(p.block.key);
    if (p.kind === 'session') {
      const key = sessionKey(p.session.tenant, p.session.id);
      if (this.#sessions.get(key) === entry) this.#sessions.delete(key);
    }
    if (reason === 'lru' || reason === 'ttl' || reason === 'deleted') this.#count(reason, entry.bytes);
  }

  #count(reason: EvictionReason, bytes: number): void {
    this.#counters.evictions[reason]++;
    this.#counters.evictedBytes[reason] += bytes;
  }

  #session(e: Entry): Session {
    if (e.payload.kind !== 'session') throw new Error('not a session entry');
    return e.payload.session;
  }

  #block(e: Entry): PrefixBlock {
    if (e.payload.kind !== 'prefix') throw new Error('not a prefix entry');
    return e.payload.block;
  }

  #info(e: Entry): SessionInfo {
    const s = this.#session(e);
    return { id: s.id, tokens: s.kv.length, bytes: e.bytes, created: seconds(s.createdMs), last_used: seconds(e.lastUsedMs), pinned: false };
  }

  /** A session whose request is running: its cache is the request's, growing each step. */
  #inUseInfo(s: InUseSession): SessionInfo {
    const { bytes, lastUsedMs } = s.lease.active;
    return { id: s.id, tokens: bytes / this.bytesPerToken, bytes, created: seconds(s.createdMs), last_used: seconds(lastUsedMs), pinned: true };
  }
}

const seconds = (ms: number): number => Math.floor(ms / 1000);

function sessionKey(tenant: string, id: string): string {
  // JSON keeps (tenant, id) pairs apart whatever characters either contains.
  return JSON.stringify([tenant, id]);
}
