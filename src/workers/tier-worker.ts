// Tier worker entry (see tier-thread.ts): the tiers below RAM, off the engine's step loop.
// An entry RAM evicts is written through to disk exactly (float32 or float16 as the model
// keeps it) and kept compressed in RAM (int8 or float16); the compressed copy is what a hit
// reads first, the disk copy what survives eviction from it and restarts. Every change of
// where a key lives is reported to the engine, so its lookups need no round trip.
//
//   engine ──demote──▶ encode ─┬─▶ compressed tier (int8, LRU)  ──evicted──▶ (already on disk)
//                              └─▶ disk tier (exact, LRU) ◀─── persist: at graceful shutdown
//   engine ◀──fetch── compressed take │ disk read + validate ──▶ tensors (transferred)
import { join } from 'node:path';
import { workerData } from 'node:worker_threads';
import { type CodecId, type Entry, encodeEntry } from '../core/kv/entry/format.js';
import { decodePayload, encodePayload } from '../core/kv/tiers/codec.js';
import { CompressedStore } from '../core/kv/tiers/compressed-store.js';
import { type DiskRejectReason, DiskStore } from '../core/kv/tiers/disk-store.js';
import type { DemotedEntry, PromotedEntry, TierEntryInfo } from '../core/kv/tiers/lower-tiers.js';
import { BucketHistogram, LATENCY_BUCKETS } from '../metrics/buckets.js';
import { modelFingerprint } from '../runtime/fingerprint.js';
import type { FromTier, TierCalls, TierStats, TierWorkerData, ToTier } from './protocol.js';
import { Transfer, fatal, ready, serve } from './serve.js';

const data = workerData as TierWorkerData;
const { layout } = data;
const salt = new TextEncoder();

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
  const disk = data.disk
    ? await DiskStore.open(join(data.disk.dir), {
        maxBytes: data.disk.maxBytes,
        fingerprint,
        onReject: (reason: DiskRejectReason) => {
          rejectedAtOpen[reason] = (rejectedAtOpen[reason] ?? 0) + 1;
        },
        onRemove: (key) => changed.add(key),
        onWrite: (seconds) => writes.observe(seconds),
      })
    : undefined;
  for (const e of disk?.list() ?? []) meta.set(e.key, { key: e.key, kind: e.kind, tokens: e.tokens, createdMs: e.createdMs });
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

  const info = (key: string): TierEntryInfo | undefined => {
    const m = meta.get(key);
    if (!m) return undefined;
    if (compressed?.has(key)) return { ...m, tier: 'compressed', bytes: compressed.sizeOf(key) };
    const d = disk?.info(key);
    return d ? { ...m, tier: 'disk', bytes: d.bytes } : undefined;
  };
  const port = serve<TierCalls, ToTier, FromTier>(
    {
      fetch: async (keys) => {
        // Disk reads of the whole chain at once (the files are independent); the chain is
        // then taken in order, up to the first entry found nowhere.
        const reads = keys.map((key) => (compressed?.has(key) ? undefined : disk?.getEntry(key)));
        const out: PromotedEntry[] = [];
        for (const [i, key] of keys.entries()) {
          changed.add(key);
          const entry = compressed?.take(key);
          if (entry) {
            out.push({ ...entry, tenant: '', tensors: entry.tensors, tier: 'compressed' });
            continue;
          }
          const e = (await reads[i])?.entry;
          if (!e || e.key !== key) break;
          // The file's buffer is this call's alone: its payload becomes the tensors, uncopied.
          const tensors = decodePayload(e.codec, e.payload, e.dims, e.dtype, true);
          out.push({ kind: e.kind, key, tenant: '', tokens: e.tokens, createdMs: e.createdMs, tensors, tier: 'disk' });
        }
        await Promise.allSettled(reads);
        report(0);
        return new Transfer(
          out,
          out.flatMap((e) => [...new Set(e.tensors.map((t) => t.buffer as ArrayBuffer))]),
        );
      },
      delete: (keys) => {
        for (const key of keys) {
          compressed?.delete(key);
          disk?.delete(key);
          changed.add(key);
        }
        report(0);
        return undefined;
      },
      stats: (): TierStats => ({
        bytes: { compressed: compressed?.bytes ?? 0, disk: disk?.bytes ?? 0 },
        capacityBytes: { compressed: compressed?.maxBytes ?? 0, disk: disk?.maxBytes ?? 0 },
        demotions: { ...demotions },
        dropped,
        diskRejected: { fingerprint: 0, checksum: 0, truncated: 0, io: 0, ...disk?.stats().rejected },
        diskWriteSeconds: writes.snapshot(),
      }),
      persist: async () => {
        await disk?.close();
        return undefined;
      },
    },
    {
      onMessage: (msg) => {
        demote(msg.entry);
        report(msg.bytes);
      },
      onClose: async () => {
        await disk?.close();
      },
    },
  );

  /** An entry RAM evicted: exact to disk, compressed to RAM. */
  function demote(e: DemotedEntry): void {
    const { layers, kvHeads, headDim, dtype } = layout;
    const dims = { layers, kvHeads, headDim, tokens: e.tokens.length };
    const base = { kind: e.kind, key: e.key, tenantSalt: salt.encode(e.tenant), tokens: e.tokens, createdMs: e.createdMs };
    meta.set(e.key, { key: e.key, kind: e.kind, tokens: e.tokens.length, createdMs: e.createdMs });
    changed.add(e.key);
    let kept = false;
    if (disk) {
      const codec: CodecId = dtype;
      const entry: Entry = { ...base, fingerprint, codec, dtype, dims, payload: encodePayload(codec, e.tensors, dims, dtype) };
      if (disk.put(e.key, encodeEntry(entry))) {
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
} catch (err) {
  fatal(err);
}
