// The scheduler seen through HTTP: a full queue answers 429 at once, concurrent requests share
// batched steps (kvserve_batch_size), and each batched request returns what it returns alone.
import t from 'tap';
import { postJson } from '../helpers/http.js';
import { scrape } from '../helpers/metrics-text.js';
import { startServer } from '../helpers/server.js';

const greedy = { temperature: 0, ignore_eos: true };

t.test('a full queue gets 429 server_overloaded with Retry-After, before running work ends', async (t) => {
  const server = await startServer({ env: { MAX_RUNNING_SEQUENCES: '1', MAX_QUEUED_REQUESTS: '0' } });
  t.teardown(() => server.close());
  const before = await scrape(server.url);
  let longDone = false;
  const long = postJson(`${server.url}/v1/completions`, { prompt: 'ROMEO:\n', max_tokens: 1500, ...greedy }).then((r) => {
    longDone = true;
    return r;
  });
  // Wait until the long request runs (it holds the only slot).
  for (;;) {
    const m = await scrape(server.url);
    if (m.get('kvserve_requests_running') === 1) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const refused = await postJson(`${server.url}/v1/completions`, { prompt: 'JULIET:\n', max_tokens: 5 });
  t.notOk(longDone, 'refused while the running request was still generating');
  t.equal(refused.status, 429);
  t.equal(refused.headers.get('retry-after'), '1');
  t.equal(refused.json.error.type, 'server_overloaded');
  t.equal(refused.json.error.code, 'queue_full');
  t.match(refused.json.error.message, /capacity/);
  // Streaming requests are refused the same way, with a status code rather than a 200 stream.
  const streamed = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'KING:\n', max_tokens: 5, stream: true }),
  });
  t.equal(streamed.status, 429);
  t.equal(((await streamed.json()) as { error: { code: string } }).error.code, 'queue_full');
  const after = await scrape(server.url);
  t.equal(after.get('kvserve_requests_rejected_total{reason="queue_full"}')! - before.get('kvserve_requests_rejected_total{reason="queue_full"}')!, 2);
  t.equal((await long).status, 200);
});

t.test('concurrent requests share batched steps and each returns its text from alone', async (t) => {
  const server = await startServer({ env: { MAX_RUNNING_SEQUENCES: '8' } });
  t.teardown(() => server.close());
  const prompts = ['ROMEO:\n', 'JULIET:\nO', 'KING HENRY:\n', 'First Citizen:\n', 'MENENIUS:\nWhy', 'HAMLET:\nTo', 'LEAR:\n', 'PUCK:\n'];
  const body = (prompt: string, i: number) => ({ prompt, max_tokens: 20 + 3 * i, ...greedy });
  const alone: string[] = [];
  for (const [i, p] of prompts.entries()) alone.push((await postJson(`${server.url}/v1/completions`, body(p, i))).json.choices[0].text);
  const before = await scrape(server.url);
  const together = await Promise.all(prompts.map((p, i) => postJson(`${server.url}/v1/completions`, body(p, i))));
  for (const [i, r] of together.entries()) t.equal(r.json.choices[0].text, alone[i], `request ${i}: same text as alone`);
  const after = await scrape(server.url);
  const steps = (m: Map<string, number>, le: string) => m.get(`kvserve_batch_size_bucket{le="${le}"}`) ?? 0;
  const total = steps(after, '+Inf') - steps(before, '+Inf');
  const single = steps(after, '1') - steps(before, '1');
  t.ok(total > 0, `${total} decode steps`);
  t.ok(single < total, `${total - single} of them batched more than one sequence`);
  t.equal(steps(after, '8') - steps(before, '8'), total, 'none over MAX_RUNNING_SEQUENCES');
  t.ok((after.get('kvserve_step_duration_seconds_count') ?? 0) > (before.get('kvserve_step_duration_seconds_count') ?? 0), 'step durations recorded');
  const tokens = (m: Map<string, number>) => m.get('kvserve_batch_size_sum') ?? 0;
  // Every generated token but each request's first (sampled after its prefill) came from a decode step.
  const generated = together.reduce((n, r) => n + r.json.usage.completion_tokens, 0);
  const decoded = tokens(after) - tokens(before);
  // (The sum is replayed from per-bucket means, exact up to float rounding.)
  t.ok(Math.abs(decoded - (generated - prompts.length)) < 1e-6, `batch sizes add up to the decoded tokens (${decoded} vs ${generated - prompts.length})`);
});
