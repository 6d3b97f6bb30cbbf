// /metrics tells the truth: a known sequence of requests moves each cache counter by exactly
// the expected amount, KV bytes follow the formula, and the exposition passes promtool.
import t from 'tap';
import { needs } from '../helpers/binaries.js';
import { spawnSync } from 'node:child_process';
import { postJson } from '../helpers/http.js';
import { scrape } from '../helpers/metrics-text.js';
import { startServer } from '../helpers/server.js';

const BLOCK = 16;
const BYTES_PER_TOKEN = 2 * 4 * 4 * 32 * 4; // 2 × layers × kv_heads × head_dim × 4 bytes (config.json)
const BLOCK_BYTES = BLOCK * BYTES_PER_TOKEN;
const greedy = { temperature: 0, ignore_eos: true, max_tokens: 8 };
const delta = (after: Map<string, number>, before: Map<string, number>, key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);

t.test('cache counters move by exact amounts and bytes follow the formula', async (t) => {
  const server = await startServer({ env: { KV_CACHE_BLOCK_SIZE: String(BLOCK) } });
  t.teardown(() => server.close());
  const url = `${server.url}/v1/completions`;
  const before = await scrape(server.url);

  const p = 'DUKE ORSINO:\nIf music be the food of love, play on; give me excess of it, that, surfeiting,\n';
  const q = `${p.slice(0, 40)}the appetite may sicken, and so die.\n`;
  const P = p.length; // byte-level tokenizer, ASCII: one token per character
  const Q = q.length;
  const blocksOf = (tokens: number) => Math.floor(tokens / BLOCK);
  // a: miss, P computed; keeps the full blocks of its P + 8 - 1 cached tokens.
  // b: same prompt, hit: every full block of its first P - 1 tokens reused.
  // c: partial: shares the first 40 characters, i.e. 2 full blocks, with p.
  const hitTokens = blocksOf(P - 1) * BLOCK;
  const a = await postJson(url, { prompt: p, ...greedy });
  const b = await postJson(url, { prompt: p, ...greedy });
  const c = await postJson(url, { prompt: q, ...greedy });
  t.same(
    [a, b, c].map((r) => r.json.usage.prompt_tokens_details.cached_tokens),
    [0, hitTokens, 2 * BLOCK],
  );
  const after = await scrape(server.url);
  t.equal(delta(after, before, 'kvserve_kv_cache_lookups_total{result="miss"}'), 1);
  t.equal(delta(after, before, 'kvserve_kv_cache_lookups_total{result="hit"}'), 1);
  t.equal(delta(after, before, 'kvserve_kv_cache_lookups_total{result="partial"}'), 1);
  t.equal(delta(after, before, 'kvserve_kv_cache_reused_tokens_total'), hitTokens + 2 * BLOCK);
  t.equal(delta(after, before, 'kvserve_kv_cache_computed_tokens_total'), P + (P - hitTokens) + (Q - 2 * BLOCK));
  t.equal(delta(after, before, 'kvserve_prompt_tokens_total'), 2 * P + Q);
  t.equal(delta(after, before, 'kvserve_generated_tokens_total'), 24);
  t.equal(delta(after, before, 'kvserve_request_finish_total{reason="length"}'), 3);
  t.equal(delta(after, before, 'kvserve_requests_total{route="/v1/completions",status="200"}'), 3);
  // Blocks kept: p's, plus q's own full blocks beyond the 2 it shares with p.
  const blocks = blocksOf(P + 8 - 1) + (blocksOf(Q + 8 - 1) - 2);
  t.equal(after.get('kvserve_kv_cache_entries{kind="prefix"}'), blocks);
  t.equal(after.get('kvserve_kv_cache_bytes'), blocks * BLOCK_BYTES, 'bytes = blocks × 16 tokens × 2 × layers × kv_heads × head_dim × 4');
  t.equal(after.get('kvserve_kv_cache_entries{kind="active"}'), 0);
  t.equal(after.get('kvserve_kv_cache_pinned_entries'), 0);
  t.equal(after.get('kvserve_kv_cache_capacity_bytes'), server.config.kvCache.maxBytes);
  t.equal(delta(after, before, 'kvserve_time_to_first_token_seconds_count'), 3);
  t.equal(delta(after, before, 'kvserve_inter_token_latency_seconds_count'), 3 * 7, 'one gap between each of 8 tokens');
});

t.test('LRU evictions, deletions and their bytes are counted exactly', async (t) => {
  // Room for 8 blocks (128 tokens): a second unrelated prompt must evict the first's blocks.
  const server = await startServer({ env: { KV_CACHE_MAX_BYTES: String(8 * BLOCK_BYTES), KV_CACHE_BLOCK_SIZE: String(BLOCK) } });
  t.teardown(() => server.close());
  const url = `${server.url}/v1/completions`;
  const before = await scrape(server.url);
  await postJson(url, { prompt: 'A'.repeat(70), ...greedy }); // keeps floor(77/16) = 4 blocks
  await postJson(url, { prompt: 'B'.repeat(70), ...greedy }); // needs 78 tokens of room while running
  await postJson(url, { prompt: 'C'.repeat(20), session_id: 's', ...greedy });
  const mid = await scrape(server.url);
  const evicted = delta(mid, before, 'kvserve_kv_cache_evictions_total{reason="lru"}');
  t.ok(evicted > 0, `${evicted} blocks evicted under pressure`);
  t.equal(delta(mid, before, 'kvserve_kv_cache_evicted_bytes_total{reason="lru"}'), evicted * BLOCK_BYTES);
  t.ok(mid.get('kvserve_kv_cache_bytes')! <= 8 * BLOCK_BYTES, 'never over the budget');
  const sessionBytes = (20 + 8 - 1) * BYTES_PER_TOKEN;
  t.equal(mid.get('kvserve_kv_cache_entries{kind="session"}'), 1);
  t.equal(mid.get('kvserve_kv_cache_bytes'), mid.get('kvserve_kv_cache_entries{kind="prefix"}')! * BLOCK_BYTES + sessionBytes);

  await fetch(`${server.url}/v1/sessions/s`, { method: 'DELETE' });
  const after = await scrape(server.url);
  t.equal(delta(after, mid, 'kvserve_kv_cache_evictions_total{reason="deleted"}'), 1);
  t.equal(delta(after, mid, 'kvserve_kv_cache_evicted_bytes_total{reason="deleted"}'), sessionBytes);
  t.equal(delta(mid, after, 'kvserve_kv_cache_bytes'), sessionBytes, 'deletion frees exactly the session');
});

t.test('idle sessions expire and are counted as ttl evictions', async (t) => {
  const server = await startServer({ env: { SESSION_TTL_MS: '200' } });
  t.teardown(() => server.close());
  const before = await scrape(server.url);
  const prompt = 'IAGO:\nI am not what I am.\n';
  await postJson(`${server.url}/v1/completions`, { prompt, session_id: 'idle', ...greedy });
  await new Promise((r) => setTimeout(r, 1200));
  const after = await scrape(server.url);
  t.equal(delta(after, before, 'kvserve_kv_cache_evictions_total{reason="ttl"}'), 1);
  t.equal(delta(after, before, 'kvserve_kv_cache_evicted_bytes_total{reason="ttl"}'), (prompt.length + 8 - 1) * BYTES_PER_TOKEN);
});

t.test('the exposition passes promtool check metrics', async (t) => {
  if (!needs(t, 'promtool')) return;
  const server = await startServer();
  t.teardown(() => server.close());
  await postJson(`${server.url}/v1/completions`, { prompt: 'HAMLET:\n', ...greedy });
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  t.equal(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
  for (const name of [
    'kvserve_kv_cache_lookups_total',
    'kvserve_kv_cache_reused_tokens_total',
    'kvserve_kv_cache_computed_tokens_total',
    'kvserve_kv_cache_bytes',
    'kvserve_kv_cache_capacity_bytes',
    'kvserve_kv_cache_entries',
    'kvserve_kv_cache_pinned_entries',
    'kvserve_kv_cache_evictions_total',
    'kvserve_kv_cache_evicted_bytes_total',
    'kvserve_requests_total',
    'kvserve_requests_running',
    'kvserve_requests_queued',
    'kvserve_requests_aborted_total',
    'kvserve_request_finish_total',
    'kvserve_time_to_first_token_seconds',
    'kvserve_inter_token_latency_seconds',
    'kvserve_request_duration_seconds',
    'kvserve_queue_time_seconds',
    'kvserve_prompt_tokens_total',
    'kvserve_generated_tokens_total',
    'kvserve_batch_size',
    'kvserve_step_duration_seconds',
    'kvserve_requests_rejected_total',
  ]) {
    t.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
  }
});

t.test('build, model and readiness info; process metrics under their standard names; the engine thread own figures', async (t) => {
  const server = await startServer();
  t.teardown(() => server.close());
  // Enough work for the engine thread to collect garbage at least once.
  await Promise.all(
    ['HAMLET:\n', 'OTHELLO:\n', 'LEAR:\n', 'PUCK:\n'].map((prompt) => postJson(`${server.url}/v1/completions`, { prompt, ...greedy, max_tokens: 400 })),
  );
  const m = await scrape(server.url);
  const info = [...m.keys()].find((k) => k.startsWith('kvserve_build_info{'));
  t.ok(info, 'kvserve_build_info');
  t.match(info!, /version="\d+\.\d+\.\d+"/);
  t.match(info!, new RegExp(`node="${process.versions.node}"`));
  t.match(info!, /onnxruntime="\d+\.\d+\.\d+"/);
  t.match(info!, /revision="[^"]+"/);
  const { layout, contextLength, id } = server.engine.info;
  t.equal(
    m.get(
      `kvserve_model_info{model="${id}",dtype="${layout.dtype}",layers="${layout.layers}",kv_heads="${layout.kvHeads}",head_dim="${layout.headDim}",context_length="${contextLength}"}`,
    ),
    1,
    'kvserve_model_info describes the served model',
  );
  t.equal(m.get('kvserve_ready'), 1, 'ready');
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
    t.ok((m.get(name) ?? -1) >= 0, `${name} under its standard name`);
    t.notOk(m.has(`kvserve_${name}`), `not as kvserve_${name}`);
  }
  t.ok((m.get('kvserve_engine_heap_used_bytes') ?? 0) > 0, "the engine thread's heap");
  t.ok((m.get('kvserve_engine_array_buffers_bytes') ?? 0) > 0, 'ArrayBuffer memory (K/V tensors)');
  const gcCount = [...m.entries()].filter(([k]) => k.startsWith('kvserve_engine_gc_duration_seconds_count')).reduce((n, [, v]) => n + v, 0);
  t.ok(gcCount > 0, `the engine thread's GC pauses are counted (${gcCount})`);
  const steps = m.get('kvserve_step_duration_seconds_count') ?? 0;
  t.ok(steps > 0, 'steps counted');
  t.equal(m.get('kvserve_step_duration_seconds_bucket{le="+Inf"}'), steps, 'the +Inf bucket holds every step');
  t.ok((m.get('kvserve_inter_token_latency_seconds_bucket{le="0.0001"}') ?? -1) >= 0, 'latency buckets start at 100 µs');
  t.ok(m.has('kvserve_time_to_first_token_seconds_bucket{le="300"}'), 'and reach the request timeout');
});
