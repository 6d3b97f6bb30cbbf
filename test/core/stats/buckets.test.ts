import t from 'tap';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { BucketHistogram, newObservations } from '../../../src/core/stats/buckets.js';

const BOUNDS = [0.001, 0.01, 0.1, 1];

/** Bucket counts (cumulative, as exported) and sum of a prom-client histogram. */
async function exported(h: Histogram): Promise<{ buckets: number[]; sum: number; count: number }> {
  const { values } = await h.get();
  const buckets = values.filter((v) => v.metricName?.endsWith('_bucket')).map((v) => v.value);
  const sum = values.find((v) => v.metricName?.endsWith('_sum'))!.value;
  const count = values.find((v) => v.metricName?.endsWith('_count'))!.value;
  return { buckets, sum, count };
}

t.test('replaying snapshots exports the same buckets and sum as observing directly', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(fc.double({ min: 0, max: 5, noNaN: true }), { maxLength: 30 }), { minLength: 1, maxLength: 5 }), async (scrapes) => {
      const registry = new Registry();
      const direct = new Histogram({ name: 'direct', help: 'h', buckets: BOUNDS, registers: [registry] });
      const replayed = new Histogram({ name: 'replayed', help: 'h', buckets: BOUNDS, registers: [registry] });
      const worker = new BucketHistogram(BOUNDS);
      let last;
      for (const values of scrapes) {
        for (const v of values) {
          worker.observe(v);
          direct.observe(v);
        }
        const now = worker.snapshot();
        for (const [value, count] of newObservations(now, last)) for (let i = 0; i < count; i++) replayed.observe(value);
        last = now;
      }
      const a = await exported(direct);
      const b = await exported(replayed);
      t.same(b.buckets, a.buckets);
      t.equal(b.count, a.count);
      t.ok(Math.abs(b.sum - a.sum) <= 1e-9 * Math.max(1, a.sum), `sum ${b.sum} vs ${a.sum}`);
    }),
    { numRuns: 200 },
  );
});

t.test('values on a bound count in that bound (le is inclusive)', async (t) => {
  const h = new BucketHistogram([1, 2]);
  for (const v of [1, 1, 2, 3]) h.observe(v);
  t.same(h.snapshot().counts, [2, 1, 1]);
  t.same(newObservations(h.snapshot(), undefined), [
    [1, 2],
    [2, 1],
    [3, 1],
  ]);
});

t.test('bounds must increase', async (t) => {
  t.throws(() => new BucketHistogram([1, 1]), RangeError);
});
