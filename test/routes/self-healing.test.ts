// Fault injection on the real service: a worker thread of the engine dies mid-stream. The
// stream that had started ends with an engine_restarted error event, requests that had not
// started get 503 engine_restarted with Retry-After, /health/ready turns 503, the engine comes
// back with the model reloaded (same greedy text), kvserve_engine_restarts_total counts it,
// the new pool holds nothing of the dead requests, and the third failure within the window
// ends supervision (the service would exit 1).
import t, { type Test } from 'tap';
import { scrape } from '../helpers/metrics-text.js';
import { waitFor } from '../helpers/poll.js';
import { startServer } from '../helpers/server.js';
import { type Outcome, requestOutcome } from '../helpers/stream-outcome.js';

// One batch slot: the second and third requests wait in the engine's queue, never started.
const server = await startServer({ faultInjection: true, env: { MAX_RUNNING_SEQUENCES: '1', ENGINE_MAX_RESTARTS: '3', ENGINE_RESTART_WINDOW_MS: '60000' } });
t.teardown(() => server.close());
const completions = `${server.url}/v1/completions`;
const greedy = { prompt: 'ROMEO:\n', temperature: 0, ignore_eos: true };

async function readyStatus(): Promise<number> {
  const res = await fetch(`${server.url}/health/ready`);
  await res.arrayBuffer();
  return res.status;
}

/** Polls readiness from now until it is 200 again; returns the statuses seen, in order. */
async function untilReady(): Promise<number[]> {
  const seen: number[] = [];
  await waitFor(
    'readiness to return',
    async () => {
      seen.push(await readyStatus());
      return seen.at(-1) === 200;
    },
    { timeoutMs: 60_000, intervalMs: 20 },
  );
  return seen;
}

function refusedWithRestart(t: Test, o: Outcome, what: string): void {
  t.equal(o.status, 503, `${what}: 503`);
  t.match(String(o.headers['content-type']), /^application\/json/, `${what}: a JSON answer, not an event stream`);
  t.equal(o.headers['retry-after'], '1', `${what}: Retry-After`);
  t.strictSame(Object.keys((o.json as { error: object }).error).sort(), ['code', 'message', 'param', 'type'], `${what}: the error shape`);
  t.match(o.json, { error: { code: 'engine_restarted', type: 'server_error', param: null } }, `${what}: engine_restarted`);
}

async function poolIsClean(t: Test): Promise<void> {
  const stats = await server.engine.stats();
  t.equal(stats.running + stats.waiting, 0, 'nothing running or queued in the new engine');
  t.equal(stats.cache.pinnedEntries, 0, 'no pinned KV entry');
  t.equal(stats.cache.entries.active, 0, 'no running reservation');
  t.equal(stats.cache.bytes, stats.cache.entryBytes, 'pool bytes == the sum of its entries');
  t.equal(server.engine.inFlight, 0, 'the client holds no request in the worker');
  t.equal(server.app.services.admission.inFlight, 0, 'no admission ticket left on the HTTP thread');
  const m = await scrape(server.url);
  t.equal(m.get('kvserve_kv_cache_pinned_entries'), 0, '/metrics: 0 pinned entries');
}

let reference = '';
t.test('before any failure: a greedy reference text', async (t) => {
  const res = await fetch(completions, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...greedy, max_tokens: 40 }),
  });
  t.equal(res.status, 200);
  reference = ((await res.json()) as { choices: Array<{ text: string }> }).choices[0]!.text;
  t.equal(reference.length > 0, true);
});

t.test('the engine worker crashes mid-stream', async (t) => {
  const first = server.engine;
  let queued: Array<Promise<Outcome>> = [];
  let crashed = false;
  const streaming = requestOutcome(completions, { ...greedy, max_tokens: 2000, stream: true }, (event) => {
    if (crashed || !event.choices?.[0]?.text) return;
    crashed = true;
    // Two more requests queue behind the running one (one slot), then the worker dies.
    queued = [requestOutcome(completions, { ...greedy, max_tokens: 5, stream: true }), requestOutcome(completions, { ...greedy, max_tokens: 5 })];
    void waitFor('two requests queued in the engine', async () => (await first.stats()).waiting === 2).then(() => first.crash('engine'));
  });
  const running = await streaming;
  t.ok(crashed, 'the stream had started when the worker crashed');
  t.equal(running.status, 200);
  t.ok(running.textChunks > 0, `text came first (${running.textChunks} chunks)`);
  t.ok(running.textChunks < 2000, 'the stream was cut short');
  t.equal(running.errorEvents.length, 1, 'one error event');
  t.match(running.events.at(-1), { error: { code: 'engine_restarted', type: 'server_error' } }, 'the last event is engine_restarted');
  t.ok(running.done, 'then [DONE]');
  t.equal(first.alive, false, 'the failed engine is no longer alive');

  const seen = await untilReady();
  t.equal(seen[0], 503, `/health/ready said 503 while restarting (${seen.length} probes)`);
  const [stream, plain] = await Promise.all(queued);
  refusedWithRestart(t, stream!, 'the queued stream');
  refusedWithRestart(t, plain!, 'the queued non-stream request');

  t.not(server.engine, first, 'a new engine serves');
  t.equal(server.supervisor.restarts, 1);
  const m = await scrape(server.url);
  t.equal(m.get('kvserve_engine_restarts_total'), 1, 'kvserve_engine_restarts_total counts the restart');
  t.equal(m.get('kvserve_ready'), 1);
  await poolIsClean(t);

  const again = await fetch(completions, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...greedy, max_tokens: 40 }),
  });
  t.equal(again.status, 200, 'the restarted engine serves');
  t.equal(((await again.json()) as { choices: Array<{ text: string }> }).choices[0]!.text, reference, 'with the model reloaded: the same greedy text');
});

t.test('the tokenizer thread dies: the engine restarts as a whole', async (t) => {
  const before = server.engine;
  before.crash('tokenizer');
  await waitFor('the failure to be seen', () => !before.alive);
  const seen = await untilReady();
  t.equal(seen[0], 503, 'not ready while restarting');
  t.equal(server.supervisor.restarts, 2);
  t.equal((await scrape(server.url)).get('kvserve_engine_restarts_total'), 2);
  const res = await fetch(completions, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...greedy, max_tokens: 40 }),
  });
  t.equal(res.status, 200);
  t.equal(((await res.json()) as { choices: Array<{ text: string }> }).choices[0]!.text, reference);
  await poolIsClean(t);
});

t.test('the third failure within the window gives up: the service would exit 1', async (t) => {
  const before = server.engine;
  before.crash('engine');
  await waitFor('supervision to end', () => server.gaveUp.length > 0);
  t.match(server.gaveUp[0], /3 engine failures within 60000 ms/);
  t.ok(server.supervisor.gaveUp);
  t.equal(await readyStatus(), 503, 'not ready: no restart');
  t.equal(server.supervisor.restarts, 2, 'no third restart');
  const res = await fetch(completions, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...greedy, max_tokens: 4 }) });
  t.equal(res.status, 503);
  t.equal(res.headers.get('retry-after'), '1');
});
