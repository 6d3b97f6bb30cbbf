// Automatic prefix caching: full blocks of BLOCK tokens, each keyed by a hash chained over
// every block before it (and the tenant), as vLLM does:
//
//   key(b0) = H(tenant, tokens[0..16))     key(b1) = H(key(b0), tokens[16..32))  …
//
// Why hash-chained blocks rather than a radix tree (SGLang): a block's key alone names its
// whole prefix, so lookup is one map probe per block and eviction can take any unpinned
// block without tree surgery; blocks are fixed-size pool entries, so accounting and LRU stay
// uniform. The cost is granularity: at most BLOCK-1 prompt tokens are recomputed. Tokens are
// compared on every hit, so a hash collision can never serve another prompt's cache.
import { createHash } from 'node:crypto';
import type { KvCache } from './kv-cache.js';
import type { LowerTier } from './tiers/lower-tiers.js';
import { type KvData, allocKv } from './layout.js';

export interface PrefixBlock {
  readonly key: string;
  /** Whose chain it is (the key already folds it in; the tiers below RAM record it). */
  readonly tenant: string;
  /** Set on a block brought back from a lower tier, until a request reads it: where it came from. */
  promotedFrom?: LowerTier | undefined;
  /** This block's own tokens (BLOCK of them). */
  readonly tokens: Int32Array;
  /** 2 × layers tensors [kv_heads, blockSize, head_dim]: this block's keys and values only. */
  readonly tensors: KvData[];
}

export function blockKey(parentKey: string, tokens: ArrayLike<number>): string {
  const h = createHash('sha256').update(parentKey);
  h.update(new Uint8Array(Int32Array.from(tokens as ArrayLike<number>).buffer));
  return h.digest('base64url').slice(0, 22);
}

/** The tenant's root key: folding it into every chain keeps tenants' caches apart. */
export function rootKey(tenant: string): string {
  return createHash('sha256').update(`kvserve-tenant\u0000${tenant}`).digest('base64url').slice(0, 22);
}

/** Keys of every full block of `tokens` (up to `maxTokens`), chained from the tenant's root. */
export function chainKeys(tenant: string, tokens: readonly number[], blockSize: number, maxTokens = tokens.length): string[] {
  const keys: string[] = [];
  let parent = rootKey(tenant);
  for (let start = 0; start + blockSize <= maxTokens; start += blockSize) {
    parent = blockKey(parent, tokens.slice(start, start + blockSize));
    keys.push(parent);
  }
  return keys;
}

/**
 * Copies tokens [start, start+blockSize) of a cache into a block's own tensors.
 * They share one allocation (views of one buffer): a full pool holds thousands of blocks, and
 * one ArrayBuffer per block instead of one per tensor makes each garbage collection that much
 * cheaper.
 */
export function cutBlock(kv: KvCache, start: number, blockSize: number): KvData[] {
  const { kvHeads, headDim, dtype, layers } = kv.layout;
  const size = kvHeads * blockSize * headDim;
  const slab = allocKv(dtype, 2 * layers * size);
  return Array.from({ length: 2 * layers }, (_, i) => {
    const dst = slab.subarray(i * size, (i + 1) * size);
    for (let h = 0; h < kvHeads; h++) dst.set(kv.headSlice(i, h, start, blockSize), h * blockSize * headDim);
    return dst;
  });
}

export function sameTokens(block: PrefixBlock, tokens: readonly number[], start: number): boolean {
  for (let i = 0; i < block.tokens.length; i++) if (block.tokens[i] !== tokens[start + i]) return false;
  return true;
}
