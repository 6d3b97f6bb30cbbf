// The dashboard is proven against live data: a real Prometheus runs the shipped prometheus.yml
// (only the target and the intervals changed), scrapes a real kvserve while traffic exercises
// every panel, and then every query of every panel must return finite data. A panel that would
// show nothing fails here. Grafana's $__rate_interval is replaced by a concrete window (1m).
// kvserve runs with a real redis-server as its shared tier, so the fleet panels have traffic.
import { spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { buildDashboard, INSTANCE, panelsOf, RATE_INTERVAL } from '../../docker/grafana/dashboard.js';
import { needs } from '../helpers/binaries.js';
import { postJson } from '../helpers/http.js';
import { scrape } from '../helpers/metrics-text.js';
import { freePort } from '../helpers/net.js';
import { waitFor } from '../helpers/poll.js';
import { type Sample, promtoolCheckConfig, startPrometheus } from '../helpers/prometheus.js';
import { startServer } from '../helpers/server.js';
import { readSse } from '../helpers/sse.js';

const SHIPPED = fileURLToPath(new URL('../../docker/prometheus/prometheus.yml', import.meta.url));
const ALERTS = fileURLToPath(new URL('../../docker/prometheus/alerts.yml', import.meta.url));
/** What the test puts for $__rate_interval: wide enough to hold all the traffic below. */
const WINDOW = '1m';
const SCRAPE_INTERVAL = '1s';
const BYTES_PER_TOKEN = 2 * 4 * 4 * 32 * 4; // 2 × layers × kv_heads × head_dim × 4 bytes
/** 512 tokens of KV: small enough that the traffic below evicts and one request is refused. */
const KV_BUDGET = 512 * BYTES_PER_TOKEN;

interface PromConfig {
  global: Record<string, unknown>;
  scrape_configs: Array<{ job_name: string; scrape_interval?: string; scrape_timeout?: string; static_configs: Array<{ targets: string[] }> }>;
}

/** The shipped config with its one target and its intervals replaced, nothing else. */
function configFor(shipped: PromConfig, target: string): PromConfig {
  const config = structuredClone(shipped);
  config.global.scrape_interval = SCRAPE_INTERVAL;
  config.global.evaluation_interval = SCRAPE_INTERVAL;
  for (const job of config.scrape_configs) {
    if (job.scrape_interval !== undefined) job.scrape_interval = SCRAPE_INTERVAL;
    if (job.scrape_timeout !== undefined) delete job.scrape_timeout; // defaults to the interval
    job.static_configs = [{ targets: [target] }];
  }
  return config;
}

const greedy = { temperature: 0, ignore_eos: true };

/** One round of traffic that gives every panel something to show. */
async function traffic(base: string): Promise<void> {
  const completions = `${base}/v1/completions`;
  const stream = async (path: string, body: Record<string, unknown>) => {
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, stream: true }),
    });
    const { events } = await readSse(res.body);
    if (res.status !== 200 || events.at(-1) !== '[DONE]') throw new Error(`stream ${path}: ${res.status}, ${events.length} events`);
  };
  // Four streams at once: continuous batching, time to first token, inter-token latency; long
  // enough for the engine thread to collect garbage (its GC panel).
  for (let round = 0; round < 8; round++) {
    await Promise.all(
      ['ROMEO:\n', 'JULIET:\n', 'HAMLET:\nTo be', 'OTHELLO:\n'].map((prompt) => stream('/v1/completions', { prompt, max_tokens: 100, ...greedy })),
    );
  }
  // The same prompt twice: a miss (or partial), then a hit that reuses its blocks.
  const repeated = `KING LEAR:\nBlow, winds, and crack your cheeks! rage! blow! ${Math.random()}\n`;
  for (let i = 0; i < 2; i++) {
    const r = await postJson(completions, { prompt: repeated, max_tokens: 8, ...greedy });
    if (r.status !== 200) throw new Error(`completion: ${r.status}`);
  }
  // Chat, plain and streamed.
  const messages = [{ role: 'user', content: 'Speak of love.' }];
  if ((await postJson(`${base}/v1/chat/completions`, { messages, max_tokens: 16, ...greedy })).status !== 200) throw new Error('chat failed');
  await stream('/v1/chat/completions', { messages, max_tokens: 16, ...greedy });
  // A session of two turns: the second prefills only its new tokens.
  const first = await postJson(completions, { prompt: 'MACBETH:\n', session_id: 'dashboard', max_tokens: 16, ...greedy });
  await postJson(completions, { prompt: `MACBETH:\n${first.json.choices[0].text}\nLADY MACBETH:\n`, session_id: 'dashboard', max_tokens: 16, ...greedy });
  // Refused before running: prompt + max_tokens cannot fit the whole KV budget.
  const refused = await postJson(completions, { prompt: 'PUCK:\n', max_tokens: 1000 });
  if (refused.json.error?.code !== 'kv_budget_exceeded') throw new Error(`expected kv_budget_exceeded, got ${JSON.stringify(refused.json)}`);
  // A client that leaves mid-stream: the generation is aborted.
  const aborted = async () => (await scrape(base)).get('kvserve_requests_aborted_total') ?? 0;
  const abortedBefore = await aborted();
  const controller = new AbortController();
  const res = await fetch(completions, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'PROSPERO:\n', max_tokens: 400, stream: true, ...greedy }),
    signal: controller.signal,
  });
  await readSse(res.body, () => controller.abort());
  await waitFor('the abort to be counted', async () => (await aborted()) > abortedBefore);
}

/** Waits until Prometheus holds a sample taken after everything the server has counted so far. */
async function scraped(query: (expr: string) => Promise<Sample[]>, base: string): Promise<void> {
  const now = await scrape(base);
  for (const name of [
    'kvserve_generated_tokens_total',
    'kvserve_requests_aborted_total',
    'kvserve_requests_total{route="/v1/completions",status="499"}',
    'kvserve_requests_rejected_total{reason="kv_budget_exceeded"}',
    'kvserve_kv_cache_evictions_total{reason="lru"}',
  ]) {
    const expected = now.get(name);
    if (expected === undefined) throw new Error(`kvserve does not export ${name}`);
    await waitFor(`Prometheus to scrape ${name} = ${expected}`, async () => ((await query(name))[0]?.value ?? -1) >= expected, {
      timeoutMs: 15_000,
      intervalMs: 200,
    });
  }
}

// Checks beyond "finite data" where the traffic above guarantees more, keyed by panel/legend.
const positive = (s: Sample[]) => s.length > 0 && s.every((x) => x.value > 0);
const some = (label: string, value: string, check: (v: number) => boolean) => (s: Sample[]) => s.some((x) => x.metric[label] === value && check(x.value));
const expectations: Record<string, (s: Sample[]) => boolean> = {
  'Generated tokens/s/generated': positive,
  'Requests/s by status/{{status}}': (s) => ['200', '400', '499'].every((status) => some('status', status, (v) => v > 0)(s)),
  'Finished generations/s by reason/{{reason}}': (s) => some('reason', 'length', (v) => v > 0)(s) && some('reason', 'abort', (v) => v > 0)(s),
  'Aborted and rejected requests/s/aborted': positive,
  'Aborted and rejected requests/s/rejected: {{reason}}': some('reason', 'kv_budget_exceeded', (v) => v > 0),
  'Time to first token/p99': positive,
  'Inter-token latency/p50': positive,
  'End-to-end latency/p99': positive,
  'Batch size/mean': (s) => s.every((x) => x.value > 1), // four concurrent streams share decode steps
  'KV cache bytes/capacity {{instance}}': (s) => s.every((x) => x.value === KV_BUDGET),
  'KV cache use/{{instance}}': (s) => s.every((x) => x.value > 0 && x.value <= 100),
  'Cache hit ratio/hit': (s) => s.every((x) => x.value > 0 && x.value <= 1),
  'Prompt tokens/s: reused vs computed/reused': positive,
  'Prompt tokens/s: reused vs computed/computed': positive,
  'Evictions/s by reason/{{reason}}': some('reason', 'lru', (v) => v > 0),
  'Evicted bytes/s by reason/{{reason}}': some('reason', 'lru', (v) => v > 0),
  'Process memory/resident {{instance}}': positive,
  'Bytes by tier/{{tier}}': (s) => ['ram', 'compressed', 'disk'].every((tier) => some('tier', tier, (v) => v > 0)(s)),
  'Demotions and promotions/s/down {{from}}→{{to}}': some('to', 'disk', (v) => v > 0),
  'Disk tier: writes and rejected files/write p99': positive,
  'Process memory/engine heap used {{instance}}': positive,
  'Requests/s by instance/{{instance}}': positive,
  'Prompt tokens reused by instance/{{instance}}': (s) => s.every((x) => x.value > 0 && x.value <= 1),
  'Shared tier (Redis): bytes/s/{{direction}}': some('direction', 'sent', (v) => v > 0),
  'Shared tier (Redis): connection and errors/connected {{instance}}': (s) => s.length > 0 && s.every((x) => x.value === 1),
};

t.test('promtool accepts the shipped prometheus.yml', async (t) => {
  if (!needs(t, 'promtool')) return;
  const check = promtoolCheckConfig(SHIPPED);
  t.equal(check.status, 0, check.output);
});

t.test('every query of every dashboard panel returns finite data from Prometheus scraping kvserve', async (t) => {
  if (!needs(t, 'promtool', 'prometheus', 'redis-server')) return;
  const dir = await mkdtemp(join(tmpdir(), 'kvserve-prometheus-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const redisPort = await freePort();
  const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  t.teardown(() => {
    redis.kill('SIGKILL');
  });
  // A disk tier too, so the tier panels have writes to show; Redis, for the shared tier's.
  const server = await startServer({
    env: {
      KV_CACHE_MAX_BYTES: String(KV_BUDGET),
      KV_CACHE_BLOCK_SIZE: '16',
      KV_CACHE_DIR: join(dir, 'kv'),
      KV_CACHE_REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    },
  });
  t.teardown(() => server.close());

  const shipped = parse(await readFile(SHIPPED, 'utf8')) as PromConfig;
  t.equal(shipped.scrape_configs.length, 1, 'one scrape job');
  t.equal(shipped.scrape_configs[0]!.static_configs.flatMap((s) => s.targets).length, 1, 'one target');
  const configFile = join(dir, 'prometheus.yml');
  await writeFile(configFile, stringify(configFor(shipped, new URL(server.url).host)));
  await copyFile(ALERTS, join(dir, 'alerts.yml'));
  const check = promtoolCheckConfig(configFile);
  t.equal(check.status, 0, `the rewritten config passes promtool too: ${check.output}`);

  await waitFor('kvserve connected to Redis', async () => (await scrape(server.url)).get('kvserve_kv_cache_remote_up') === 1, {
    timeoutMs: 10_000,
    intervalMs: 100,
  });
  const prometheus = await startPrometheus(t, configFile);
  await waitFor('the first scrape of kvserve (up == 1)', async () => (await prometheus.query('up{job="kvserve"}'))[0]?.value === 1, {
    timeoutMs: 15_000,
    intervalMs: 200,
  });

  // Two rounds with a scrape between them: every series the first round creates (a status code,
  // a rejection reason) grows again in the second, so each rate has an increase to show.
  for (let round = 0; round < 2; round++) {
    await traffic(server.url);
    await scraped((expr) => prometheus.query(expr), server.url);
  }

  const panels = panelsOf(buildDashboard()).filter((p) => p.type !== 'row');
  const seen = new Set<string>();
  for (const panel of panels) {
    for (const target of panel.targets) {
      const key = `${panel.title}/${target.legendFormat}`;
      seen.add(key);
      // $instance at "All": Grafana substitutes its allValue, the regex .+
      const expr = target.expr.replaceAll(RATE_INTERVAL, WINDOW).replaceAll(INSTANCE, '.+');
      t.notMatch(expr, /\$/, `${key}: no Grafana variable left in ${expr}`);
      const samples = await prometheus.query(expr);
      const shown = JSON.stringify(samples);
      t.ok(samples.length > 0, `${key}: ${expr} returns data`);
      t.ok(
        samples.every((s) => Number.isFinite(s.value)),
        `${key}: every value finite ${shown}`,
      );
      const expectation = expectations[key];
      if (expectation) t.ok(expectation(samples), `${key}: values as the traffic implies ${shown}`);
    }
  }
  for (const key of Object.keys(expectations)) t.ok(seen.has(key), `the expectation '${key}' names a panel query`);
});
