// `npx tsx bench/tiers-throughput.ts`: what the KV tiers' parts cost in time.
//
// 1. Checksums over 1 MiB and 16 MiB: zlib's native CRC-32 (what the format uses), its JS
//    fallback, and SHA-256 for comparison; then encodeEntry / decodeEntry of such entries.
// 2. Codecs: int8 and float16 encode/decode of one 16 MiB float32 session-sized entry.
// 3. The model fingerprint of a synthetic 500 MB model, inline weights and external data,
//    page cache warm and cold (each file's cache dropped with dd iflag=nocache first).
// 4. The disk tier: put → flush of 1 MiB and 16 MiB entries (with and without fsync), then
//    get of each, warm and cold.
// Medians of REPS (5) repetitions. Prints JSON; also written to bench/results/tiers-throughput.json.
// On a shared VM, first touches of fresh memory (every encode and decode allocates its
// output) cost from ~1 to ~100 ms per 16 MiB with the load: compare runs' loadavg_1m.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32, crc32Js } from '../src/core/kv/entry/checksum.js';
import { modelFingerprint } from '../src/runtime/fingerprint.js';
import { type Entry, decodeEntry, encodeEntry, payloadBytes } from '../src/core/kv/entry/format.js';
import { decodePayload, encodePayload } from '../src/core/kv/tiers/codec.js';
import { fileName } from '../src/core/kv/tiers/disk-files.js';
import { DiskStore } from '../src/core/kv/tiers/disk-store.js';
import { envInt, log } from './lib/interleave.js';
import { median } from './lib/stats.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REPS = envInt('REPS', 5);
const MiB = 1 << 20;
const FP = new Uint8Array(32).fill(1);
const r2 = (x: number) => Math.round(x * 100) / 100;

function timeSync(fn: () => unknown, reps = REPS): number {
  fn();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

/** Median time of `fn`; `setup` runs before each repetition, untimed (dropping page caches spawns dd). */
async function timeAsync(fn: () => Promise<unknown>, reps = REPS, setup: () => void = () => {}): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    setup();
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

const rate = (bytes: number, ms: number) => ({ ms: r2(ms), mib_per_s: Math.round(bytes / MiB / (ms / 1000)) });

function randomish(n: number): Uint8Array {
  const out = new Uint8Array(n);
  const w = new Uint32Array(out.buffer, 0, n >> 2);
  let s = 12345;
  for (let i = 0; i < w.length; i++) w[i] = s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  return out;
}

/** A float16-payload entry of about `bytes` bytes (1 layer, 8 heads, 128 dims: 4 KiB per token). */
function entryOf(bytes: number, key = 'bench'): Entry {
  const dims = { layers: 1, kvHeads: 8, headDim: 128, tokens: Math.max(1, Math.round(bytes / 4096)) };
  return {
    kind: 'session',
    key,
    tenantSalt: new Uint8Array(8),
    tokens: new Int32Array(dims.tokens),
    createdMs: 0,
    fingerprint: FP,
    codec: 'float16',
    dtype: 'float16',
    dims,
    payload: randomish(payloadBytes('float16', dims)),
  };
}

function checksums() {
  const out: Record<string, unknown> = {};
  for (const size of [MiB, 16 * MiB]) {
    const data = randomish(size);
    const e = entryOf(size);
    const bytes = encodeEntry(e);
    out[`${size / MiB}MiB`] = {
      crc32_zlib: rate(
        size,
        timeSync(() => crc32(data)),
      ),
      crc32_js_fallback: rate(
        size,
        timeSync(() => crc32Js(data)),
      ),
      sha256: rate(
        size,
        timeSync(() => createHash('sha256').update(data).digest()),
      ),
      encodeEntry: rate(
        bytes.length,
        timeSync(() => encodeEntry(e)),
      ),
      decodeEntry: rate(
        bytes.length,
        timeSync(() => decodeEntry(bytes, FP)),
      ),
    };
  }
  return out;
}

function codecs() {
  // A 16 MiB float32 entry: 4 layers × 8 heads × 512 tokens × 128 dims.
  const dims = { layers: 4, kvHeads: 8, headDim: 128, tokens: 512 };
  const n = dims.kvHeads * dims.tokens * dims.headDim;
  const tensors = Array.from({ length: 2 * dims.layers }, (_, t) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + t) * (1 + (i % 7))));
  const bytes = 2 * dims.layers * n * 4;
  const out: Record<string, unknown> = { entry: { ...dims, float32_bytes: bytes } };
  for (const codec of ['int8', 'float16'] as const) {
    const payload = encodePayload(codec, tensors, dims, 'float32');
    out[codec] = {
      payload_bytes: payload.length,
      ratio: r2(bytes / payload.length),
      encode: rate(
        bytes,
        timeSync(() => encodePayload(codec, tensors, dims, 'float32')),
      ),
      decode: rate(
        bytes,
        timeSync(() => decodePayload(codec, payload, dims, 'float32')),
      ),
    };
  }
  return out;
}

/**
 * Drops one file's pages from this VM's page cache (GNU dd; dirty pages are written back
 * first, or they would stay), so the next read comes from the disk (or the host's cache).
 */
const dropCache = (file: string) => {
  execFileSync('sync', [file]);
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
};

async function writeChunked(path: string, header: Uint8Array, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  await fh.write(header);
  const chunk = randomish(16 * MiB);
  for (let done = 0; done < bytes; done += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, bytes - done));
  await fh.close();
}

const varint = (n: number): number[] => {
  const out: number[] = [];
  for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n % 128) | 0x80);
  return [...out, n];
};

async function fingerprint(dir: string) {
  const size = envInt('MODEL_MB', 500) * 1_000_000;
  const tokenizerPath = join(ROOT, 'models/tiny-shakespeare/tokenizer.json');
  const layout = { layers: 32, kvHeads: 8, headDim: 128, dtype: 'float16' as const };
  // Inline: ModelProto{graph: GraphProto{initializer: TensorProto{raw_data: size bytes}}}.
  const tensorLen = 1 + varint(size).length + size;
  const graphLen = 1 + varint(tensorLen).length + tensorLen;
  const inline = join(dir, 'inline.onnx');
  await writeChunked(inline, Uint8Array.from([0x3a, ...varint(graphLen), 0x2a, ...varint(tensorLen), 0x4a, ...varint(size)]), size);
  // External: the same tensor's bytes in model.onnx.data, the graph naming it.
  const entry = [0x0a, 8, ...Buffer.from('location'), 0x12, 15, ...Buffer.from('model.onnx.data')];
  const tensor = [0x6a, entry.length, ...entry];
  const external = join(dir, 'model.onnx');
  await writeFile(external, Uint8Array.from([0x3a, tensor.length + 2, 0x2a, tensor.length, ...tensor]));
  await writeChunked(join(dir, 'model.onnx.data'), new Uint8Array(0), size);
  const out: Record<string, unknown> = { model_bytes: size };
  for (const [name, onnxPath, files] of [
    ['inline', inline, [inline]],
    ['external_data', external, [external, join(dir, 'model.onnx.data')]],
  ] as const) {
    const run = () => modelFingerprint({ onnxPath, tokenizerPath, layout });
    const warm = await timeAsync(run, 3);
    const cold = await timeAsync(run, 3, () => files.forEach(dropCache));
    out[name] = { warm: rate(size, warm), cold: rate(size, cold) };
  }
  await rm(inline);
  await rm(join(dir, 'model.onnx.data'));
  return out;
}

async function disk(dir: string) {
  const out: Record<string, unknown> = {};
  for (const [size, count] of [
    [MiB, 128],
    [16 * MiB, 8],
  ] as const) {
    for (const fsync of [false, true]) {
      const store = await DiskStore.open(join(dir, `store-${size}-${fsync}`), {
        maxBytes: 4 * count * size,
        fingerprint: FP,
        fsync,
        maxPendingBytes: 2 * count * size,
      });
      const entries = Array.from({ length: count }, (_, i) => encodeEntry(entryOf(size, `k${i}`)));
      const total = entries.reduce((a, b) => a + b.length, 0);
      // Later repetitions replace the files: an unlink then a write each, as a busy tier does.
      const put = await timeAsync(async () => {
        for (const [i, b] of entries.entries()) store.put(`k${i}`, b);
        await store.flush();
      }, 3);
      const name = `${size / MiB}MiB x${count}${fsync ? ' fsync' : ''}`;
      const row: Record<string, unknown> = { put_flush: rate(total, put) };
      if (!fsync) {
        row.get_warm = rate(
          total,
          await timeAsync(async () => {
            for (let i = 0; i < count; i++) await store.get(`k${i}`);
          }, 3),
        );
        const dropAll = () => {
          for (let i = 0; i < count; i++) dropCache(join(store.dir, fileName(`k${i}`).slice(0, 2), fileName(`k${i}`)));
        };
        row.get_cold = rate(
          total,
          await timeAsync(
            async () => {
              for (let i = 0; i < count; i++) await store.get(`k${i}`);
            },
            3,
            dropAll,
          ),
        );
      }
      out[name] = row;
      await store.close();
      await rm(store.dir, { recursive: true, force: true });
    }
  }
  return out;
}

const dir = await mkdtemp(join(process.env.BENCH_DIR ?? os.tmpdir(), 'kvserve-tiers-'));
try {
  log('checksums…');
  const result: Record<string, unknown> = { checksum_and_entry: checksums() };
  log('codecs…');
  result.codec = codecs();
  log('fingerprint…');
  result.fingerprint = await fingerprint(dir);
  log('disk…');
  result.disk = await disk(dir);
  result.machine = {
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    node: process.version,
    loadavg_1m: r2(os.loadavg()[0]!),
    tmp_fs: process.env.BENCH_DIR ?? os.tmpdir(),
  };
  const json = JSON.stringify(result, null, 2);
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench/results/tiers-throughput.json'), `${json}\n`);
  process.stdout.write(`${json}\n`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
