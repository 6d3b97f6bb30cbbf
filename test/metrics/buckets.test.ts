// The engine worker's histograms travel as snapshots and are exported as they are: the
// exposition must be what prom-client would write had it observed the same values itself.
import t from 'tap';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { BucketHistogram, LATENCY_BUCKETS, latencyBuckets } from '../../src/metrics/buckets.js';
import { ScrapeSource, externalHistogram, histogramValues } from '../../src/metrics/external.js';

const BOUNDS = [0.001, 0.01, 0.1, 1];

t.test('a snapshot exports the same buckets, sum and count as prom-client observing directly', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.double({ min: 0, max: 5, noNaN: true }), { maxLength: 60 }), async (values) => {
      const registry = new Registry();
      const direct = new Histogram({ name: 'h', help: 'h', buckets: BOUNDS, registers: [registry] });
      const worker = new BucketHistogram(BOUNDS);
      for (const v of values) {
        worker.observe(v);
        direct.observe(v);
      }
      const want = (await direct.get()).values.map((v) => ({ metricName: v.metricName, labels: v.labels, value: v.value }));
      const got = histogramValues('h', {}, worker.snapshot());
      t.same(
        got.map((v) => [v.metricName, v.labels, v.value]),
        want.map((v) => [v.metricName, v.labels, v.value]),
      );
    }),
    { numRuns: 200 },
  );
});

t.test('an external histogram renders in the exposition with its labels', async (t) => {
  const registry = new Registry();
  const h = new BucketHistogram([1, 2]);
  for (const v of [0.5, 1, 3]) h.observe(v);
  externalHistogram({
    name: 'pause_seconds',
    help: 'p',
    labelNames: ['kind'],
    registry,
    source: new ScrapeSource(async () => h.snapshot()),
    series: (s) => [{ labels: { kind: 'major' }, snapshot: s }],
  });
  const text = await registry.metrics();
  t.match(text, '# TYPE pause_seconds histogram');
  t.match(text, 'pause_seconds_bucket{kind="major",le="1"} 2');
  t.match(text, 'pause_seconds_bucket{kind="major",le="+Inf"} 3');
  t.match(text, 'pause_seconds_sum{kind="major"} 4.5');
  t.match(text, 'pause_seconds_count{kind="major"} 3');
});

t.test('a scrape reads its source once, and a failing source serves the last figures', async (t) => {
  let reads = 0;
  let fail = false;
  const source = new ScrapeSource(async () => {
    reads++;
    if (fail) throw new Error('busy');
    return reads;
  });
  const [a, b, c] = await Promise.all([source.get(), source.get(), source.get()]);
  t.same([a, b, c], [1, 1, 1], 'one read for three metrics');
  await new Promise((r) => setImmediate(r));
  fail = true;
  t.equal(await source.get(), 1, 'the last figures when the source fails');
  t.equal(reads, 2);
});

t.test('values on a bound count in that bound (le is inclusive)', async (t) => {
  const h = new BucketHistogram([1, 2]);
  for (const v of [1, 1, 2, 3]) h.observe(v);
  t.same(h.snapshot().counts, [2, 1, 1]);
});

t.test('bounds must increase', async (t) => {
  t.throws(() => new BucketHistogram([1, 1]), RangeError);
});

t.test('latency buckets start below a millisecond and reach the request timeout', async (t) => {
  t.ok(LATENCY_BUCKETS[0]! <= 0.0001, 'an inter-token latency of ~0.6 ms falls several buckets up');
  t.equal(latencyBuckets(300).at(-1), 300);
  t.equal(latencyBuckets(900).at(-1), 900, 'a longer timeout adds a bucket');
});
