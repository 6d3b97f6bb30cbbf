// The KV memory pool: one byte budget over every KV cache the service holds — running
// sequences, named sessions and shared prefix blocks. Entries are ref-counted; only entries
// with no pins sit in the LRU list and can be evicted. The pool never blocks and never
// throws on pressure: makeRoom() answers "not enough" and the caller decides.
//
//   bytesInUse ──────────────────────────────────────────────────────┐
//   [ pinned: running sequences, a block chain being stored ][ LRU: oldest → newest ]  ≤ maxBytes
//                                                             ▲ evicted from here first
//
// (Blocks a running request reads are not pinned: see block-store.ts.)
//
// Tenants: each entry belongs to one; a tenant may have a share of the budget. Making room
// evicts, least recently used first, the unpinned entries of tenants above their share before
// anyone else's — so a tenant flooding the cache recycles its own entries, not another's.

export type EntryKind = 'session' | 'prefix' | 'active';
/** 'shutdown': the service stops and hands what RAM holds down to the tiers below it. */
export type RemovalReason = 'lru' | 'ttl' | 'deleted' | 'released' | 'shutdown';

/** An entry as the pool's users see it; the pool alone changes its fields. */
export interface PoolEntry<P> {
  readonly kind: EntryKind;
  /** What the entry holds (a session's cache, a prefix block, a running sequence). */
  readonly payload: P;
  /** Sum of the byteLength of the K/V buffers the payload references. */
  readonly bytes: number;
  readonly refs: number;
  readonly lastUsedMs: number;
  readonly createdMs: number;
  /** Whose entry it is (tenantOf(payload); '' when the pool has no tenants). */
  readonly tenant: string;
}

class Entry<P> implements PoolEntry<P> {
  constructor(
    readonly kind: EntryKind,
    readonly payload: P,
    public bytes: number,
    public refs: number,
    public lastUsedMs: number,
    readonly createdMs: number,
    readonly tenant: string,
  ) {}
}

/** A tenant's bytes in the pool, and the share of the budget past which its entries go first. */
interface TenantUse {
  bytes: number;
  evictableBytes: number;
  share: number;
}

export interface KvPoolOptions<P> {
  maxBytes: number;
  /** Called after an entry leaves the pool, with why. */
  onRemove?: (entry: PoolEntry<P>, reason: RemovalReason) => void;
  /** Called after an entry joins the pool. */
  onAdd?: (entry: PoolEntry<P>) => void;
  /** Milliseconds; must never go backwards (the LRU list is kept in order of last use). */
  now?: () => number;
  /** The tenant an entry belongs to (for shares and per-tenant bytes). */
  tenantOf?: (payload: P) => string;
}

/** Wall-clock milliseconds that never go backwards (a clock step would disorder the LRU list). */
export const monotonicNow = (): number => performance.timeOrigin + performance.now();

export class KvPool<P> {
  readonly maxBytes: number;
  readonly #onRemove: ((entry: PoolEntry<P>, reason: RemovalReason) => void) | undefined;
  readonly #onAdd: ((entry: PoolEntry<P>) => void) | undefined;
  readonly #now: () => number;
  readonly #tenantOf: (payload: P) => string;
  readonly #tenants = new Map<string, TenantUse>();
  readonly #entries = new Set<Entry<P>>();
  /** Unpinned entries in least-recently-used-first order (a Map keeps insertion order; re-insert = move to the end). */
  readonly #lru = new Map<Entry<P>, true>();
  #bytesInUse = 0;
  #evictableBytes = 0;

  constructor(options: KvPoolOptions<P>) {
    const { maxBytes } = options;
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
      throw new RangeError(`maxBytes must be a positive integer (an unbounded pool is a bug), got ${maxBytes}`);
    }
    this.maxBytes = maxBytes;
    this.#onRemove = options.onRemove;
    this.#onAdd = options.onAdd;
    this.#now = options.now ?? monotonicNow;
    this.#tenantOf = options.tenantOf ?? (() => '');
  }

  /** Sets a tenant's share of the budget, in (0, 1]; a tenant never given one has all of it. */
  setShare(tenant: string, share: number): void {
    if (!(share > 0 && share <= 1)) throw new RangeError(`a share must be in (0, 1], got ${share}`);
    this.#tenant(tenant).share = share;
  }

  /** Bytes in use by tenant (pinned and evictable), for tenants holding any. */
  tenantBytes(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [tenant, use] of this.#tenants) if (use.bytes > 0) out[tenant] = use.bytes;
    return out;
  }

  get bytesInUse(): number {
    return this.#bytesInUse;
  }

  /** Bytes that eviction could free now (entries with no pins). */
  get evictableBytes(): number {
    return this.#evictableBytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  has(entry: PoolEntry<P>): boolean {
    return this.#entries.has(entry as Entry<P>);
  }

  entries(): IterableIterator<PoolEntry<P>> {
    return this.#entries.values();
  }

  /** Unpinned entries, least recently used first. */
  lruOrder(): PoolEntry<P>[] {
    return [...this.#lru.keys()];
  }

  /**
   * Frees least-recently-used unpinned entries until `bytes` more fit. Returns false — and
   * evicts nothing — when even evicting every unpinned entry would not be enough.
   */
  makeRoom(bytes: number): boolean {
    return this.#makeRoom(bytes, undefined);
  }

  /** makeRoom that never evicts `keep` (an entry growing in place counts as if pinned). */
  #makeRoom(bytes: number, keep: Entry<P> | undefined): boolean {
    checkBytes(bytes);
    const kept = keep && keep.refs === 0 ? keep.bytes : 0;
    if (this.#bytesInUse - this.#evictableBytes + kept + bytes > this.maxBytes) return false;
    if (this.#bytesInUse + bytes > this.maxBytes) this.#evictOverShare(bytes, keep);
    // Runs on every decode step (a running cache grows): iterate the LRU map in place — a Map
    // tolerates deleting the entry being visited — rather than copying thousands of keys.
    for (const entry of this.#lru.keys()) {
      if (this.#bytesInUse + bytes <= this.maxBytes) break;
      if (entry !== keep) this.remove(entry, 'lru');
    }
    return true;
  }

  /**
   * Adds an entry with `refs` pins (0 = evictable at once). Returns undefined when it does
   * not fit: call makeRoom first.
   */
  add(kind: EntryKind, payload: P, bytes: number, refs = 0): PoolEntry<P> | undefined {
    checkBytes(bytes);
    if (this.#bytesInUse + bytes > this.maxBytes) return undefined;
    const now = this.#now();
    const entry = new Entry(kind, payload, bytes, refs, now, now, this.#tenantOf(payload));
    this.#entries.add(entry);
    this.#bytesInUse += bytes;
    this.#tenant(entry.tenant).bytes += bytes;
    if (refs === 0) this.#toLru(entry);
    this.#onAdd?.(entry);
    return entry;
  }

  /** Changes an entry's size (a running sequence's cache grows each step). False if the growth does not fit. */
  resize(handle: PoolEntry<P>, bytes: number): boolean {
    checkBytes(bytes);
    const entry = this.#member(handle);
    const delta = bytes - entry.bytes;
    if (delta > 0 && !this.#makeRoom(delta, entry)) return false;
    entry.bytes = bytes;
    this.#bytesInUse += delta;
    const use = this.#tenant(entry.tenant);
    use.bytes += delta;
    if (entry.refs === 0) {
      this.#evictableBytes += delta;
      use.evictableBytes += delta;
    }
    return true;
  }

  pin(handle: PoolEntry<P>): void {
    const entry = this.#member(handle);
    if (entry.refs++ === 0) {
      this.#lru.delete(entry);
      this.#evictableBytes -= entry.bytes;
      this.#tenant(entry.tenant).evictableBytes -= entry.bytes;
    }
    entry.lastUsedMs = this.#now();
  }

  unpin(handle: PoolEntry<P>): void {
    const entry = this.#member(handle);
    if (entry.refs === 0) throw new Error('unpin of an entry with no pins');
    entry.lastUsedMs = this.#now();
    if (--entry.refs === 0) this.#toLru(entry);
  }

  /** Marks an entry most recently used. */
  touch(handle: PoolEntry<P>): void {
    const entry = this.#member(handle);
    entry.lastUsedMs = this.#now();
    if (entry.refs === 0) {
      this.#lru.delete(entry);
      this.#lru.set(entry, true);
    }
  }

  /** Removes an entry whatever its pins ('deleted' by a user, 'released' by its owner) or an unpinned one ('lru', 'ttl'). */
  remove(handle: PoolEntry<P>, reason: RemovalReason): void {
    const entry = handle as Entry<P>;
    if (!this.#entries.has(entry)) return;
    if ((reason === 'lru' || reason === 'ttl' || reason === 'shutdown') && entry.refs > 0) throw new Error(`cannot ${reason}-evict a pinned entry`);
    this.#entries.delete(entry);
    const use = this.#tenant(entry.tenant);
    if (this.#lru.delete(entry)) {
      this.#evictableBytes -= entry.bytes;
      use.evictableBytes -= entry.bytes;
    }
    this.#bytesInUse -= entry.bytes;
    use.bytes -= entry.bytes;
    this.#onRemove?.(entry, reason);
  }

  /**
   * Evicts unpinned entries of `kind` idle since before `cutoffMs`. Returns how many. The LRU
   * list is in order of last use, so the walk stops at the first entry used since the cutoff
   * (it runs at every admission).
   */
  expire(kind: EntryKind, cutoffMs: number): number {
    let n = 0;
    for (const entry of this.#lru.keys()) {
      if (entry.lastUsedMs >= cutoffMs) break;
      if (entry.kind === kind) {
        this.remove(entry, 'ttl');
        n++;
      }
    }
    return n;
  }

  #toLru(entry: Entry<P>): void {
    this.#lru.set(entry, true);
    this.#evictableBytes += entry.bytes;
    this.#tenant(entry.tenant).evictableBytes += entry.bytes;
  }

  #tenant(name: string): TenantUse {
    let use = this.#tenants.get(name);
    if (!use) {
      use = { bytes: 0, evictableBytes: 0, share: 1 };
      this.#tenants.set(name, use);
    }
    return use;
  }

  #overShare(use: TenantUse): boolean {
    return use.bytes > use.share * this.maxBytes;
  }

  /** First pass of making room: evicts (LRU first) only entries of tenants above their share, while any has some. */
  #evictOverShare(bytes: number, keep: Entry<P> | undefined): void {
    const anyOver = (): boolean => {
      for (const use of this.#tenants.values()) if (use.evictableBytes > 0 && this.#overShare(use)) return true;
      return false;
    };
    if (!anyOver()) return;
    for (const entry of this.#lru.keys()) {
      if (this.#bytesInUse + bytes <= this.maxBytes) return;
      if (entry === keep || !this.#overShare(this.#tenant(entry.tenant))) continue;
      this.remove(entry, 'lru');
      if (!anyOver()) return;
    }
  }

  #member(handle: PoolEntry<P>): Entry<P> {
    const entry = handle as Entry<P>;
    if (!this.#entries.has(entry)) throw new Error('entry is not in the pool');
    return entry;
  }
}

function checkBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`bytes must be a non-negative integer, got ${bytes}`);
}
