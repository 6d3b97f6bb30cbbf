// The cache manager's side of the tiers below RAM: what RAM evicts is demoted instead of
// dropped, what a user deletes or lets expire goes from every tier, and before a request is
// admitted the blocks or session its prompt could reuse are fetched back from the tiers —
// within the same admission rules, so the RAM budget is never exceeded.
import type { CacheCounters, SessionInfo } from '../cache-stats.js';
import type { BlockStore } from '../block-store.js';
import type { Entry } from '../entries.js';
import { KvCache } from '../kv-cache.js';
import type { KvLayout } from '../layout.js';
import type { RemovalReason } from '../pool.js';
import { chainKeys } from '../prefix-index.js';
import { SessionStore, sessionKey } from '../session-store.js';
import type { LowerTiers, PromotedEntry } from './lower-tiers.js';

export interface TierRequest {
  tenant: string;
  sessionId?: string | undefined;
  promptIds: readonly number[];
}

export class TierLink {
  readonly #tiers: LowerTiers;
  readonly #blocks: BlockStore;
  readonly #sessions: SessionStore;
  readonly #counters: CacheCounters;
  readonly #layout: KvLayout;

  constructor(tiers: LowerTiers, blocks: BlockStore, sessions: SessionStore, counters: CacheCounters, layout: KvLayout) {
    this.#tiers = tiers;
    this.#blocks = blocks;
    this.#sessions = sessions;
    this.#counters = counters;
    this.#layout = layout;
  }

  /** RAM let `entry` go: LRU-evicted caches go down a tier; deleted or expired sessions leave every tier. */
  removed(entry: Entry, reason: RemovalReason): void {
    const p = entry.payload;
    const down = reason === 'lru' || reason === 'shutdown';
    // At shutdown everything goes down, however far behind the tiers are.
    const all = reason === 'shutdown';
    if (p.kind === 'prefix' && down) {
      const { key, tenant, tokens, tensors } = p.block;
      // Not owned: a running request may still read this block's arrays (block-store.ts).
      this.#tiers.demote({ kind: 'prefix', key, tenant, tokens, createdMs: entry.createdMs, tensors }, false, all);
    } else if (p.kind === 'session') {
      const { id, tenant, tokens, kv, createdMs } = p.session;
      const key = sessionKey(tenant, id);
      if (down) this.#tiers.demote({ kind: 'session', key, tenant, tokens: Int32Array.from(tokens), createdMs, tensors: kv.tensors }, true, all);
      else if (reason === 'ttl' || reason === 'deleted') this.#tiers.delete([key]);
    }
  }

  /** RAM took `entry`: with a shared tier, new prefix blocks and every session turn are published (not what just came from it). */
  added(entry: Entry): void {
    if (!this.#tiers.remote) return;
    const p = entry.payload;
    if (p.kind === 'prefix' && p.block.promotedFrom !== 'remote') {
      const { key, tenant, tokens, tensors } = p.block;
      this.#tiers.publish({ kind: 'prefix', key, tenant, tokens, createdMs: entry.createdMs, tensors });
    } else if (p.kind === 'session' && p.session.promotedFrom !== 'remote') {
      const { id, tenant, tokens, kv, createdMs } = p.session;
      this.#tiers.publish({ kind: 'session', key: sessionKey(tenant, id), tenant, tokens: Int32Array.from(tokens), createdMs, tensors: kv.tensors });
    }
  }

  /** Whether session `id` lives below RAM (deleting it there is still a deletion). */
  deleteSession(tenant: string, id: string): boolean {
    const key = sessionKey(tenant, id);
    if (!this.#tiers.where(key)) return false;
    this.#tiers.delete([key]);
    return true;
  }

  /**
   * What to fetch before admitting `request`: its session if RAM has none and a tier does, else
   * the blocks of its prompt's chain that RAM lacks and a tier holds, up to the first block
   * found nowhere. Empty when the tiers hold nothing it could use (no round trip then).
   */
  plan(request: TierRequest, blockSize: number): string[] {
    const { tenant, sessionId, promptIds } = request;
    const remote = this.#tiers.remote;
    const keys: string[] = [];
    if (sessionId !== undefined && !this.#sessions.has(tenant, sessionId)) {
      const key = sessionKey(tenant, sessionId);
      if (this.#tiers.where(key)) return [key];
      // Another replica may have served this session's last turn.
      if (remote) keys.push(key);
    }
    for (const key of chainKeys(tenant, promptIds, blockSize, promptIds.length - 1)) {
      if (this.#blocks.has(key)) continue;
      // The shared tier has no local index: every block RAM lacks is looked up there.
      if (!remote && !this.#tiers.where(key)) break;
      keys.push(key);
    }
    return keys;
  }

  /** Fetches what plan() named and brings it back to RAM as far as the budget allows. */
  async fetch(request: TierRequest, keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    const entries = await this.#tiers.fetch(keys);
    this.adopt(request, entries);
  }

  adopt(request: TierRequest, entries: readonly PromotedEntry[]): void {
    const blocks = entries
      .filter((e) => e.kind === 'prefix')
      .map((e) => ({ key: e.key, tenant: request.tenant, tokens: e.tokens, tensors: e.tensors, from: e.tier }));
    const adopted = this.#blocks.adopt(blocks);
    for (const b of blocks.slice(0, adopted)) this.#counters.promoted(b.from);
    for (const e of entries) {
      if (e.kind !== 'session') continue;
      const owner = SessionStore.parseKey(e.key);
      // A key names its tenant: another tenant's session is never adopted for this request.
      if (!owner || owner.tenant !== request.tenant) continue;
      const kv = KvCache.of(this.#layout, e.tensors, e.tokens.length);
      if (this.#sessions.adopt(owner.tenant, owner.id, Array.from(e.tokens), kv, e.createdMs, e.tier)) this.#counters.promoted(e.tier);
    }
  }

  /** The tenant's sessions that live only below RAM. */
  sessions(tenant: string): SessionInfo[] {
    const out: SessionInfo[] = [];
    for (const e of this.#tiers.entries('session')) {
      const owner = SessionStore.parseKey(e.key);
      if (!owner || owner.tenant !== tenant || this.#sessions.has(tenant, owner.id)) continue;
      const seconds = Math.floor(e.createdMs / 1000);
      out.push({ id: owner.id, tokens: e.tokens, bytes: e.bytes, created: seconds, last_used: seconds, pinned: false, tier: e.tier });
    }
    return out;
  }
}
