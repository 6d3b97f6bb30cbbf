// Child process of disk-crash.test.ts: writes entries to a DiskStore as fast as it can until
// it is killed. After each flush it prints the keys whose writes (or deletes) have completed:
// those must survive the kill; anything else may be lost, but nothing may come back corrupt.
// Some writes replace a held key with a larger entry, which overwrites the key's own file
// (renamed aside, rewritten, renamed back): announced first with "r key", as a kill during it
// may lose the key.
import { DiskStore } from '../../../../src/core/kv/tiers/disk-store.js';
import { FP, fixtureBytes } from './entry-fixture.js';

const [dir, seedArg] = process.argv.slice(2);
let s = Number(seedArg) * 7919 + 1;
const rand = (n: number) => {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  return s % n;
};

// A budget no run reaches: an eviction would remove a completed write legitimately.
const store = await DiskStore.open(dir!, { maxBytes: 2 ** 40, fingerprint: FP });
process.stdout.write('ready\n');
const written: string[] = [];
const tokens = new Map<string, number>();
for (let i = 0; ; ) {
  const lines: string[] = [];
  for (let b = 1 + rand(6); b > 0; b--) {
    const replace = written.length > 10 && rand(3) === 0;
    const key = replace ? written[rand(written.length)]! : `p-${seedArg}-${i++}`;
    // Up to ~2 MiB, so that a kill often lands inside a write.
    const n = (tokens.get(key) ?? 0) + 1 + rand(4000);
    tokens.set(key, n);
    if (replace) process.stdout.write(`r ${key}\n`);
    store.put(key, fixtureBytes(key, n));
    lines.push(`w ${key}`);
    if (!replace) written.push(key);
  }
  if (written.length > 10 && rand(3) === 0) {
    const key = written.splice(rand(written.length), 1)[0]!;
    store.delete(key);
    lines.push(`d ${key}`);
  }
  await store.flush();
  process.stdout.write(`${lines.join('\n')}\n`);
}
