// Named sessions (`session_id`): a finished request's cache kept under its tenant and name, so
// the next turn prefills only its new tokens. A session is in one of two places: kept in the
// pool (evictable, expires after its TTL), or taken over by the running request that continues
// it (its cache then lives in that request's batch row until the request ends and keeps it again).
import type { CacheCounters, SessionInfo } from './cache-stats.js';
import type { Entry, Match, Pool, Session } from './entries.js';
import type { KvCache } from './kv-cache.js';
import type { LowerTier } from './tiers/lower-tiers.js';

/** A session taken over by the running request that continues it. */
export interface InUseSession {
  readonly id: string;
  readonly tenant: string;
  readonly createdMs: number;
  /** The running request's pool entry: the session's cache as it grows. */
  readonly active: Entry;
  deleted: boolean;
}

export interface SessionMatch extends Match {
  readonly createdMs: number;
}

export class SessionStore {
  readonly #pool: Pool;
  readonly #counters: CacheCounters;
  readonly #now: () => number;
  readonly #bytesPerToken: number;
  readonly #kept = new Map<string, Entry>();
  readonly #inUse = new Map<string, InUseSession>();

  constructor(pool: Pool, counters: CacheCounters, bytesPerToken: number, now: () => number) {
    this.#pool = pool;
    this.#counters = counters;
    this.#bytesPerToken = bytesPerToken;
    this.#now = now;
  }

  /** How much of the kept session `id` starts `promptIds`, within its first `reusable` tokens. */
  match(tenant: string, id: string, promptIds: readonly number[], reusable: number): SessionMatch | undefined {
    const entry = this.#kept.get(sessionKey(tenant, id));
    if (!entry) return undefined;
    const s = session(entry);
    const { tokens, kv, createdMs } = s;
    let n = 0;
    const limit = Math.min(reusable, kv.length);
    while (n < limit && tokens[n] === promptIds[n]) n++;
    return {
      tokens: n,
      possible: reusable,
      sources: [s],
      createdMs,
      // The request takes the session's cache over (no copy when all of it is reused): the
      // pool then counts those bytes once, as the request's, until it is kept again.
      take: () => {
        this.#pool.remove(entry, 'released');
        return n === kv.length ? kv : kv.slice(n);
      },
    };
  }

  /** Marks the session as continued by the running request whose pool entry is `active`. */
  use(tenant: string, id: string, createdMs: number, active: Entry): InUseSession {
    const inUse: InUseSession = { id, tenant, createdMs, active, deleted: false };
    this.#inUse.set(sessionKey(tenant, id), inUse);
    return inUse;
  }

  /**
   * A request naming session `id` ended with its cache `kv` (covering `tokens`; may be a
   * transient batch-row view: what is kept is copied before this returns). `inUse` is set when
   * that request had taken the session over.
   */
  finish(tenant: string, id: string, inUse: InUseSession | undefined, final: { kv: KvCache; tokens: readonly number[] } | undefined): void {
    const key = sessionKey(tenant, id);
    if (inUse && this.#inUse.get(key) === inUse) this.#inUse.delete(key);
    if (inUse?.deleted) {
      // Deleted while its request ran: what it would have kept is dropped now.
      this.#counters.evicted('deleted', final?.kv.byteLength ?? 0);
      return;
    }
    if (!final || final.kv.length === 0) return;
    // Another request holds this session: it writes the session back when it ends.
    const holder = this.#inUse.get(key);
    if (!inUse && holder && !holder.deleted) return;
    this.#keep(tenant, id, final.kv, final.tokens.slice(0, final.kv.length), inUse?.createdMs);
  }

  /** The (tenant, id) a session key names. */
  static parseKey(key: string): { tenant: string; id: string } | undefined {
    try {
      const parsed: unknown = JSON.parse(key);
      return Array.isArray(parsed) && parsed.length === 2 && parsed.every((x) => typeof x === 'string')
        ? { tenant: parsed[0] as string, id: parsed[1] as string }
        : undefined;
    } catch {
      return undefined;
    }
  }

  list(tenant: string): SessionInfo[] {
    const running = [...this.#inUse.values()].filter((s) => s.tenant === tenant && !s.deleted).map((s) => this.#inUseInfo(s));
    const kept = [...this.#kept.values()].filter((e) => session(e).tenant === tenant).map((e) => info(e));
    return [...running, ...kept];
  }

  get(tenant: string, id: string): SessionInfo | undefined {
    const key = sessionKey(tenant, id);
    const inUse = this.#inUse.get(key);
    if (inUse && !inUse.deleted) return this.#inUseInfo(inUse);
    const e = this.#kept.get(key);
    return e && info(e);
  }

  delete(tenant: string, id: string): boolean {
    const key = sessionKey(tenant, id);
    const inUse = this.#inUse.get(key);
    if (inUse && !inUse.deleted) {
      inUse.deleted = true;
      return true;
    }
    const e = this.#kept.get(key);
    if (e) this.#pool.remove(e, 'deleted');
    return e !== undefined;
  }

  /** Whether session `id` of `tenant` is in RAM (kept, or continued by a running request). */
  has(tenant: string, id: string): boolean {
    const key = sessionKey(tenant, id);
    return this.#kept.has(key) || this.#inUse.has(key);
  }

  /** Brings a session back from a lower tier, unless RAM has it (RAM's is as new or newer). False if it does not fit. */
  adopt(tenant: string, id: string, tokens: readonly number[], kv: KvCache, createdMs: number, from: LowerTier): boolean {
    if (this.has(tenant, id) || !this.#pool.makeRoom(kv.byteLength)) return false;
    const s: Session = { id, tenant, tokens, kv, createdMs, promotedFrom: from };
    this.#kept.set(sessionKey(tenant, id), this.#pool.add('session', { kind: 'session', session: s }, kv.byteLength)!);
    return true;
  }

  /** The pool removed `entry` (evicted, expired, deleted or taken over): forget it. */
  removed(entry: Entry): void {
    const p = entry.payload;
    if (p.kind !== 'session') return;
    const key = sessionKey(p.session.tenant, p.session.id);
    if (this.#kept.get(key) === entry) this.#kept.delete(key);
  }

  #keep(tenant: string, id: string, kv: KvCache, tokens: readonly number[], createdMs?: number): void {
    const key = sessionKey(tenant, id);
    const old = this.#kept.get(key);
    if (old) this.#pool.remove(old, 'released');
    if (!this.#pool.makeRoom(kv.byteLength)) return;
    // A view of a batch row is copied here, the one copy a finished sequence costs.
    const s: Session = { id, tenant, tokens, kv: kv.own(), createdMs: createdMs ?? this.#now() };
    this.#kept.set(key, this.#pool.add('session', { kind: 'session', session: s }, kv.byteLength)!);
  }

  /** A session whose request is running: its cache is the request's, growing each step. */
  #inUseInfo(s: InUseSession): SessionInfo {
    const { bytes, lastUsedMs } = s.active;
    return { id: s.id, tokens: bytes / this.#bytesPerToken, bytes, created: seconds(s.createdMs), last_used: seconds(lastUsedMs), pinned: true, tier: 'ram' };
  }
}

const seconds = (ms: number): number => Math.floor(ms / 1000);

function session(e: Entry): Session {
  if (e.payload.kind !== 'session') throw new Error('not a session entry');
  return e.payload.session;
}

function info(e: Entry): SessionInfo {
  const s = session(e);
  return { id: s.id, tokens: s.kv.length, bytes: e.bytes, created: seconds(s.createdMs), last_used: seconds(e.lastUsedMs), pinned: false, tier: 'ram' };
}

export function sessionKey(tenant: string, id: string): string {
  // JSON keeps (tenant, id) pairs apart whatever characters either contains.
  return JSON.stringify([tenant, id]);
}
