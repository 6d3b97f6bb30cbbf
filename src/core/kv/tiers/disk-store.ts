// Tier 3: entry bytes in files under KV_CACHE_DIR, with their own byte budget and LRU. put()
// never waits: one background writer takes a FIFO of writes (temp file, rename into place)
// and unlinks, so a kill -9 leaves at worst a temp file, removed at the next open, and an
// unlink that makes room always lands before the write it made room for.
// A write that evicts takes over the evicted entry's file rather than unlink it and create one:
// at a full budget, ext4's kernel time per 64 KiB file fell from 550–860 µs to ~60 (docs/benchmarks.md).
import { unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { type Entry, decodeEntry, inspectHeader, isRejected } from '../entry/format.js';
import { type DiskRejectReason, diskReason, fileName, filePath, readEntryFile, scanDir, writeAtomic } from './disk-files.js';
import type { DiskEntryInfo, DiskStoreOptions, DiskStoreStats, Item, Op } from './disk-types.js';

export type { DiskRejectReason } from './disk-files.js';
export type { DiskEntryInfo, DiskStoreOptions, DiskStoreStats } from './disk-types.js';

/** Whether a write of `bytes` may take over `item`'s file: one on disk, no larger (a larger one would, for a moment, exceed the budget). */
const takeable = (item: Item, bytes: number): boolean => item.state === 'stored' && item.bytes <= bytes;

export class DiskStore {
  readonly dir: string;
  readonly maxBytes: number;
  readonly maxPendingBytes: number;
  readonly #fingerprint: Uint8Array;
  readonly #fsync: boolean;
  readonly #onReject: DiskStoreOptions['onReject'];
  readonly #onRemove: DiskStoreOptions['onRemove'];
  readonly #onWrite: DiskStoreOptions['onWrite'];
  readonly #readBuffer: DiskStoreOptions['readBuffer'];
  /** Least recently used first. */
  readonly #items = new Map<string, Item>();
  readonly #queue = new Map<number, Op>();
  readonly #pendingOps = new Map<Item, number>();
  readonly #shards = new Set<string>();
  #nextOp = 0;
  #bytes = 0;
  #pendingBytes = 0;
  #writer: Promise<void> | undefined;
  #closed = false;
  readonly #stats = {
    writes: 0,
    reusedFiles: 0,
    hits: 0,
    misses: 0,
    evictions: 0,
    evictedBytes: 0,
    dropped: { pending: 0, oversize: 0 },
    rejected: { fingerprint: 0, checksum: 0, truncated: 0, io: 0 } as Record<DiskRejectReason, number>,
  };

  private constructor(dir: string, options: DiskStoreOptions) {
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes <= 0) throw new RangeError(`maxBytes must be a positive integer, got ${options.maxBytes}`);
    this.dir = dir;
    this.maxBytes = options.maxBytes;
    this.maxPendingBytes = options.maxPendingBytes ?? 256 << 20;
    this.#fingerprint = options.fingerprint;
    this.#fsync = options.fsync ?? false;
    this.#onReject = options.onReject;
    this.#onRemove = options.onRemove;
    this.#onWrite = options.onWrite;
    this.#readBuffer = options.readBuffer;
  }

  /** Opens (creating) a directory: rebuilds the index from its files, removing every file that must not be served. */
  static async open(dir: string, options: DiskStoreOptions): Promise<DiskStore> {
    const store = new DiskStore(dir, options);
    const { files, rejected } = await scanDir(dir, options.fingerprint);
    for (const r of rejected) store.#reject(r.reason, r.file, r.detail);
    for (const f of files) {
      store.#items.set(f.key, {
        key: f.key,
        name: f.name,
        bytes: f.bytes,
        kind: f.kind,
        tokens: f.tokens,
        createdMs: f.createdMs,
        state: 'stored',
        data: undefined,
      });
      store.#bytes += f.bytes;
    }
    // A smaller budget than last time: the oldest go.
    store.#makeRoom(0);
    await store.flush();
    return store;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get entries(): number {
    return this.#items.size;
  }

  has(key: string): boolean {
    return this.#items.has(key);
  }

  /** Keys, least recently used first. */
  keys(): string[] {
    return [...this.#items.keys()];
  }

  stats(): DiskStoreStats {
    const s = this.#stats;
    return {
      ...s,
      entries: this.#items.size,
      bytes: this.#bytes,
      pendingWrites: this.#pendingOps.size,
      pendingBytes: this.#pendingBytes,
      dropped: { ...s.dropped },
      rejected: { ...s.rejected },
    };
  }

  /**
   * Queues `bytes` (an encoded entry of `key`, now owned by the store) to be written, evicting
   * least recently used entries so the budget holds counting this one. Returns at once; false
   * when closed or larger than the whole budget.
   */
  put(key: string, bytes: Uint8Array): boolean {
    const h = inspectHeader(bytes, this.#fingerprint);
    if (isRejected(h) || h.key !== key || h.totalBytes !== bytes.byteLength)
      throw new Error(`put(${JSON.stringify(key)}): not a valid entry of this key and model`);
    if (this.#closed) return false;
    if (bytes.byteLength > this.maxBytes) {
      this.#stats.dropped.oversize++;
      return false;
    }
    const old = this.#items.get(key);
    let reuse: string | undefined;
    if (old) {
      if (takeable(old, bytes.byteLength)) reuse = old.name;
      this.#discard(old, reuse !== undefined);
    }
    const evicted = this.#makeRoom(bytes.byteLength, reuse === undefined);
    reuse ??= evicted;
    const item: Item = {
      key,
      name: fileName(key),
      bytes: bytes.byteLength,
      kind: h.kind,
      tokens: h.dims.tokens,
      createdMs: h.createdMs,
      state: 'pending',
      data: bytes,
    };
    this.#items.set(key, item);
    this.#bytes += item.bytes;
    this.#pendingBytes += item.bytes;
    this.#enqueue({ kind: 'write', item, ...(reuse === undefined ? {} : { reuse }) });
    for (const [pending] of this.#pendingOps) {
      if (this.#pendingBytes <= this.maxPendingBytes || pending === item) break;
      this.#stats.dropped.pending++;
      this.#discard(pending);
    }
    return true;
  }

  /** The entry's bytes, validated (checksum, fingerprint, key), the caller's own; a bad file is removed, counted and reported. */
  async get(key: string): Promise<Uint8Array | undefined> {
    return (await this.getEntry(key))?.bytes;
  }

  /** Marks `key` used now, as a read does; false if the store does not hold it. */
  keep(key: string): boolean {
    const item = this.#items.get(key);
    if (!item) return false;
    this.#touch(item);
    if (item.state === 'stored') this.#enqueue({ kind: 'touch', name: item.name, at: new Date() });
    return true;
  }

  /** get(), with the entry decoded (as validating it decodes it anyway). */
  async getEntry(key: string): Promise<{ bytes: Uint8Array; entry: Entry } | undefined> {
    const item = this.#items.get(key);
    if (!item) {
      this.#stats.misses++;
      return undefined;
    }
    this.#touch(item);
    if (item.data) {
      // A copy: the caller owns what it gets (the tier thread hands its buffer to the engine,
      // which would leave the queued write with nothing to write).
      const bytes = item.data.slice();
      const e = decodeEntry(bytes, this.#fingerprint);
      if (isRejected(e)) return this.#drop(item, diskReason(e.rejected), e.detail);
      this.#stats.hits++;
      return { bytes, entry: e };
    }
    const path = filePath(this.dir, item.name);
    let bytes: Uint8Array;
    try {
      bytes = readEntryFile(path, item.bytes, this.#readBuffer);
    } catch (err) {
      // Evicted or replaced while we read: a plain miss. Otherwise the file is unreadable.
      if (item.state === 'gone' || this.#items.get(key) !== item) return this.#miss();
      return this.#drop(item, 'io', (err as Error).message);
    }
    const e = decodeEntry(bytes, this.#fingerprint);
    if (isRejected(e)) return this.#drop(item, diskReason(e.rejected), e.detail);
    if (e.key !== key) return this.#drop(item, 'checksum', 'key does not match');
    this.#stats.hits++;
    // Recency survives a restart as the file's mtime (set by the writer, so flush() covers it).
    if (item.state === 'stored') this.#enqueue({ kind: 'touch', name: item.name, at: new Date() });
    return { bytes, entry: e };
  }

  /** What the index knows of one entry. */
  info(key: string): DiskEntryInfo | undefined {
    const item = this.#items.get(key);
    return item && { key, kind: item.kind, tokens: item.tokens, createdMs: item.createdMs, bytes: item.bytes };
  }

  /** The index, least recently used first. */
  list(): DiskEntryInfo[] {
    return [...this.#items.values()].map(({ key, kind, tokens, createdMs, bytes }) => ({ key, kind, tokens, createdMs, bytes }));
  }

  /** Removes an entry (queued or stored). */
  delete(key: string): boolean {
    const item = this.#items.get(key);
    if (!item) return false;
    this.#discard(item);
    return true;
  }

  /** Resolves once every write and unlink queued so far has been done. */
  async flush(): Promise<void> {
    while (this.#writer) await this.#writer;
  }

  /** Stops taking writes and finishes the queued ones (graceful shutdown). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  #miss(): undefined {
    this.#stats.misses++;
    return undefined;
  }

  #drop(item: Item, reason: DiskRejectReason, detail: string): undefined {
    if (this.#items.get(item.key) === item) this.#discard(item);
    this.#reject(reason, join(item.name.slice(0, 2), item.name), detail);
    return this.#miss();
  }

  #reject(reason: DiskRejectReason, file: string, detail: string): void {
    this.#stats.rejected[reason]++;
    this.#onReject?.(reason, file, detail);
  }

  #touch(item: Item): void {
    this.#items.delete(item.key);
    this.#items.set(item.key, item);
  }

  /** Evicts until `bytes` more fit; with `takeFile`, returns the name of the first evicted file, left for the caller's write to take over. */
  #makeRoom(bytes: number, takeFile = false): string | undefined {
    let taken: string | undefined;
    for (const item of this.#items.values()) {
      if (this.#bytes + bytes <= this.maxBytes) break;
      this.#stats.evictions++;
      this.#stats.evictedBytes += item.bytes;
      const take = takeFile && taken === undefined && takeable(item, bytes);
      this.#discard(item, take);
      if (take) taken = item.name;
    }
    return taken;
  }

  /** Takes an item out of the index; its file is unlinked by the writer, in queue order — or, with `keepFile`, taken over by the next write. */
  #discard(item: Item, keepFile = false): void {
    if (this.#items.get(item.key) === item) {
      this.#items.delete(item.key);
      this.#onRemove?.(item.key);
    }
    this.#bytes -= item.bytes;
    const prev = item.state;
    item.state = 'gone';
    if (prev === 'pending') {
      const id = this.#pendingOps.get(item)!;
      const op = this.#queue.get(id);
      // A write that was to take over an evicted file: that file goes, in the write's place.
      if (op?.kind === 'write' && op.reuse !== undefined) this.#queue.set(id, { kind: 'unlink', name: op.reuse });
      else this.#queue.delete(id);
      this.#pendingOps.delete(item);
      this.#pendingBytes -= item.bytes;
      item.data = undefined;
    } else if (prev === 'stored' && !keepFile) {
      this.#enqueue({ kind: 'unlink', name: item.name });
    }
    // 'writing': the writer sees 'gone' after its rename and unlinks the file itself.
  }

  #enqueue(op: Op): number {
    const id = this.#nextOp++;
    this.#queue.set(id, op);
    if (op.kind === 'write') this.#pendingOps.set(op.item, id);
    // (The writer may start at once, before this returns.)
    this.#kick();
    return id;
  }

  #kick(): void {
    if (this.#writer) return;
    // An op queued after the writer's loop ended but before this callback ran is picked up here.
    this.#writer = this.#runWriter().finally(() => {
      this.#writer = undefined;
      if (this.#queue.size > 0) this.#kick();
    });
  }

  async #runWriter(): Promise<void> {
    // A Map iterator also visits entries added while it runs: ops queued during an await.
    for (const [id, op] of this.#queue) {
      this.#queue.delete(id);
      if (op.kind === 'unlink') await unlink(filePath(this.dir, op.name)).catch(() => {});
      // A failed touch only costs LRU precision after a restart.
      else if (op.kind === 'touch') await utimes(filePath(this.dir, op.name), op.at, op.at).catch(() => {});
      else await this.#write(op.item, op.reuse);
    }
  }

  async #write(item: Item, reuse: string | undefined): Promise<void> {
    this.#pendingOps.delete(item);
    this.#pendingBytes -= item.bytes;
    item.state = 'writing';
    const started = performance.now();
    try {
      if (await writeAtomic(this.dir, item.name, item.data!, this.#fsync, this.#shards, reuse)) this.#stats.reusedFiles++;
      this.#stats.writes++;
      this.#onWrite?.((performance.now() - started) / 1000);
    } catch (err) {
      if (item.state === 'writing') {
        this.#discard(item);
        this.#reject('io', join(item.name.slice(0, 2), item.name), `write failed: ${(err as Error).message}`);
      }
      return;
    } finally {
      item.data = undefined;
    }
    if (item.state === 'writing') item.state = 'stored';
    else await unlink(filePath(this.dir, item.name)).catch(() => {});
  }
}
