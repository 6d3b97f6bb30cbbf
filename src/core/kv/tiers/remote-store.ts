// The shared tier: entries in a Redis (or Valkey) server that every replica reads and writes,
// in the disk tier's format (fingerprinted, checksummed; src/core/kv/entry/format.ts). Redis
// is a cache here, never a dependency: a lookup that does not answer within the timeout is a
// miss, writes are fire-and-forget with a byte bound, and while the server is down every call
// fails at once (no offline queue) until the client reconnects. Redis's own `maxmemory` with an
// LRU policy bounds what it keeps (docs/deployment.md).
import { Redis } from 'ioredis';
import { type Entry, decodeEntry, isRejected } from '../entry/format.js';

export type RemoteOp = 'get' | 'set' | 'del' | 'connect';
export const REMOTE_OPS: readonly RemoteOp[] = ['get', 'set', 'del', 'connect'];

const SKIP_AFTER_TIMEOUT_MS = 1000;

export interface RemoteStoreOptions {
  url: string;
  fingerprint: Uint8Array;
  /** A lookup slower than this is a miss. */
  timeoutMs: number;
  /** Bytes of writes sent and not yet acknowledged, at most: beyond it a write is dropped. */
  maxPendingBytes: number;
}

export interface RemoteStats {
  connected: boolean;
  errors: Record<RemoteOp, number>;
  bytes: { sent: number; received: number };
  /** Writes not sent: too many bytes were in flight. */
  dropped: number;
  /** Entries found but not served: another model or format, or damaged. */
  rejected: number;
}

export class RemoteStore {
  readonly #reader: Redis;
  readonly #writer: Redis;
  readonly #timeoutMs: number;
  readonly #prefix: string;
  readonly #fingerprint: Uint8Array;
  readonly #maxPendingBytes: number;
  #pendingBytes = 0;
  #closed = false;
  /** After a lookup timed out, lookups are misses at once until then: a hung Redis costs one timeout per second, not one per request. */
  #skipUntil = 0;
  readonly #stats: Omit<RemoteStats, 'connected'> = {
    errors: { get: 0, set: 0, del: 0, connect: 0 },
    bytes: { sent: 0, received: 0 },
    dropped: 0,
    rejected: 0,
  };

  constructor(options: RemoteStoreOptions) {
    this.#fingerprint = options.fingerprint;
    this.#maxPendingBytes = options.maxPendingBytes;
    // Keys are namespaced by the model fingerprint, so replicas of another model never even
    // look at these entries (the header's fingerprint is still checked on every read).
    this.#prefix = `kvserve:${Buffer.from(options.fingerprint).toString('hex').slice(0, 16)}:`;
    // Two connections: a lookup never waits behind megabytes of publishes on the same socket.
    this.#reader = this.#connect(options.url, options.timeoutMs);
    this.#writer = this.#connect(options.url, options.timeoutMs);
    this.#timeoutMs = options.timeoutMs;
  }

  #connect(url: string, timeoutMs: number): Redis {
    const redis = new Redis(url, {
      // Fail fast while disconnected instead of queueing lookups a request waits for.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: Math.max(1000, timeoutMs),
      // Reconnect forever, backing off to 1 s: the shared tier returns when Redis does.
      retryStrategy: (attempt) => Math.min(50 * attempt, 1000),
    });
    // Without a listener ioredis prints every connection error; they are counted instead.
    redis.on('error', () => {
      this.#stats.errors.connect++;
    });
    return redis;
  }

  get connected(): boolean {
    return this.#reader.status === 'ready' && this.#writer.status === 'ready';
  }

  stats(): RemoteStats {
    return { ...this.#stats, connected: this.connected, errors: { ...this.#stats.errors }, bytes: { ...this.#stats.bytes } };
  }

  /** Publishes an encoded entry under `key`; returns at once. False when dropped (not connected, or too much in flight). */
  put(key: string, bytes: Uint8Array): boolean {
    if (this.#closed || !this.connected || this.#pendingBytes + bytes.byteLength > this.#maxPendingBytes) {
      this.#stats.dropped++;
      return false;
    }
    const n = bytes.byteLength;
    this.#pendingBytes += n;
    this.#writer
      .set(this.#prefix + key, Buffer.from(bytes.buffer, bytes.byteOffset, n))
      .then(() => {
        this.#stats.bytes.sent += n;
      })
      .catch(() => {
        this.#stats.errors.set++;
      })
      .finally(() => {
        this.#pendingBytes -= n;
      });
    return true;
  }

  /**
   * The entries of `keys` (undefined where missing, damaged, of another model, or when Redis
   * did not answer in time). One round trip.
   */
  async getMany(keys: readonly string[]): Promise<(Entry | undefined)[]> {
    if (keys.length === 0) return [];
    if (this.#closed || !this.connected || performance.now() < this.#skipUntil) return keys.map(() => undefined);
    let values: (Buffer | null)[];
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('timed out')), this.#timeoutMs);
      });
      values = await Promise.race([this.#reader.mgetBuffer(...keys.map((k) => this.#prefix + k)), timeout]);
    } catch {
      this.#stats.errors.get++;
      this.#skipUntil = performance.now() + SKIP_AFTER_TIMEOUT_MS;
      return keys.map(() => undefined);
    } finally {
      clearTimeout(timer);
    }
    return values.map((v, i) => {
      if (!v) return undefined;
      this.#stats.bytes.received += v.byteLength;
      const entry = decodeEntry(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), this.#fingerprint);
      if (isRejected(entry) || entry.key !== keys[i]) {
        this.#stats.rejected++;
        return undefined;
      }
      return entry;
    });
  }

  delete(keys: readonly string[]): void {
    if (keys.length === 0 || this.#closed || !this.connected) return;
    this.#writer.del(...keys.map((k) => this.#prefix + k)).catch(() => {
      this.#stats.errors.del++;
    });
  }

  /** Waits (a bounded time) for writes in flight, then disconnects. */
  async close(timeoutMs = 2000): Promise<void> {
    this.#closed = true;
    const deadline = Date.now() + timeoutMs;
    while (this.#pendingBytes > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    this.#reader.disconnect();
    this.#writer.disconnect();
  }
}
