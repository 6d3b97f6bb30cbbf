// What the KV cache manager needs from the tiers below RAM (compressed RAM, disk, and later a
// shared store): where an entry lives now (a synchronous index, so a miss costs no round
// trip), fetching entries back for a waiting request, demoting what RAM evicts, dropping what
// a user deleted. The tiers run off the step loop (src/workers/tier-thread.ts).
import type { EntryKind } from '../entry/format.js';
import type { KvData } from '../layout.js';

export type LowerTier = 'compressed' | 'disk' | 'remote';
export type Tier = 'ram' | LowerTier;

export interface TierEntryInfo {
  key: string;
  kind: EntryKind;
  /** The fastest tier holding it. */
  tier: LowerTier;
  tokens: number;
  createdMs: number;
  bytes: number;
}

/** An entry leaving RAM: 2 × layers tensors [kv_heads, tokens, head_dim] in the model's dtype. */
export interface DemotedEntry {
  kind: EntryKind;
  /** Block hash, or the session key. */
  key: string;
  tenant: string;
  tokens: Int32Array;
  createdMs: number;
  tensors: readonly KvData[];
}

export interface PromotedEntry extends DemotedEntry {
  tensors: KvData[];
  /** The tier it came from. */
  tier: LowerTier;
}

export interface LowerTiers {
  /** Whether a shared tier exists whose keys the index cannot list (a lookup must ask it). */
  readonly remote: boolean;
  where(key: string): TierEntryInfo | undefined;
  /** Entries of one kind, for listing sessions. */
  entries(kind: EntryKind): Iterable<TierEntryInfo>;
  /**
   * The entries of `keys` found below RAM, in order, stopping at the first one missing. A
   * session key may come first: if it is not found, the rest (blocks) are still looked up.
   */
  fetch(keys: readonly string[]): Promise<PromotedEntry[]>;
  /**
   * Hands an entry evicted from RAM down. `owned`: its tensors' buffers belong to it alone and
   * may be handed over; otherwise they are copied first. False when the tiers are too far
   * behind to take it now (it is dropped) — unless `always` (a graceful shutdown).
   */
  demote(entry: DemotedEntry, owned: boolean, always?: boolean): boolean;
  /** Shares an entry just computed (or updated) with other replicas; its tensors are copied. */
  publish(entry: DemotedEntry): void;
  /** Removes entries from every tier (a user deleted them, or they expired). */
  delete(keys: readonly string[]): void;
}
