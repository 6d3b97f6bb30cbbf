// kill -9 at random moments while the disk tier writes: after each, reopening the directory
// must serve every entry whose write had completed, none whose delete had, and nothing that
// is not exactly the entry written under its key. Unfinished writes are found and removed.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeEntry, isRejected } from '../../../../src/core/kv/entry/format.js';
import { DiskStore } from '../../../../src/core/kv/tiers/disk-store.js';
import { FP, isFixture } from './entry-fixture.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const CHILD = fileURLToPath(new URL('./disk-crash-child.ts', import.meta.url));
const ROUNDS = 6;

/** Runs the child until a SIGKILL `afterMs` after it is ready; returns the lines it completed. */
function runAndKill(dir: string, seed: number, afterMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, String(seed)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      const wasReady = out.startsWith('ready\n');
      out += chunk.toString();
      if (!wasReady && out.startsWith('ready\n')) setTimeout(() => child.kill('SIGKILL'), afterMs);
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') return reject(new Error(`child exited with ${code ?? signal} before the kill`));
      // Only whole lines count as completed: the last one may have been cut by the kill.
      resolve(out.split('\n').slice(1, -1));
    });
  });
}

t.test('SIGKILL mid-write never loses a completed write and never serves a corrupt entry', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kvserve-crash-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const live = new Set<string>();
  const deleted = new Set<string>();
  let unfinished = 0;
  let replaced = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const afterMs = 150 + Math.floor(Math.random() * 600);
    const lines = await runAndKill(dir, round, afterMs);
    for (const line of lines) {
      const [op, key] = line.split(' ') as [string, string];
      if (op === 'w') live.add(key);
      // Being replaced when killed: it may be gone, or hold either entry (checked below).
      else if (op === 'r') live.delete(key);
      else {
        live.delete(key);
        deleted.add(key);
      }
    }
    const store = await DiskStore.open(dir, { maxBytes: 2 ** 40, fingerprint: FP });
    const { rejected } = store.stats();
    unfinished += rejected.truncated;
    replaced += lines.filter((l) => l.startsWith('r ')).length;
    t.same(
      { ...rejected, truncated: 0 },
      { fingerprint: 0, checksum: 0, truncated: 0, io: 0 },
      `round ${round} (kill after ${afterMs} ms, ${lines.length} completed ops): no damaged file, only unfinished temp files (${rejected.truncated})`,
    );
    let served = 0;
    for (const key of store.keys()) {
      const bytes = await store.get(key);
      if (!bytes) continue;
      const e = decodeEntry(bytes, FP);
      if (isRejected(e) || e.key !== key || !isFixture(key, bytes)) t.fail(`${key} served corrupt`);
      else served++;
    }
    t.equal(served, store.entries, `round ${round}: all ${served} entries served validate and are exactly what was written`);
    const missing = [...live].filter((k) => !store.has(k));
    t.same(missing, [], `round ${round}: all ${live.size} completed writes survived`);
    t.same(
      [...deleted].filter((k) => store.has(k)),
      [],
      `round ${round}: completed deletes stayed deleted`,
    );
    t.same(await readdir(path.join(dir, 'tmp')), [], 'no temp file left after open');
    await store.close();
  }
  t.ok(replaced > 0, `${replaced} entries were replaced in place`);
  t.comment(`unfinished writes found and removed across ${ROUNDS} kills: ${unfinished}`);
});
