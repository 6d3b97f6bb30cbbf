// The prefix-block store: finished requests' caches kept as hash-chained blocks in the pool
// (prefix-index.ts), and the longest chain of them a new prompt can start from.
//
// Blocks a running request reads stay evictable: the request's own pool entry counts those
// bytes from admission (its KvCache stands for the blocks it reads), and the first thing the
// step loop does is copy them into the request's batch row. An evicted block's memory thus
// lives on, accounted once as the request's, until that copy; the budget holds either way.
// Pinning them too would reserve the same bytes twice.
import type { Entry, Match, Pool } from './entries.js';
import { KvCache } from './kv-cache.js';
import type { KvData, KvLayout } from './layout.js';
import { type PrefixBlock, chainKeys, cutBlock, sameTokens } from './prefix-index.js';
import type { LowerTier } from './tiers/lower-tiers.js';

export class BlockStore {
  readonly blockSize: number;
  readonly #layout: KvLayout;
  readonly #pool: Pool;
  readonly #blocks = new Map<string, Entry>();

  constructor(pool: Pool, layout: KvLayout, blockSize: number) {
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError('blockSize must be a positive integer');
    this.#pool = pool;
    this.#layout = layout;
    this.blockSize = blockSize;
  }

  get size(): number {
    return this.#blocks.size;
  }

  /** Whether the block of `key` is in RAM. */
  has(key: string): boolean {
    return this.#blocks.has(key);
  }

  /**
   * Brings blocks back from a lower tier, in chain order, as far as the budget allows (they
   * are evictable at once, like any kept block; the chain is pinned while it is added).
   */
  adopt(blocks: readonly { key: string; tenant: string; tokens: Int32Array; tensors: KvData[]; from: LowerTier }[]): number {
    const chain: Entry[] = [];
    for (const b of blocks) {
      if (this.#blocks.has(b.key) || b.tokens.length !== this.blockSize) break;
      const bytes = b.tensors.reduce((sum, t) => sum + t.byteLength, 0);
      if (!this.#pool.makeRoom(bytes)) break;
      const block: PrefixBlock = { key: b.key, tenant: b.tenant, tokens: b.tokens, tensors: b.tensors, promotedFrom: b.from };
      const entry = this.#pool.add('prefix', { kind: 'prefix', block }, bytes, 1)!;
      this.#blocks.set(b.key, entry);
      chain.push(entry);
    }
    for (let i = chain.length - 1; i >= 0; i--) this.#pool.unpin(chain[i]!);
    return chain.length;
  }

  /** The longest run of stored blocks that starts `promptIds`, within its first `reusable` tokens. */
  match(tenant: string, promptIds: readonly number[], reusable: number): Match {
    const keys = chainKeys(tenant, promptIds, this.blockSize, reusable);
    const entries: Entry[] = [];
    for (const [i, key] of keys.entries()) {
      const e = this.#blocks.get(key);
      if (!e || !sameTokens(block(e), promptIds, i * this.blockSize)) break;
      entries.push(e);
    }
    const tokens = entries.length * this.blockSize;
    return {
      tokens,
      possible: keys.length * this.blockSize,
      sources: entries.map((e) => block(e)),
      take: () => {
        // Touched tail first: parents stay more recent than their children.
        for (let i = entries.length - 1; i >= 0; i--) this.#pool.touch(entries[i]!);
        if (tokens === 0) return KvCache.empty(this.#layout);
        // Not joined here: a prompt prefilled in its batch row copies the blocks straight in.
        return KvCache.ofBlocks(
          this.#layout,
          entries.map((e) => block(e).tensors),
          this.blockSize,
        );
      },
    };
  }

  /** Keeps every full block of `kv` (which covers `tokens`) that is not stored yet, as far as the budget allows. */
  keep(tenant: string, kv: KvCache, tokens: readonly number[]): void {
    const keys = chainKeys(tenant, tokens, this.blockSize, kv.length);
    // The chain is pinned while it is built so that making room for a new block never
    // evicts one of its own parents.
    const chain: Entry[] = [];
    for (const [i, key] of keys.entries()) {
      const start = i * this.blockSize;
      const existing = this.#blocks.get(key);
      if (existing && sameTokens(block(existing), tokens, start)) {
        this.#pool.pin(existing);
        chain.push(existing);
        continue;
      }
      const tensors = cutBlock(kv, start, this.blockSize);
      const bytes = tensors.reduce((sum, t) => sum + t.byteLength, 0);
      // A block that does not fit ends the chain: later blocks are unreachable without it.
      if (!this.#pool.makeRoom(bytes)) break;
      if (existing) this.#pool.remove(existing, 'released');
      const b: PrefixBlock = { key, tenant, tokens: Int32Array.from(tokens.slice(start, start + this.blockSize)), tensors };
      const entry = this.#pool.add('prefix', { kind: 'prefix', block: b }, bytes, 1)!;
      this.#blocks.set(key, entry);
      chain.push(entry);
    }
    // Unpin the tail first so parents are more recently used than their children: LRU then
    // evicts a chain from its end and never strands a block behind an evicted parent.
    for (let i = chain.length - 1; i >= 0; i--) this.#pool.unpin(chain[i]!);
  }

  /** The pool removed `entry` (evicted or replaced): forget it. */
  removed(entry: Entry): void {
    const p = entry.payload;
    if (p.kind === 'prefix' && this.#blocks.get(p.block.key) === entry) this.#blocks.delete(p.block.key);
  }
}

function block(e: Entry): PrefixBlock {
  if (e.payload.kind !== 'prefix') throw new Error('not a prefix entry');
  return e.payload.block;
}
