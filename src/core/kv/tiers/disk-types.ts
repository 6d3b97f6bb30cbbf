// The disk tier's options, figures, index rows and the store's internal records (the store itself is disk-store.ts).
import type { EntryKind } from '../entry/format.js';
import type { DiskRejectReason } from './disk-files.js';

export interface DiskStoreOptions {
  /** Bytes of entry files on disk at most, counting writes queued and in flight. */
  maxBytes: number;
  fingerprint: Uint8Array;
  /** Each file not served (found bad at open or on read), once, after it is removed. */
  onReject?: (reason: DiskRejectReason, file: string, detail: string) => void;
  /** Each key that leaves the index (evicted, deleted, replaced by nothing, found bad). */
  onRemove?: (key: string) => void;
  /** How long each file took to write (temp file, rename), in seconds. */
  onWrite?: (seconds: number) => void;
  /** Queued writes hold their bytes in memory: past this many bytes the oldest are dropped. */
  maxPendingBytes?: number;
  /**
   * fsync each file before its rename. Off by default: a process crash loses nothing the
   * kernel has, and after a power loss a torn file fails its checksum and is never served;
   * this is a cache, so the durability an fsync buys is not worth a journal commit per entry.
   */
  fsync?: boolean;
  /** Where a read puts a file of `size` bytes (prefaulted.ts); a new buffer when unset. */
  readBuffer?: (size: number) => Uint8Array;
}

export interface DiskStoreStats {
  entries: number;
  bytes: number;
  pendingWrites: number;
  pendingBytes: number;
  writes: number;
  /** Of those, the writes that took over an evicted entry's file instead of creating one. */
  reusedFiles: number;
  hits: number;
  misses: number;
  evictions: number;
  evictedBytes: number;
  /** Queued writes dropped past maxPendingBytes, and puts larger than the whole budget. */
  dropped: { pending: number; oversize: number };
  rejected: Record<DiskRejectReason, number>;
}

/** What the index knows of an entry without reading it. */
export interface DiskEntryInfo {
  key: string;
  kind: EntryKind;
  tokens: number;
  createdMs: number;
  bytes: number;
}

type State = 'pending' | 'writing' | 'stored' | 'gone';

/** DiskStore's index entry. */
export interface Item {
  readonly key: string;
  readonly name: string;
  readonly bytes: number;
  readonly kind: EntryKind;
  readonly tokens: number;
  readonly createdMs: number;
  state: State;
  /** The entry while it waits for (or is in) its write. */
  data: Uint8Array | undefined;
}

/** An operation of DiskStore's writer; a write's `reuse` is the file of an entry it evicted, which it takes over. */
export type Op = { kind: 'write'; item: Item; reuse?: string } | { kind: 'unlink'; name: string } | { kind: 'touch'; name: string; at: Date };
