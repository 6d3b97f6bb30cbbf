// Tier 2: evicted K/V entries kept in RAM, compressed (int8 or float16), under their own byte
// budget and LRU. Entries are held as encoded entry bytes (entry/format.ts), so demoting one
// to disk or another tier hands over the very bytes held here; taking one back decodes it.
import { type Entry, type EntryKind, decodeEntry, encodeEntry, isRejected } from '../entry/format.js';
import type { KvData, KvLayout } from '../layout.js';
import { type CompressedCodec, decodePayload, encodePayload } from './codec.js';

/** An entry as tier 1 holds it: 2 × layers tensors [kvHeads, tokens, headDim] in the layout's dtype. */
export interface KvEntry {
  kind: EntryKind;
  key: string;
  tenantSalt: Uint8Array;
  tokens: Int32Array;
  createdMs: number;
  tensors: readonly KvData[];
}

/** Why an entry left other than by take or delete: LRU, too big for the budget, or drain(). */
export type EvictReason = 'lru' | 'oversize' | 'drain';

export interface CompressedStoreOptions {
  maxBytes: number;
  codec: CompressedCodec;
  layout: KvLayout;
  fingerprint: Uint8Array;
  /** Receives each evicted entry's encoded bytes (to demote to disk), after the store is consistent again. */
  onEvict?: (key: string, bytes: Uint8Array, reason: EvictReason) => void;
}

export interface CompressedStoreStats {
  puts: number;
  hits: number;
  misses: number;
  evictions: Record<EvictReason, number>;
  evictedBytes: Record<EvictReason, number>;
  /** Entries that failed to decode on take (a bug or memory corruption): dropped, never served. */
  corrupt: number;
}

export class CompressedStore {
  readonly maxBytes: number;
  readonly codec: CompressedCodec;
  readonly layout: KvLayout;
  readonly #fingerprint: Uint8Array;
  readonly #onEvict: CompressedStoreOptions['onEvict'];
  /** Least recently used first (a Map keeps insertion order; re-insert = most recent). */
  readonly #entries = new Map<string, Uint8Array>();
  #bytes = 0;
  readonly #stats: CompressedStoreStats = {
    puts: 0,
    hits: 0,
    misses: 0,
    evictions: { lru: 0, oversize: 0, drain: 0 },
    evictedBytes: { lru: 0, oversize: 0, drain: 0 },
    corrupt: 0,
  };

  constructor(options: CompressedStoreOptions) {
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes <= 0) throw new RangeError(`maxBytes must be a positive integer, got ${options.maxBytes}`);
    this.maxBytes = options.maxBytes;
    this.codec = options.codec;
    this.layout = options.layout;
    this.#fingerprint = options.fingerprint;
    this.#onEvict = options.onEvict;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** Keys, least recently used first. */
  /** Bytes the entry of `key` takes here (0 if absent). */
  sizeOf(key: string): number {
    return this.#entries.get(key)?.byteLength ?? 0;
  }

  keys(): string[] {
    return [...this.#entries.keys()];
  }

  /** Byte size of each held entry, for accounting checks. */
  entrySizes(): number[] {
    return [...this.#entries.values()].map((b) => b.byteLength);
  }

  stats(): CompressedStoreStats {
    const s = this.#stats;
    return { ...s, evictions: { ...s.evictions }, evictedBytes: { ...s.evictedBytes } };
  }

  /**
   * Compresses and keeps an entry as the most recently used, replacing one of the same key and
   * evicting least recently used ones to make room. An entry larger than the whole budget is
   * handed straight to onEvict ('oversize'), so it can still go down a tier.
   */
  put(entry: KvEntry): void {
    const { layers, kvHeads, headDim, dtype } = this.layout;
    const dims = { layers, kvHeads, headDim, tokens: entry.tokens.length };
    const payload = encodePayload(this.codec, entry.tensors, dims, dtype);
    const bytes = encodeEntry({ ...entry, fingerprint: this.#fingerprint, codec: this.codec, dtype, dims, payload });
    this.#stats.puts++;
    this.#remove(entry.key);
    const evicted: [string, Uint8Array, EvictReason][] = [];
    if (bytes.byteLength > this.maxBytes) {
      evicted.push([entry.key, bytes, 'oversize']);
    } else {
      for (const [key, held] of this.#entries) {
        if (this.#bytes + bytes.byteLength <= this.maxBytes) break;
        this.#remove(key);
        evicted.push([key, held, 'lru']);
      }
      this.#entries.set(entry.key, bytes);
      this.#bytes += bytes.byteLength;
    }
    this.#notify(evicted);
  }

  /** Removes the entry and returns it restored to the layout's dtype (a promotion back to tier 1). */
  take(key: string): (KvEntry & { tensors: KvData[] }) | undefined {
    const bytes = this.#entries.get(key);
    if (!bytes) {
      this.#stats.misses++;
      return undefined;
    }
    this.#remove(key);
    const e = decodeEntry(bytes, this.#fingerprint);
    if (isRejected(e) || e.key !== key || e.dtype !== this.layout.dtype) {
      this.#stats.corrupt++;
      return undefined;
    }
    this.#stats.hits++;
    return { kind: e.kind, key: e.key, tenantSalt: e.tenantSalt, tokens: e.tokens, createdMs: e.createdMs, tensors: restore(e) };
  }

  /** Drops an entry without demoting it (its owner deleted it). */
  delete(key: string): boolean {
    return this.#remove(key);
  }

  /** Hands every entry to onEvict ('drain'), oldest first: for a graceful shutdown. */
  drain(): void {
    const all: [string, Uint8Array, EvictReason][] = [...this.#entries].map(([k, b]) => [k, b, 'drain']);
    this.#entries.clear();
    this.#bytes = 0;
    this.#notify(all);
  }

  #remove(key: string): boolean {
    const held = this.#entries.get(key);
    if (!held) return false;
    this.#entries.delete(key);
    this.#bytes -= held.byteLength;
    return true;
  }

  #notify(evicted: [string, Uint8Array, EvictReason][]): void {
    for (const [, bytes, reason] of evicted) {
      this.#stats.evictions[reason]++;
      this.#stats.evictedBytes[reason] += bytes.byteLength;
    }
    for (const [key, bytes, reason] of evicted) this.#onEvict?.(key, bytes, reason);
  }
}

/** The tensors of a decoded entry in its own dtype (codec.ts restores one slab). */
export function restore(e: Entry): KvData[] {
  return decodePayload(e.codec, e.payload, e.dims, e.dtype);
}
