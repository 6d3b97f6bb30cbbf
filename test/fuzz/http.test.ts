// The HTTP fuzzer in the suite: a fixed seed, 5,000 requests over app.inject across every route
// and 300 raw ones over the socket, bounded in time. No answer ≥ 500, every refusal in the
// error shape, and afterwards the server is ready and the KV pool's invariants hold.
// Longer runs, any seed: `npm run fuzz` (test/fuzz/run.ts).
import t from 'tap';
import { waitFor } from '../helpers/poll.js';
import { startServer } from '../helpers/server.js';
import { runFuzz } from './runner.js';

const SEED = 15;
const RUNS = 5000;
const WIRE_RUNS = 300;

const server = await startServer();
t.teardown(() => server.close());

t.test(`${RUNS} fuzzed requests over inject and ${WIRE_RUNS} over the wire (seed ${SEED})`, async (t) => {
  const port = Number(new URL(server.url).port);
  const report = await runFuzz({ app: server.app, port, seed: SEED, runs: RUNS, wireRuns: WIRE_RUNS, timeLimitMs: 200_000 });
  t.equal(report.injected, RUNS, `${report.injected} injected within the time bound`);
  t.equal(report.wire, WIRE_RUNS, `${report.wire} over the wire`);
  t.comment(`statuses: ${JSON.stringify(report.statuses)}`);
  t.strictSame(report.problems.slice(0, 20), [], `no 5xx, every refusal in the error shape (${report.problems.length} problems)`);
  t.ok(
    Object.keys(report.statuses).some((s) => s === '200'),
    'some requests were served',
  );
  t.ok(
    Object.keys(report.statuses).some((s) => s === '400'),
    'some were refused',
  );
});

t.test('afterwards: ready, nothing running, the pool intact', async (t) => {
  const ready = await fetch(`${server.url}/health/ready`);
  t.equal(ready.status, 200, 'still ready');
  await waitFor('the engine to drain', async () => {
    const s = await server.engine.stats();
    return s.running + s.waiting === 0;
  });
  const { cache } = await server.engine.stats();
  t.equal(cache.bytes, cache.entryBytes, 'pool bytes == the sum of its entries');
  t.equal(cache.pinnedEntries, 0, '0 pinned entries');
  t.equal(cache.entries.active, 0, 'no running reservation');
  t.ok(cache.bytes <= cache.capacityBytes, 'within the budget');
  t.equal(server.app.services.admission.inFlight, 0, 'every admission released');
});
