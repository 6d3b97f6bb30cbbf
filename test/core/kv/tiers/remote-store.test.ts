// The shared tier against a real redis-server: entries round-trip exactly; another model's,
// damaged ones, or one stored under another key are never served; a Redis that stops
// answering (SIGSTOP) costs a lookup no more than its timeout; a Redis that is gone fails
// every call at once, and the store reconnects when it returns.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { encodeEntry } from '../../../../src/core/kv/entry/format.js';
import { RemoteStore } from '../../../../src/core/kv/tiers/remote-store.js';
import { needs } from '../../../helpers/binaries.js';
import { freePort } from '../../../helpers/net.js';
import { FP, OTHER_FP, fixtureBytes, fixtureEntry } from './entry-fixture.js';

async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const probe = new RemoteStore({ url: `redis://127.0.0.1:${port}`, fingerprint: FP, timeoutMs: 200, maxPendingBytes: 1 << 20 });
    await sleep(50);
    const up = probe.connected;
    await probe.close(0);
    if (up) return child;
  }
  throw new Error('redis-server did not start');
}

async function until(check: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

if (needs(t, 'redis-server')) {
  const port = await freePort();
  let redis = await startRedis(port);
  t.teardown(() => {
    redis.kill('SIGKILL');
  });
  const store = new RemoteStore({ url: `redis://127.0.0.1:${port}`, fingerprint: FP, timeoutMs: 150, maxPendingBytes: 1 << 20 });
  t.teardown(() => store.close(0));
  await until(() => store.connected);

  t.test('entries round-trip exactly; missing keys are undefined', async (t) => {
    t.ok(store.put('b1', fixtureBytes('b1', 16)));
    t.ok(store.put('s-one', fixtureBytes('s-one', 40)));
    await until(() => store.stats().bytes.sent > 0);
    await sleep(50);
    const [b1, missing, s1] = await store.getMany(['b1', 'nope', 's-one']);
    t.strictSame(b1?.payload, fixtureEntry('b1', 16).payload, 'the block, bit for bit');
    t.strictSame(Array.from(b1!.tokens), Array.from(fixtureEntry('b1', 16).tokens), 'with its tokens');
    t.equal(missing, undefined);
    t.equal(s1?.kind, 'session');
    t.ok(store.stats().bytes.received > 0, 'received bytes are counted');
  });

  t.test("another model's entries, damaged ones and ones under another key are never served", async (t) => {
    // Written by a store of another model but read under this one's namespace: only the
    // header's fingerprint stands between them, and it is checked.
    const raw = new RemoteStore({ url: `redis://127.0.0.1:${port}`, fingerprint: FP, timeoutMs: 150, maxPendingBytes: 1 << 20 });
    t.teardown(() => raw.close(0));
    await until(() => raw.connected);
    raw.put('foreign', encodeEntry(fixtureEntry('foreign', 16, OTHER_FP)));
    const damaged = fixtureBytes('damaged', 16);
    damaged[damaged.length - 100]! ^= 0xff;
    raw.put('damaged', damaged);
    raw.put('moved', fixtureBytes('elsewhere', 16));
    await sleep(100);
    const before = store.stats().rejected;
    t.strictSame(await store.getMany(['foreign', 'damaged', 'moved']), [undefined, undefined, undefined]);
    t.equal(store.stats().rejected - before, 3, 'each counted as rejected');
  });

  t.test('a Redis that stops answering costs a lookup its timeout, no more', async (t) => {
    redis.kill('SIGSTOP');
    t.teardown(() => {
      redis.kill('SIGCONT');
    });
    const started = performance.now();
    const got = await store.getMany(['b1']);
    const ms = performance.now() - started;
    t.strictSame(got, [undefined], 'a miss');
    t.ok(ms < 150 + 1000, `answered after ${ms.toFixed(0)} ms (timeout 150 ms)`);
    t.ok(store.stats().errors.get >= 1, 'counted as a get error');
    const again = performance.now();
    t.strictSame(await store.getMany(['b1']), [undefined]);
    t.ok(performance.now() - again < 50, 'the next lookup, within a second, is a miss at once');
    redis.kill('SIGCONT');
    await until(() => store.connected);
    await sleep(1100);
    t.equal((await store.getMany(['b1']))[0]?.key, 'b1', 'answering again, it serves again');
  });

  t.test('a Redis that is gone fails every call at once; the store reconnects when it returns', async (t) => {
    redis.kill('SIGKILL');
    await once(redis, 'exit');
    t.ok(await until(() => !store.connected), 'the store sees it gone');
    const started = performance.now();
    t.strictSame(await store.getMany(['b1']), [undefined]);
    t.ok(performance.now() - started < 50, 'a lookup returns at once');
    t.notOk(store.put('b2', fixtureBytes('b2', 16)), 'a publish is dropped');
    redis = await startRedis(port);
    t.ok(await until(() => store.connected, 10_000), 'reconnected');
    t.ok(store.put('b2', fixtureBytes('b2', 16)));
    await sleep(100);
    t.equal((await store.getMany(['b2']))[0]?.key, 'b2', 'and serving again');
  });
}
