// The disk tier: entries survive a restart; damaged, foreign, cut-short and unfinished files
// are never served, removed and counted by reason; the byte budget holds on disk at every
// moment, counting queued and in-flight writes; put() never waits for the disk.
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm, stat, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { decodeEntry, isRejected } from '../../../../src/core/kv/entry/format.js';
import { fileName } from '../../../../src/core/kv/tiers/disk-files.js';
import { DiskStore, type DiskRejectReason } from '../../../../src/core/kv/tiers/disk-store.js';
import { FP, OTHER_FP, fixtureBytes, isFixture } from './entry-fixture.js';

async function tmpDir(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kvserve-disk-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Every file under dir (entry files and temp files) with its size: a snapshot. It is read
 * synchronously so the store's writer cannot move between two reads (an asynchronous walk
 * counted a file, let the writer unlink it and write the next, and counted both); the one
 * system call that may still land meanwhile is a rename from tmp/, so a file is counted once
 * per inode.
 */
function filesOn(dir: string): { file: string; size: number }[] {
  const byInode = new Map<number, { file: string; size: number }>();
  const list = (d: string): string[] => {
    try {
      return readdirSync(d);
    } catch {
      return [];
    }
  };
  for (const sub of list(dir)) {
    for (const f of list(path.join(dir, sub))) {
      const s = statSync(path.join(dir, sub, f), { throwIfNoEntry: false });
      if (s) byInode.set(s.ino, { file: path.join(sub, f), size: s.size });
    }
  }
  return [...byInode.values()];
}

const fileOf = (dir: string, key: string) => path.join(dir, fileName(key).slice(0, 2), fileName(key));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('entries survive close and reopen, in LRU order by last use', async (t) => {
  const dir = await tmpDir(t);
  let store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  const keys = ['p-a', 's-["t","b"]', 'p-c'];
  for (const k of keys) {
    t.ok(store.put(k, fixtureBytes(k, 5 + k.length)));
    await store.flush();
    await sleep(15);
  }
  t.ok(isFixture('p-a', (await store.get('p-a'))!), 'read back before the restart');
  await store.close();
  t.notOk(store.put('p-d', fixtureBytes('p-d', 3)), 'a closed store takes no writes');

  store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  t.same(store.keys(), ['s-["t","b"]', 'p-c', 'p-a'], 'p-a was used last');
  for (const k of keys) t.ok(isFixture(k, (await store.get(k))!), `${k} served as written`);
  t.equal(
    store.bytes,
    keys.reduce((a, k) => a + fixtureBytes(k, 5 + k.length).length, 0),
  );
  t.equal(await store.get('nope'), undefined);
  t.ok(store.delete('p-c'));
  await store.close();
  store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  t.notOk(store.has('p-c'), 'a deleted entry stays deleted');
  t.same(
    filesOn(dir).filter((f) => f.file.startsWith('tmp')),
    [],
    'no temp files left',
  );
});

t.test('bad files are never served: removed, counted by reason, reported once', async (t) => {
  const dir = await tmpDir(t);
  let store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  for (const k of ['truncated', 'flipped-payload', 'flipped-header', 'empty', 'good']) store.put(k, fixtureBytes(k, 8));
  await store.close();
  await truncate(fileOf(dir, 'truncated'), 200);
  await truncate(fileOf(dir, 'empty'), 0);
  for (const [key, at] of [
    ['flipped-payload', -100],
    ['flipped-header', 20],
  ] as const) {
    const fh = await open(fileOf(dir, key), 'r+');
    const { size } = await fh.stat();
    const pos = at < 0 ? size + at : at;
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, pos);
    b[0]! ^= 0x10;
    await fh.write(b, 0, 1, pos);
    await fh.close();
  }
  for (const k of ['foreign', 'misplaced']) await mkdir(path.dirname(fileOf(dir, k)), { recursive: true });
  // Another model's entry, under the name its key would have here.
  await writeFile(fileOf(dir, 'foreign'), fixtureBytes('foreign', 8, OTHER_FP));
  // An entry stored under another key's name.
  await writeFile(fileOf(dir, 'misplaced'), fixtureBytes('good', 8));
  await writeFile(path.join(dir, 'tmp', 'deadbeef.tmp'), fixtureBytes('half', 8).subarray(0, 100));
  await writeFile(path.join(dir, 'README'), 'not ours: left alone');

  const reports: [DiskRejectReason, string][] = [];
  store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP, onReject: (r, f) => reports.push([r, f]) });
  t.same(store.stats().rejected, { fingerprint: 1, checksum: 2, truncated: 3, io: 0 }, 'at open: foreign, header flip + misplaced, truncated + empty + temp');
  t.same(store.keys().sort(), ['flipped-payload', 'good'], 'a payload flip is not visible in the header');
  t.equal(await store.get('flipped-payload'), undefined, 'caught by the checksum on read');
  t.same(store.stats().rejected.checksum, 3);
  t.notOk(store.has('flipped-payload'));
  t.ok(isFixture('good', (await store.get('good'))!));
  await store.close();
  t.equal(reports.length, 7, 'each bad file reported once');
  t.same(
    filesOn(dir).map((f) => f.file),
    [path.join(fileName('good').slice(0, 2), fileName('good'))],
    'only the good file remains',
  );
  t.ok(await stat(path.join(dir, 'README')), 'a file not named as ours is left alone');

  const again: string[] = [];
  store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP, onReject: (_r, f) => again.push(f) });
  t.same(again, [], 'nothing left to report on the next start');
  t.same(store.keys(), ['good']);
  await store.close();
  store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: OTHER_FP });
  t.same(store.keys(), [], 'another model sees none of it');
  t.same(store.stats().rejected.fingerprint, 1);
});

t.test('random puts, gets and deletes: the budget holds on disk at every moment, counting writes in flight', async (t) => {
  const dir = await tmpDir(t);
  const one = fixtureBytes('p0', 1).length;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 2 * one, max: 40 * one }),
      fc.array(fc.record({ op: fc.constantFrom('put', 'put', 'put', 'get', 'delete', 'yield'), key: fc.nat(9), tokens: fc.integer({ min: 1, max: 30 }) }), {
        maxLength: 40,
      }),
      async (maxBytes, ops) => {
        await rm(dir, { recursive: true, force: true });
        const store = await DiskStore.open(dir, { maxBytes, fingerprint: FP, maxPendingBytes: 8 * one });
        const sizes = new Map<string, number>();
        const check = (when: string) => {
          if (store.bytes > maxBytes) throw new Error(`${when}: counted ${store.bytes} > ${maxBytes}`);
          const onDisk = filesOn(dir).reduce((a, f) => a + f.size, 0);
          if (onDisk > maxBytes) throw new Error(`${when}: ${onDisk} bytes on disk > ${maxBytes}`);
        };
        for (const { op, key: k, tokens } of ops) {
          const key = `p${k}`;
          if (op === 'put') {
            const bytes = fixtureBytes(key, tokens);
            if (store.put(key, bytes)) sizes.set(key, bytes.length);
          } else if (op === 'get') {
            const got = await store.get(key);
            if (got && !isFixture(key, got)) throw new Error(`${key} served wrong bytes`);
          } else if (op === 'delete') store.delete(key);
          else await sleep(1);
          const sum = store.keys().reduce((a, key) => a + sizes.get(key)!, 0);
          if (store.bytes !== sum) throw new Error(`bytes ${store.bytes} != sum of entries ${sum}`);
          check(op);
        }
        await store.close();
        check('closed');
        const onDisk = filesOn(dir).filter((f) => !f.file.startsWith('tmp'));
        if (onDisk.reduce((a, f) => a + f.size, 0) !== store.bytes) throw new Error('files on disk differ from the accounting');
        if (onDisk.length !== store.entries) throw new Error('file count differs');
      },
    ),
    { numRuns: 60 },
  );
  t.pass('budget held');
});

t.test('keep() marks an entry used without writing it again, and survives a restart as recency', async (t) => {
  const dir = await tmpDir(t);
  let store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  for (const k of ['p-a', 'p-b']) {
    store.put(k, fixtureBytes(k, 8));
    await store.flush();
    await sleep(15);
  }
  const writes = store.stats().writes;
  const before = (await stat(fileOf(dir, 'p-a'))).ino;
  t.ok(store.keep('p-a'), 'held: kept');
  t.notOk(store.keep('p-z'), 'not held: false, and nothing is made up');
  t.same(store.keys(), ['p-b', 'p-a'], 'p-a is the most recently used');
  await store.flush();
  t.equal(store.stats().writes, writes, 'no write');
  t.equal((await stat(fileOf(dir, 'p-a'))).ino, before, 'the same file');
  await store.close();
  store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  t.same(store.keys(), ['p-b', 'p-a'], 'the recency is on disk (mtime)');
  t.ok(isFixture('p-a', (await store.get('p-a'))!));
  await store.close();
});

t.test('put never waits; the oldest queued writes are dropped past the pending bound', async (t) => {
  const dir = await tmpDir(t);
  const one = fixtureBytes('p0', 64).length;
  const store = await DiskStore.open(dir, { maxBytes: 1 << 30, fingerprint: FP, maxPendingBytes: 4 * one });
  const started = performance.now();
  for (let i = 0; i < 20; i++) store.put(`p${i}`, fixtureBytes(`p${i}`, 64));
  t.ok(performance.now() - started < 1000, 'twenty puts returned without disk I/O');
  const s = store.stats();
  t.ok(s.pendingBytes <= 4 * one, `pending ${s.pendingBytes} within the bound`);
  t.ok(s.dropped.pending >= 15, `${s.dropped.pending} queued writes dropped`);
  t.ok(isFixture('p19', (await store.get('p19'))!), 'a queued entry is served from memory');
  await store.close();
  t.ok(store.has('p19') && !store.has('p1'), 'newest kept, oldest queued dropped');
  t.ok(store.has('p0'), 'the write already in flight when the others came was not dropped');
  const small = await DiskStore.open(dir, { maxBytes: 2 * one, fingerprint: FP });
  t.equal(small.entries, 2, 'a smaller budget at open evicts down to it');
  t.ok(small.bytes <= 2 * one);
  t.notOk(small.put('huge', fixtureBytes('huge', 200)), 'an entry over the whole budget is refused');
  t.equal(small.stats().dropped.oversize, 1);
  await small.close();
});

t.test('a put of bytes that are not an entry of that key is a caller bug', async (t) => {
  const dir = await tmpDir(t);
  const store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  t.throws(() => store.put('a', fixtureBytes('b', 2)));
  t.throws(() => store.put('a', fixtureBytes('a', 2, OTHER_FP)));
  const d = decodeEntry(fixtureBytes('a', 2), FP);
  t.notOk(isRejected(d));
  await store.close();
});

t.test('reads go into the buffers readBuffer gives, and a file cut short after open is still refused', async (t) => {
  const dir = await tmpDir(t);
  const asked: number[] = [];
  const given: Uint8Array[] = [];
  const readBuffer = (size: number) => {
    asked.push(size);
    // Stale contents, as a reused buffer has: the read must overwrite every byte it serves.
    const b = new Uint8Array(size).fill(0xa5);
    given.push(b);
    return b;
  };
  let store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  const keys = ['p-1', 'p-2', 'p-3'];
  for (const k of keys) store.put(k, fixtureBytes(k, 7));
  await store.close();
  store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP, readBuffer });
  for (const [i, k] of keys.entries()) {
    const got = await store.getEntry(k);
    t.ok(got && isFixture(k, got.bytes), `${k} served as written`);
    t.equal(got?.bytes, given[i], `${k} was read into the given buffer`);
  }
  t.same(
    asked,
    keys.map((k) => fixtureBytes(k, 7).length),
    'each asked for at its file size',
  );
  // The index expects the full size; a file shorter than that is read whole and refused.
  await truncate(fileOf(dir, 'p-2'), 150);
  t.equal(await store.getEntry('p-2'), undefined);
  t.equal(store.stats().rejected.truncated, 1, 'counted as truncated');
  t.equal(asked.length, 3, 'no buffer asked for a file of the wrong size');
  await store.close();
});

t.test('what a read returns is the caller’s: handing it to another thread does not empty a queued write', async (t) => {
  const dir = await tmpDir(t);
  const store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  const bytes = fixtureBytes('p-queued', 40);
  const size = bytes.length;
  t.ok(store.put('p-queued', bytes));
  // Served while its write is still queued, then transferred as the tier thread's fetch does
  // with what it reads (the tensors are decoded in place and their buffer handed over).
  const got = (await store.getEntry('p-queued'))!;
  t.ok(isFixture('p-queued', got.bytes), 'served from the queue');
  structuredClone(got.bytes.buffer, { transfer: [got.bytes.buffer as ArrayBuffer] });
  await store.close();
  const reopened = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  t.teardown(() => reopened.close());
  t.same(reopened.stats().rejected, { fingerprint: 0, checksum: 0, truncated: 0, io: 0 }, 'no damaged file');
  const back = await reopened.get('p-queued');
  t.equal(back?.length, size, 'the whole entry was written');
  t.ok(back && isFixture('p-queued', back), 'and reads back exactly');
});

/** The inode of every entry file (temp files left out). */
function entryInodes(dir: string): Set<number> {
  return new Set(
    filesOn(dir)
      .filter((f) => !f.file.startsWith('tmp'))
      .map((f) => statSync(path.join(dir, f.file)).ino),
  );
}

t.test('at a full budget a write takes over the file of the entry it evicts: no new inode, none left behind', async (t) => {
  const dir = await tmpDir(t);
  const one = fixtureBytes('p0', 16).length;
  const store = await DiskStore.open(dir, { maxBytes: 8 * one, fingerprint: FP });
  for (let i = 0; i < 8; i++) {
    store.put(`p${i}`, fixtureBytes(`p${i}`, 16));
    await store.flush();
  }
  const first = entryInodes(dir);
  t.equal(first.size, 8, 'eight files for eight entries');
  for (let i = 8; i < 40; i++) {
    t.ok(store.put(`p${i}`, fixtureBytes(`p${i}`, 16)));
    await store.flush();
  }
  const keys = Array.from({ length: 8 }, (_, i) => `p${32 + i}`);
  t.same(store.keys(), keys, 'the newest eight are held');
  const now = entryInodes(dir);
  t.equal(now.size, 8, 'still eight files');
  t.same(
    [...now].filter((ino) => !first.has(ino)),
    [],
    'each of them one of the first eight, taken over',
  );
  for (const key of keys) t.ok(isFixture(key, (await store.get(key))!), `${key} reads back exactly`);
  t.equal(store.stats().evictions, 32);
  t.equal(store.stats().reusedFiles, 32, 'every write after the first eight took over a file');
  // A larger entry is written to a new file: overwriting a smaller one in place would exceed the budget.
  t.ok(store.put('p-big', fixtureBytes('p-big', 40)));
  await store.flush();
  t.ok(isFixture('p-big', (await store.get('p-big'))!), 'the larger entry reads back exactly');
  t.ok(filesOn(dir).reduce((a, f) => a + f.size, 0) <= 8 * one, 'within the budget on disk');
  t.same(readdirSync(path.join(dir, 'tmp')), [], 'no temp file left');
  await store.close();
  const reopened = await DiskStore.open(dir, { maxBytes: 8 * one, fingerprint: FP });
  t.same(reopened.stats().rejected, { fingerprint: 0, checksum: 0, truncated: 0, io: 0 }, 'no file found damaged after a restart');
  t.equal(reopened.entries, store.entries, 'every entry indexed again');
  await reopened.close();
});

t.test('a put of a held key with a larger entry overwrites its own file', async (t) => {
  const dir = await tmpDir(t);
  const store = await DiskStore.open(dir, { maxBytes: 1 << 20, fingerprint: FP });
  store.put('p-a', fixtureBytes('p-a', 4));
  await store.flush();
  const ino = statSync(fileOf(dir, 'p-a')).ino;
  store.put('p-a', fixtureBytes('p-a', 30));
  await store.flush();
  t.equal(statSync(fileOf(dir, 'p-a')).ino, ino, 'the same inode');
  t.equal(store.stats().reusedFiles, 1, 'taken over');
  t.equal(statSync(fileOf(dir, 'p-a')).size, fixtureBytes('p-a', 30).length, 'at the new size');
  t.ok(isFixture('p-a', (await store.get('p-a'))!), 'holding the new entry');
  await store.close();
});

t.test('a file to take over that has gone is created afresh; a dropped takeover removes the file it was to take', async (t) => {
  const dir = await tmpDir(t);
  const one = fixtureBytes('p0', 16).length;
  const store = await DiskStore.open(dir, { maxBytes: 2 * one, fingerprint: FP });
  for (const k of ['p0', 'p1']) {
    store.put(k, fixtureBytes(k, 16));
    await store.flush();
  }
  await rm(fileOf(dir, 'p0'));
  t.ok(store.put('p2', fixtureBytes('p2', 16)), 'p2 evicts p0, whose file is gone');
  await store.flush();
  t.ok(isFixture('p2', (await store.get('p2'))!), 'p2 written to a new file');
  t.equal(store.stats().reusedFiles, 0, 'nothing taken over');
  t.equal(store.stats().rejected.io, 0, 'not an error');

  // p3 evicts p1 and p4 evicts p2, each to take over the evicted file; p4 waits in the queue
  // (behind p3, or the read's touch) until a delete drops it: p2's file must go all the same.
  store.put('p3', fixtureBytes('p3', 16));
  store.put('p4', fixtureBytes('p4', 16));
  t.ok(store.stats().pendingWrites >= 1, 'p4 queued');
  t.ok(store.delete('p4'));
  await store.flush();
  t.same(store.keys(), ['p3']);
  t.same(
    filesOn(dir).map((f) => f.file),
    [path.join(fileName('p3').slice(0, 2), fileName('p3'))],
    'one file on disk, p3’s',
  );
  await store.close();
});
