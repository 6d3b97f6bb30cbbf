// Tier worker entry (see tier-thread.ts): the tiers below RAM, off the engine's step loop.
// An entry RAM evicts is written through to disk exactly (float32 or float16 as the model
// keeps it) and kept compressed in RAM (int8 or float16); the compressed copy is what a hit
// reads first, the disk copy what survives eviction from it and restarts. Every change of
// where a key lives is reported to the engine, so its lookups need no round trip.
//
//   engine ──demote──▶ encode ─┬─▶ compressed tier (int8, LRU)  ──evicted──▶ (already on disk)
//                              └─▶ disk tier (exact, LRU) ◀─── persist: at graceful shutdown
//   engine ◀──fetch── compressed take │ disk read + validate ──▶ tensors (transferred)
//
// With a shared tier (Redis), new prefix blocks and every session turn are also published
// there, exact, and a fetch asks it for what neither local tier holds (one MGET, bounded by a
// timeout: a slow or absent Redis is a miss, never an error).
import { join } from 'node:path';
import { workerData } from 'node:worker_threads';
import { type EncodableEntry, type Entry, encodeEntry } from '../core/kv/entry/format.js';
import { decodePayload, exactPayloadParts } from '../core/kv/tiers/codec.js';
import { CompressedStore } from '../core/kv/tiers/compressed-store.js';
import { PrefaultedBuffers } from '../core/kv/tiers/prefaulted.js';
import { type DiskRejectReason, DiskStore } from '../core/kv/tiers/disk-store.js';
import { RemoteStore } from '../core/kv/tiers/remote-store.js';
import type { DemotedEntry, PromotedEntry, TierEntryInfo } from '../core/kv/tiers/lower-tiers.js';
import { BucketHistogram, LATENCY_BUCKETS } from '../metrics/buckets.js';
import { modelFingerprint } from '../runtime/fingerprint.js';
import type { FromTier, TierCalls, TierStats, TierWorkerData, ToTier } from './protocol.js';
import { Transfer, fatal, ready, serve } from './serve.js';
import { niceThisThread } from './thread-nice.js';

const data = workerData as TierWorkerData;
const { layout } = data;
const salt = new TextEncoder();
// KV_CACHE_TIER_NICE: below the decode steps, this thread's work stops slowing every step
// (docs/benchmarks.md, tiers), at the cost of its fetches and publications under load.
if (data.nice !== undefined) niceThisThread(data.nice);

try {
  const fingerprint = await modelFingerprint({ onnxPath: data.onnxPath, tokenizerPath: data.tokenizerPath, layout });
  const changed = new Set<string>();
  const meta = new Map<string, Omit<TierEntryInfo, 'tier' | 'bytes'>>();
  const demotions: Record<string, number> = {};
  const count = (route: string) => {
    demotions[route] = (demotions[route] ?? 0) + 1;
  };
  let dropped = 0;
  const rejectedAtOpen: Record<string, number> = {};
  const writes = new BucketHistogram(LATENCY_BUCKETS);
  // The read reserve (KV_CACHE_DISK_READ_RESERVE_BYTES): half for blocks read ahead at start,
  // half for prefaulted read buffers (prefaulted.ts).
  const halfReserve = Math.floor((data.disk?.readReserveBytes ?? 0) / 2);
  const reserve = new PrefaultedBuffers(halfReserve);
  /** Prefix blocks read (and validated) ahead at start, until a fetch takes them or the disk lets them go. */
  const readAhead = new Map<string, { bytes: Uint8Array; entry: Entry }>();
  const disk = data.disk
    ? await DiskStore.open(join(data.disk.dir), {
        maxBytes: data.disk.maxBytes,
        readBuffer: (size) => reserve.take(size),
        fingerprint,
        onReject: (reason: DiskRejectReason) => {
          rejectedAtOpen[reason] = (rejectedAtOpen[reason] ?? 0) + 1;
        },
        onRemove: (key) => {
          changed.add(key);
          readAhead.delete(key);
        },
        onWrite: (seconds) => writes.observe(seconds),
      })
    : undefined;
  const onDisk = disk?.list() ?? [];
  for (const e of onDisk) meta.set(e.key, { key: e.key, kind: e.kind, tokens: e.tokens, createdMs: e.createdMs });
  // The files a restart will read first are prefix blocks, alike in size: the newest one's.
  const newestBlock = onDisk.findLast((e) => e.kind === 'prefix');
  if (newestBlock) reserve.prime(newestBlock.bytes);

  /**
   * After a restart the first prompts are likely the last ones served: the most recently used
   * prefix blocks, up to half the reserve, are read into memory in idle turns (oldest of them
   * first, so the disk's LRU order is kept), and a fetch finds them without a file read.
   */
  function readAheadAtStart(): void {
    if (!disk) return;
    const newest: string[] = [];
    let budget = halfReserve;
    for (let i = onDisk.length - 1; i >= 0; i--) {
      const e = onDisk[i]!;
      if (e.kind !== 'prefix') continue;
      if (e.bytes > budget) break;
      budget -= e.bytes;
      newest.push(e.key);
    }
    const next = async (): Promise<void> => {
      const key = newest.pop();
      if (key === undefined) return;
      // Gone since the scan (evicted or deleted): nothing to read.
      const got = disk.has(key) ? await disk.getEntry(key) : undefined;
      if (got) readAhead.set(key, got);
      setImmediate(() => void next());
    };
    setImmediate(() => void next());
  }
  const compressed = data.compressed
    ? new CompressedStore({
        ...data.compressed,
        layout,
        fingerprint,
        // The exact copy went to disk when the entry was demoted: nothing more to write.
        onEvict: (key) => {
          changed.add(key);
          if (disk?.has(key)) count('compressed>disk');
        },
      })
    : undefined;

  const remote = data.remote ? new RemoteStore({ ...data.remote, fingerprint }) : undefined;
  const exact = (e: DemotedEntry): EncodableEntry => {
    const { layers, kvHeads, headDim, dtype } = layout;
    const dims = { layers, kvHeads, headDim, tokens: e.tokens.length };
    const base = { kind: e.kind, key: e.key, tenantSalt: salt.encode(e.tenant), tokens: e.tokens, createdMs: e.createdMs };
    return { ...base, fingerprint, codec: dtype, dtype, dims, payload: exactPayloadParts(e.tensors, dims, dtype) };
  };
  const promoted = (e: Entry, tier: 'disk' | 'remote', inPlace: boolean): PromotedEntry => ({
    kind: e.kind,
    key: e.key,
    tenant: '',
    tokens: e.tokens,
    createdMs: e.createdMs,
    tensors: decodePayload(e.codec, e.payload, e.dims, e.dtype, inPlace),
    tier,
  });

  const info = (key: string): TierEntryInfo | undefined => {
    const m = meta.get(key);
    if (!m) return undefined;
    if (compressed?.has(key)) return { ...m, tier: 'compressed', bytes: compressed.sizeOf(key) };
    const d = disk?.info(key);
    return d ? { ...m, tier: 'disk', bytes: d.bytes } : undefined;
  };
  // Demotions and publications wait in a backlog taken one per turn of the event loop, so a
  // fetch (a request waiting for its prefix) is answered between two of them, not after all.
  // Every other call settles the backlog first: it sees what was handed down before it.
  const backlog: ToTier[] = [];
  let working = false;
  function take(msg: ToTier): void {
    if (msg.type === 'publish') remote?.put(msg.entry.key, encodeEntry(exact(msg.entry)));
    else demote(msg.entry);
    report(msg.bytes);
  }
  function work(): void {
    const msg = backlog.shift();
    if (msg) take(msg);
    working = backlog.length > 0;
    if (working) setImmediate(work);
  }
  function settle(): void {
    for (let msg = backlog.shift(); msg; msg = backlog.shift()) take(msg);
  }

  const port = serve<TierCalls, ToTier, FromTier>(
    {
      fetch: async (requested) => {
        // A session key may lead the chain (SessionStore keys are JSON arrays, block keys hex).
        const session = requested[0]?.startsWith('[') ? requested[0] : undefined;
        const keys = session ? requested.slice(1) : requested;
        const local = (key: string) => compressed?.has(key) || disk?.has(key);
        // Disk reads of the whole chain at once (the files are independent), and one MGET for
        // what no local tier holds; the chain is then taken in order, up to the first gap.
        const reads = keys.map((key) => {
          if (compressed?.has(key)) return undefined;
          const ahead = readAhead.get(key);
          readAhead.delete(key);
          return ahead ? Promise.resolve(ahead) : disk?.getEntry(key);
        });
        const wanted = [...(session && !local(session) ? [session] : []), ...keys.filter((k) => !local(k))];
        const shared = new Map<string, Entry>();
        for (const [i, e] of (await (remote?.getMany(wanted) ?? Promise.resolve([]))).entries()) if (e) shared.set(wanted[i]!, e);
        const out: PromotedEntry[] = [];
        const take = async (key: string, read: Promise<{ entry: Entry } | undefined> | undefined): Promise<boolean> => {
          changed.add(key);
          const entry = compressed?.take(key);
          if (entry) {
            out.push({ ...entry, tenant: '', tensors: entry.tensors, tier: 'compressed' });
            return true;
          }
          const e = (await read)?.entry;
          // The file's buffer is this call's alone: its payload becomes the tensors, uncopied.
          if (e && e.key === key) out.push(promoted(e, 'disk', true));
          else if (shared.has(key)) out.push(promoted(shared.get(key)!, 'remote', false));
          else return false;
          return true;
        };
        if (session && (await take(session, disk?.has(session) ? disk.getEntry(session) : undefined))) {
          // The session covers the prompt: the blocks are not needed.
        } else {
          for (const [i, key] of keys.entries()) if (!(await take(key, reads[i]))) break;
        }
        await Promise.allSettled(reads);
        report(0);
        return new Transfer(
          out,
          out.flatMap((e) => [...new Set(e.tensors.map((t) => t.buffer as ArrayBuffer))]),
        );
      },
      delete: (keys) => {
        settle();
        for (const key of keys) {
          compressed?.delete(key);
          disk?.delete(key);
          changed.add(key);
        }
        remote?.delete(keys);
        report(0);
        return undefined;
      },
      stats: (): TierStats => {
        settle();
        return {
          bytes: { compressed: compressed?.bytes ?? 0, disk: disk?.bytes ?? 0 },
          capacityBytes: { compressed: compressed?.maxBytes ?? 0, disk: disk?.maxBytes ?? 0 },
          demotions: { ...demotions },
          dropped,
          diskRejected: { fingerprint: 0, checksum: 0, truncated: 0, io: 0, ...disk?.stats().rejected },
          diskWriteSeconds: writes.snapshot(),
          remote: remote?.stats(),
        };
      },
      persist: async () => {
        settle();
        await disk?.close();
        return undefined;
      },
    },
    {
      onMessage: (msg) => {
        backlog.push(msg);
        if (!working) {
          working = true;
          setImmediate(work);
        }
      },
      onClose: async () => {
        settle();
        await Promise.all([disk?.close(), remote?.close()]);
      },
    },
  );

  /** An entry RAM evicted: exact to disk, compressed to RAM. */
  function demote(e: DemotedEntry): void {
    const base = { kind: e.kind, key: e.key, tenantSalt: salt.encode(e.tenant), tokens: e.tokens, createdMs: e.createdMs };
    meta.set(e.key, { key: e.key, kind: e.kind, tokens: e.tokens.length, createdMs: e.createdMs });
    changed.add(e.key);
    let kept = false;
    if (disk) {
      // A prefix block's key names its tokens (chained over the prefix, per tenant): a copy on
      // disk is this block — the exact one, where RAM's came back from the int8 tier — and is
      // kept rather than written again (one touch instead of an unlink and a new file).
      if ((e.kind === 'prefix' && disk.keep(e.key)) || disk.put(e.key, encodeEntry(exact(e)))) {
        count('ram>disk');
        kept = true;
      }
    }
    if (compressed) {
      compressed.put({ ...base, tensors: e.tensors });
      if (compressed.has(e.key)) {
        count('ram>compressed');
        kept = true;
      }
    }
    if (!kept) dropped++;
  }

  /** Tells the engine where the changed keys live now. */
  function report(processedBytes: number): void {
    const set: TierEntryInfo[] = [];
    const removed: string[] = [];
    for (const key of changed) {
      const i = info(key);
      if (i) set.push(i);
      else {
        removed.push(key);
        meta.delete(key);
      }
    }
    changed.clear();
    port.post({ type: 'index', set, removed, processedBytes });
  }

  const index = [...meta.keys()].map(info).filter((i): i is TierEntryInfo => i !== undefined);
  ready({ index, rejectedAtOpen });
  readAheadAtStart();
} catch (err) {
  fatal(err);
}
