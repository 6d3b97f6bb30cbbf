// Overload answers with a status, never with a broken stream: 1,000 streaming completions at
// once against the default limits (16 running, 64 queued) — every request either streams text
// to its end or is refused with 429/503 + Retry-After in OpenAI's error shape; not one 200
// stream carries an error event for a request that never produced a token. The same under KV
// pressure, where refusals come from the engine's queue after a wait (kv_cache_full).
import t, { type Test } from 'tap';
import { scrape } from '../helpers/metrics-text.js';
import { waitFor } from '../helpers/poll.js';
import { type TestServer, startServer } from '../helpers/server.js';
import { type Outcome, requestOutcome } from '../helpers/stream-outcome.js';

interface Tally {
  streamed: number;
  refused: Record<string, number>;
}

/** Checks every outcome; returns what was served and refused, by status and code. */
function check(t: Test, outcomes: Outcome[]): Tally {
  const tally: Tally = { streamed: 0, refused: {} };
  let badStreams = 0;
  let badRefusals = 0;
  for (const o of outcomes) {
    if (o.status === 200) {
      tally.streamed++;
      // The guarantee: an error event only ever follows text (a request already streaming).
      if (o.errorEvents.some((e) => !e.afterText) || o.textChunks === 0 || !o.done) badStreams++;
      continue;
    }
    const error = (o.json as { error?: Record<string, unknown> } | undefined)?.error;
    const shaped = error !== undefined && ['code', 'message', 'param', 'type'].every((k) => k in error) && Object.keys(error).length === 4;
    const ok = (o.status === 429 || o.status === 503) && o.headers['retry-after'] === '1' && shaped;
    if (!ok) badRefusals++;
    const key = `${o.status} ${String(error?.code)}`;
    tally.refused[key] = (tally.refused[key] ?? 0) + 1;
  }
  t.equal(badStreams, 0, `every 200 stream (${tally.streamed}) carried text, ended with [DONE], and no error event before a token`);
  t.equal(badRefusals, 0, `every refusal is 429/503 with Retry-After in the error shape: ${JSON.stringify(tally.refused)}`);
  const noTokenErrors = outcomes.reduce((n, o) => n + o.errorEvents.filter((e) => !e.afterText).length, 0);
  t.equal(noTokenErrors, 0, '0 error events inside 200 streams for requests that never produced a token');
  return tally;
}

async function settled(t: Test, server: TestServer): Promise<void> {
  await waitFor('the engine to drain', async () => {
    const s = await server.engine.stats();
    return s.running + s.waiting === 0 && server.engine.inFlight === 0;
  });
  t.equal(server.app.services.admission.inFlight, 0, 'every admission released');
  const s = await server.engine.stats();
  t.equal(s.cache.pinnedEntries, 0, 'no pinned KV entry left');
  t.equal(s.cache.bytes, s.cache.entryBytes, 'pool bytes == the sum of its entries');
  const ready = await fetch(`${server.url}/health/ready`);
  t.equal(ready.status, 200, 'still ready');
}

t.test('1,000 concurrent streams against the default limits', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  const { maxRunning, maxQueued } = server.config.scheduler;
  t.equal(maxRunning + maxQueued, 80, 'the defaults: 16 running + 64 queued');
  const before = await scrape(server.url);
  const outcomes = await Promise.all(
    Array.from({ length: 1000 }, (_, i) =>
      requestOutcome(`${server.url}/v1/completions`, { prompt: `ROMEO ${i}:\n`, max_tokens: 3, ignore_eos: true, stream: true }),
    ),
  );
  const tally = check(t, outcomes);
  t.ok(tally.streamed >= maxRunning, `${tally.streamed} served`);
  const refused = Object.values(tally.refused).reduce((a, b) => a + b, 0);
  t.equal(tally.streamed + refused, 1000);
  t.ok((tally.refused['429 queue_full'] ?? 0) > 0, `${tally.refused['429 queue_full'] ?? 0} refused with 429 queue_full`);
  const after = await scrape(server.url);
  const rejected = (m: Map<string, number>) => m.get('kvserve_requests_rejected_total{reason="queue_full"}') ?? 0;
  t.equal(rejected(after) - rejected(before), tally.refused['429 queue_full'] ?? 0, 'kvserve_requests_rejected_total{reason="queue_full"} counts them');
  await settled(t, server);
});

t.test('under KV pressure, requests that wait too long for KV room get 503, not a broken stream', async (t) => {
  // 4 MiB = 1,024 tokens of the shipped model: three requests of ~310 tokens fit at once.
  const server = await startServer({ env: { KV_CACHE_MAX_BYTES: String(4 * 2 ** 20), KV_ADMISSION_TIMEOUT_MS: '200' } });
  t.teardown(() => server.close());
  const outcomes = await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      requestOutcome(`${server.url}/v1/completions`, { prompt: `JULIET ${i}:\n`, max_tokens: 300, ignore_eos: true, stream: true }),
    ),
  );
  const tally = check(t, outcomes);
  t.ok(tally.streamed >= 3, `${tally.streamed} served`);
  t.ok((tally.refused['503 kv_cache_full'] ?? 0) > 0, `${tally.refused['503 kv_cache_full'] ?? 0} refused with 503 kv_cache_full after waiting in the queue`);
  await settled(t, server);
});
