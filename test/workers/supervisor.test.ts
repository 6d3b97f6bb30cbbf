// The supervisor's bookkeeping, with stand-in engines (the real engine's failure and restart
// are tested end to end in test/routes/self-healing.test.ts): failures counted in a sliding
// window, a failed start counted and retried, giving up at the budget, nothing after close.
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { EngineSupervisor, type Supervised } from '../../src/workers/supervisor.js';

class Stub implements Supervised {
  closed = false;
  #listeners: Array<(f: string) => void> = [];
  onFailure(listener: (f: string) => void): void {
    this.#listeners.push(listener);
  }
  fail(why = 'boom'): void {
    for (const l of this.#listeners) l(why);
  }
  async close(): Promise<number> {
    this.closed = true;
    return 0;
  }
}

function harness(opts: { maxRestarts: number; restartWindowMs: number; failStarts?: number }) {
  const engines: Stub[] = [];
  const gaveUp: string[] = [];
  let failStarts = opts.failStarts ?? 0;
  let starts = 0;
  const start = async (): Promise<Stub> => {
    starts++;
    if (starts > 1 && failStarts-- > 0) throw new Error('model gone');
    const e = new Stub();
    engines.push(e);
    return e;
  };
  return { engines, gaveUp, start, opts: { ...opts, start, onEngine: () => {}, onGiveUp: (r: string) => gaveUp.push(r), retryDelayMs: 1 } };
}

t.test('restarts after a failure, closing the failed engine', async (t) => {
  const h = harness({ maxRestarts: 3, restartWindowMs: 60_000 });
  const s = await EngineSupervisor.start(h.opts);
  h.engines[0]!.fail();
  await s.settled();
  t.equal(s.restarts, 1);
  t.ok(h.engines[0]!.closed, 'the failed engine was closed');
  t.equal(s.engine, h.engines[1]);
  t.same(h.gaveUp, []);
});

t.test('the third failure within the window gives up', async (t) => {
  const h = harness({ maxRestarts: 3, restartWindowMs: 60_000 });
  const s = await EngineSupervisor.start(h.opts);
  for (let i = 0; i < 3; i++) {
    s.engine.fail();
    await s.settled();
  }
  t.equal(s.restarts, 2);
  t.equal(h.gaveUp.length, 1);
  t.match(h.gaveUp[0], /3 engine failures within 60000 ms/);
  t.ok(s.gaveUp);
});

t.test('failures older than the window are forgotten', async (t) => {
  const h = harness({ maxRestarts: 2, restartWindowMs: 50 });
  const s = await EngineSupervisor.start(h.opts);
  for (let i = 0; i < 4; i++) {
    s.engine.fail();
    await s.settled();
    await sleep(80);
  }
  t.equal(s.restarts, 4);
  t.same(h.gaveUp, []);
});

t.test('a restart whose start fails counts as a failure and is retried', async (t) => {
  const h = harness({ maxRestarts: 3, restartWindowMs: 60_000, failStarts: 1 });
  const s = await EngineSupervisor.start(h.opts);
  s.engine.fail();
  await s.settled();
  t.equal(s.restarts, 1, 'started on the second try');
  s.engine.fail();
  await s.settled();
  t.equal(h.gaveUp.length, 1, 'three failures: the crash, the failed start, the second crash');
});

t.test('after close, a failure starts nothing', async (t) => {
  const h = harness({ maxRestarts: 3, restartWindowMs: 60_000 });
  const s = await EngineSupervisor.start(h.opts);
  await s.close();
  s.engine.fail();
  await s.settled();
  t.equal(s.restarts, 0);
  t.equal(h.engines.length, 1);
});
