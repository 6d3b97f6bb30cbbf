// The tiers below RAM as the engine worker sees them (core/kv/tiers/lower-tiers.ts): a thread
// of their own (tier-worker.ts) does the compressing, encoding and file I/O, and keeps this
// side's index of where each key lives up to date, so a lookup that finds nothing below RAM
// costs no round trip and the step loop never waits for a tier.
import type { EntryKind } from '../core/kv/entry/format.js';
import type { KvData } from '../core/kv/layout.js';
import type { DemotedEntry, LowerTiers, PromotedEntry, TierEntryInfo } from '../core/kv/tiers/lower-tiers.js';
import { WorkerChannel } from './channel.js';
import type { FromTier, TierCalls, TierReady, TierStats, TierWorkerData, ToTier } from './protocol.js';

/** Demotions in flight to the thread, at most: past it RAM's evictions are dropped, not queued without bound. */
const MAX_IN_FLIGHT_BYTES = 64 * 2 ** 20;

export class TierThread implements LowerTiers {
  readonly #channel: WorkerChannel<TierCalls, ToTier, FromTier>;
  readonly #index: Map<string, TierEntryInfo>;
  /** Bytes of demotions posted and not yet processed. */
  #inFlight = 0;
  /** Demotions dropped on this side (the thread too far behind). */
  dropped = 0;
  readonly rejectedAtOpen: Record<string, number>;
  readonly remote: boolean;

  private constructor(channel: WorkerChannel<TierCalls, ToTier, FromTier>, index: Map<string, TierEntryInfo>, ready: TierReady, remote: boolean) {
    this.#channel = channel;
    this.remote = remote;
    this.#index = index;
    this.rejectedAtOpen = ready.rejectedAtOpen;
    for (const e of ready.index) index.set(e.key, e);
  }

  /** Starts the thread: it fingerprints the model, opens the disk tier (rebuilding its index) and reports what it holds. */
  static async start(data: TierWorkerData): Promise<TierThread> {
    const index = new Map<string, TierEntryInfo>();
    let self: TierThread | undefined;
    const pending: FromTier[] = [];
    const apply = (msg: FromTier): void => {
      for (const e of msg.set) index.set(e.key, e);
      for (const key of msg.removed) index.delete(key);
      if (self) self.#inFlight = Math.max(0, self.#inFlight - msg.processedBytes);
    };
    const { channel, ready } = await WorkerChannel.start<TierCalls, TierReady, ToTier, FromTier>({
      name: 'tier thread',
      entry: 'tier-worker',
      workerData: data,
      onMessage: (msg) => (self ? apply(msg) : pending.push(msg)),
    });
    self = new TierThread(channel, index, ready, data.remote !== undefined);
    for (const msg of pending) apply(msg);
    return self;
  }

  get alive(): boolean {
    return this.#channel.alive;
  }

  where(key: string): TierEntryInfo | undefined {
    return this.#index.get(key);
  }

  *entries(kind: EntryKind): Iterable<TierEntryInfo> {
    for (const e of this.#index.values()) if (e.kind === kind) yield e;
  }

  async fetch(keys: readonly string[]): Promise<PromotedEntry[]> {
    if (keys.length === 0 || !this.alive) return [];
    try {
      return await this.#channel.call('fetch', [[...keys]], { timeoutMs: 10_000 });
    } catch {
      // A tier that cannot answer is a miss: the request prefills what it would have fetched.
      return [];
    }
  }

  demote(entry: DemotedEntry, owned: boolean, always = false): boolean {
    return this.#send('demote', entry, owned, always);
  }

  publish(entry: DemotedEntry): void {
    if (this.remote) this.#send('publish', entry, false, false);
  }

  #send(type: ToTier['type'], entry: DemotedEntry, owned: boolean, always: boolean): boolean {
    const bytes = entry.tensors.reduce((sum, t) => sum + t.byteLength, 0);
    if (!this.alive || (!always && this.#inFlight + bytes > MAX_IN_FLIGHT_BYTES)) {
      this.dropped++;
      return false;
    }
    const tensors = owned && entry.tensors.every(ownsBuffer) ? entry.tensors : copyTensors(entry.tensors);
    this.#inFlight += bytes;
    this.#channel.post({ type, entry: { ...entry, tensors }, bytes }, [...new Set(tensors.map((t) => t.buffer as ArrayBuffer))]);
    return true;
  }

  delete(keys: readonly string[]): void {
    if (keys.length === 0 || !this.alive) return;
    for (const key of keys) this.#index.delete(key);
    void this.#channel.call('delete', [[...keys]]).catch(() => {});
  }

  stats(): Promise<TierStats> {
    return this.#channel.call('stats', [], { timeoutMs: 5000 });
  }

  /** Waits for the demotions posted so far and the disk writes they queued (graceful shutdown). */
  async persist(): Promise<void> {
    if (this.alive) await this.#channel.call('persist', [], { timeoutMs: 60_000 });
  }

  close(timeoutMs = 30_000): Promise<number> {
    return this.#channel.close(timeoutMs);
  }
}

const ownsBuffer = (t: KvData): boolean => t.byteOffset === 0 && t.byteLength === t.buffer.byteLength;

/** The tensors copied into one new buffer (views of it), free to hand over. */
function copyTensors(tensors: readonly KvData[]): KvData[] {
  const total = tensors.reduce((n, t) => n + t.length, 0);
  const slab = tensors[0] instanceof Float32Array ? new Float32Array(total) : new Uint16Array(total);
  let at = 0;
  return tensors.map((t) => {
    const view = slab.subarray(at, at + t.length);
    view.set(t);
    at += t.length;
    return view;
  });
}
