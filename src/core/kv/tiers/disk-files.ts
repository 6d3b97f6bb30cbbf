// Where the disk tier keeps an entry, and the start-up scan that rebuilds its index. Names are
// a hash of the key (never a client-supplied id), sharded 256 ways so no directory grows past
// a few thousand files. The scan reads only each file's header: a damaged payload is caught
// by the checksum when the file is read, and removed then.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { type EntryKind, HEADER_PREFIX_BYTES, type RejectReason, inspectHeader, isRejected } from '../entry/format.js';

/** Why a file was not served, as counted: another model or format, damaged, cut short, unreadable. */
export type DiskRejectReason = 'fingerprint' | 'checksum' | 'truncated' | 'io';

/** A newer or older format is foreign like another model's file; a wrong magic is damage (e.g. zeros after a power loss). */
export function diskReason(r: RejectReason): DiskRejectReason {
  if (r === 'fingerprint' || r === 'version') return 'fingerprint';
  if (r === 'truncated') return 'truncated';
  return 'checksum';
}

export const TMP_DIR = 'tmp';
const NAME = /^[0-9a-f]{32}\.kv$/;
const SHARD = /^[0-9a-f]{2}$/;
const SCAN_PARALLEL = 16;

export function fileName(key: string): string {
  return `${createHash('sha256').update(`kvserve-disk\u0000${key}`).digest('hex').slice(0, 32)}.kv`;
}

export function filePath(dir: string, name: string): string {
  return join(dir, name.slice(0, 2), name);
}

export interface ScannedFile {
  key: string;
  kind: EntryKind;
  /** Tokens the entry covers, and when it was first created (as its header says). */
  tokens: number;
  createdMs: number;
  name: string;
  bytes: number;
  mtimeMs: number;
}

export interface ScanResult {
  files: ScannedFile[];
  rejected: { reason: DiskRejectReason; file: string; detail: string }[];
}

async function inspectFile(dir: string, name: string, fingerprint: Uint8Array): Promise<ScannedFile | { reason: DiskRejectReason; detail: string }> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(filePath(dir, name), 'r');
    const st = await fh.stat();
    const buf = Buffer.alloc(Math.min(st.size, HEADER_PREFIX_BYTES));
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const h = inspectHeader(buf.subarray(0, bytesRead), fingerprint);
    if (isRejected(h)) return { reason: diskReason(h.rejected), detail: h.detail };
    if (st.size < h.totalBytes) return { reason: 'truncated', detail: `${st.size} bytes, entry needs ${h.totalBytes}` };
    if (st.size > h.totalBytes) return { reason: 'checksum', detail: `${st.size - h.totalBytes} bytes after the entry` };
    if (fileName(h.key) !== name) return { reason: 'checksum', detail: 'key does not match the file name' };
    return { key: h.key, kind: h.kind, tokens: h.dims.tokens, createdMs: h.createdMs, name, bytes: st.size, mtimeMs: st.mtimeMs };
  } catch (err) {
    return { reason: 'io', detail: (err as Error).message };
  } finally {
    await fh?.close().catch(() => {});
  }
}

/**
 * Lists the valid entries under `dir`, least recently used (oldest mtime) first, and removes
 * what must never be served: unfinished temp files, files of another model or format, and
 * damaged or cut-short ones. Files whose names are not ours are left alone.
 */
export async function scanDir(dir: string, fingerprint: Uint8Array): Promise<ScanResult> {
  await mkdir(join(dir, TMP_DIR), { recursive: true });
  const rejected: ScanResult['rejected'] = [];
  for (const tmp of await readdir(join(dir, TMP_DIR))) {
    // A write that never reached its rename: a crash mid-write.
    await rm(join(dir, TMP_DIR, tmp), { recursive: true, force: true });
    rejected.push({ reason: 'truncated', file: join(TMP_DIR, tmp), detail: 'unfinished write' });
  }
  const names: string[] = [];
  for (const shard of (await readdir(dir)).filter((s) => SHARD.test(s))) {
    const entries = await readdir(join(dir, shard)).catch(() => [] as string[]);
    names.push(...entries.filter((n) => NAME.test(n) && n.startsWith(shard)));
  }
  const files: ScannedFile[] = [];
  for (let i = 0; i < names.length; i += SCAN_PARALLEL) {
    const batch = names.slice(i, i + SCAN_PARALLEL);
    const results = await Promise.all(batch.map((n) => inspectFile(dir, n, fingerprint)));
    for (const [j, r] of results.entries()) {
      if ('key' in r) {
        files.push(r);
        continue;
      }
      const name = batch[j]!;
      await unlink(filePath(dir, name)).catch(() => {});
      rejected.push({ reason: r.reason, file: join(name.slice(0, 2), name), detail: r.detail });
    }
  }
  files.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.name < b.name ? -1 : 1));
  return { files, rejected };
}

/**
 * Writes `data` as the file `name`: into a temp file, then renamed into place, so a reader or a
 * restart sees the whole entry or none of it. With `reuse` (the name of an evicted entry's
 * file), that file is renamed to the temp name and overwritten rather than a new one created;
 * if it is gone, a new one is. `shards` remembers the directories made. Resolves true when it
 * took over `reuse`.
 */
export async function writeAtomic(dir: string, name: string, data: Uint8Array, fsync: boolean, shards: Set<string>, reuse?: string): Promise<boolean> {
  const shard = name.slice(0, 2);
  const tmp = join(dir, TMP_DIR, `${randomBytes(12).toString('hex')}.tmp`);
  try {
    if (!shards.has(shard)) {
      await mkdir(join(dir, shard), { recursive: true });
      shards.add(shard);
    }
    let fh: FileHandle | undefined;
    if (reuse !== undefined) {
      try {
        await rename(filePath(dir, reuse), tmp);
        fh = await open(tmp, 'r+');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    const reused = fh !== undefined;
    fh ??= await open(tmp, 'wx');
    try {
      // A fresh descriptor writes from offset 0; what the old entry had beyond this one is cut.
      await fh.writeFile(data);
      if (reused) await fh.truncate(data.byteLength);
      if (fsync) await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, filePath(dir, name));
    return reused;
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * An entry file's bytes, read synchronously (the tier thread is the only reader and has nothing
 * else to run meanwhile; a page-cached file is read in microseconds, where a trip through
 * libuv's pool cost a chain of blocks tens of ms). With `readBuffer`, into the buffer it gives
 * when the file has the size the index expects; another size is a damaged file, read whole for
 * the decoder to say how.
 */
export function readEntryFile(path: string, expected: number, readBuffer?: (size: number) => Uint8Array): Uint8Array {
  if (!readBuffer) return readFileSync(path);
  const fd = openSync(path, 'r');
  try {
    const { size } = fstatSync(fd);
    if (size !== expected) return readFileSync(fd);
    const out = readBuffer(size);
    let at = 0;
    while (at < size) {
      const n = readSync(fd, out, at, size - at, at);
      if (n === 0) break;
      at += n;
    }
    return at === size ? out : out.subarray(0, at);
  } finally {
    closeSync(fd);
  }
}
