// `npm run bench:soak`: does the KV cache stay inside its budget, and the process inside its
// memory, under a long mixed load on a deliberately small budget?
//
// The real server (a separate process) runs with KV_CACHE_MAX_BYTES = 4 MiB (1,024 tokens of
// the shipped model's KV at 4,096 bytes/token) and SESSION_TTL_MS = 2 s, so eviction — by LRU
// and by TTL — happens all the time. SOAK_REQUESTS (10,000) non-streamed /v1/completions
// requests, greedy with EOS ignored, SOAK_CONCURRENCY (4) in flight:
//   - 60% continue one of 50 sessions (`session_id`): a session starts as one of four shared
//     "system prompts" (100, 150, 200, 250 tokens) and grows by each user line (15–45 tokens)
//     and reply; past 300 tokens the client starts it over. A session is never used by two
//     requests at once (a chat client waits for its reply), so the client-side transcript is
//     always what the server's session holds.
//   - 40% carry no session: a system prompt plus a random 15–55-token suffix, which the
//     automatic prefix cache can partly serve.
//   - max_tokens 1–8. Every request fits the budget on its own (admission commits prompt +
//     max_tokens, at most ~355 tokens here), so 503s can only come from running requests
//     holding the budget; they are acceptable and counted.
// Every SOAK_SCRAPE_EVERY (100) requests /metrics is scraped: kvserve_kv_cache_bytes must never
// exceed kvserve_kv_cache_capacity_bytes (the run throws if it does), and the server's RSS is
// read from /proc/<pid>/status (VmRSS: main thread, engine worker and onnxruntime together)
// next to the kvserve_process_resident_memory_bytes and heap metrics. The RSS baseline is the
// first scrape at or after min(1,000, requests/10) requests, once caches and JIT have warmed;
// goal: RSS at the end within 10% of it. After the load the bench idles for the TTL plus 1.5 s
// and scrapes once more (idle sessions must expire).
//
// Random choices come from a seeded PRNG (SOAK_SEED, default 1); which requests collide in
// time does not, so two runs are alike, not identical.
//
// Writes bench/results/soak.json:
//   { requests, seconds, requests_per_s, concurrency,
//     statuses: {"200": n, "503": n, "timeout": n, "network": n, …},   // per response
//     bad_responses,                  // 200s with the wrong completion_tokens or finish_reason
//     latency_ms: {p50, p90, p99, max},            // 200s, client side
//     kv_cache: {capacity_bytes, peak_bytes, peak_over_capacity, end_bytes, after_idle_bytes},
//     evictions: {lru, ttl, deleted}, evicted_bytes: {lru, ttl, deleted},   // deltas over the run
//     lookups: {hit, partial, miss}, reused_tokens, computed_tokens,        // deltas over the run
//     rejected: {<reason>: n},        // kvserve_requests_rejected_total deltas
//     cached_tokens_client: n,        // Σ usage.prompt_tokens_details.cached_tokens seen by the client
//     rss: {baseline_at_requests, baseline_bytes, end_bytes, ratio, min_bytes, max_bytes},
//     samples: [{requests, t_s, kv_bytes, kv_entries: {session, prefix, active}, rss_bytes,
//                rss_metric_bytes, heap_used_bytes, external_bytes}],
//     after_idle: {kv_bytes, sessions, ttl_evictions},
//     settings, date, machine, node }
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { envInt, log, round1, round2 } from './lib/interleave.js';
import { scrape as scrapeMetrics } from '../test/helpers/metrics-text.js';
import { ROOT, complete, rssBytes, startServerProcess } from './lib/server.js';
import { prng } from './lib/prompts.js';
import { percentile } from './lib/stats.js';
import { benchMeta } from './lib/meta.js';

const OUT_FILE = join(ROOT, 'bench/results/soak.json');
const REQUESTS = envInt('SOAK_REQUESTS', 10_000);
const CONCURRENCY = envInt('SOAK_CONCURRENCY', 4);
const SCRAPE_EVERY = envInt('SOAK_SCRAPE_EVERY', 100);
const SEED = envInt('SOAK_SEED', 1);
const KV_BYTES = 4 * 2 ** 20;
const SESSION_TTL_MS = 2000;
const SESSION_IDS = 50;
const SESSION_SHARE = 0.6;
const SYSTEM_LENGTHS = [100, 150, 200, 250];
const SESSION_RESET_TOKENS = 300;
const REQUEST_TIMEOUT_MS = 60_000;
const BASELINE_AT = Math.min(1000, Math.max(1, Math.floor(REQUESTS / 10)));

// ---- workload ----

const random = prng(SEED);
const int = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
const WORDS = 'the and thou thee thy lord king queen love death night day sword crown heart blood speak hear good noble fair foul grave'.split(' ');
/** `n` ASCII characters of random words: n tokens for the byte-level model. */
function text(n: number): string {
  let s = '';
  while (s.length < n) s += `${WORDS[Math.floor(random() * WORDS.length)]!} `;
  return s.slice(0, n);
}
const SYSTEMS = SYSTEM_LENGTHS.map((n, i) => `SYSTEM ${i}: ${text(n - 11)}\n`);

interface SessionState {
  id: string;
  transcript: string | undefined;
  busy: boolean;
}
const sessions: SessionState[] = Array.from({ length: SESSION_IDS }, (_, i) => ({ id: `soak-${SEED}-${i}`, transcript: undefined, busy: false }));

interface Planned {
  body: Record<string, unknown>;
  maxTokens: number;
  session: SessionState | undefined;
  prompt: string;
}

function plan(): Planned {
  const maxTokens = int(1, 8);
  const idle = sessions.filter((s) => !s.busy);
  if (random() < SESSION_SHARE && idle.length > 0) {
    const session = idle[Math.floor(random() * idle.length)]!;
    session.busy = true;
    session.transcript ??= SYSTEMS[Math.floor(random() * SYSTEMS.length)]!;
    const prompt = `${session.transcript}USER: ${text(int(4, 34))}\nBOT:`;
    return { body: { prompt, max_tokens: maxTokens, session_id: session.id }, maxTokens, session, prompt };
  }
  const prompt = `${SYSTEMS[Math.floor(random() * SYSTEMS.length)]!}USER: ${text(int(4, 44))}\nBOT:`;
  return { body: { prompt, max_tokens: maxTokens }, maxTokens, session: undefined, prompt };
}

// ---- metrics ----

interface Sample {
  requests: number;
  t_s: number;
  kv_bytes: number;
  kv_entries: { session: number; prefix: number; active: number };
  rss_bytes: number | undefined;
  rss_metric_bytes: number | undefined;
  heap_used_bytes: number | undefined;
  external_bytes: number | undefined;
}

const REASONS = ['lru', 'ttl', 'deleted'] as const;
const RESULTS = ['hit', 'partial', 'miss'] as const;
type Counters = {
  evictions: Record<(typeof REASONS)[number], number>;
  evictedBytes: Record<(typeof REASONS)[number], number>;
  lookups: Record<(typeof RESULTS)[number], number>;
  reused: number;
  computed: number;
  rejected: Record<string, number>;
};

function counters(m: Map<string, number>): Counters {
  const get = (k: string): number => m.get(k) ?? 0;
  const rejected: Record<string, number> = {};
  for (const [k, v] of m) {
    const r = /^kvserve_requests_rejected_total\{reason="([^"]+)"\}$/.exec(k);
    if (r) rejected[r[1]!] = v;
  }
  return {
    evictions: Object.fromEntries(REASONS.map((r) => [r, get(`kvserve_kv_cache_evictions_total{reason="${r}"}`)])) as Counters['evictions'],
    evictedBytes: Object.fromEntries(REASONS.map((r) => [r, get(`kvserve_kv_cache_evicted_bytes_total{reason="${r}"}`)])) as Counters['evictedBytes'],
    lookups: Object.fromEntries(RESULTS.map((r) => [r, get(`kvserve_kv_cache_lookups_total{result="${r}"}`)])) as Counters['lookups'],
    reused: get('kvserve_kv_cache_reused_tokens_total'),
    computed: get('kvserve_kv_cache_computed_tokens_total'),
    rejected,
  };
}

function diff<K extends string>(a: Record<K, number>, b: Record<K, number>): Record<K, number> {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<K>;
  return Object.fromEntries([...keys].map((k) => [k, (b[k] ?? 0) - (a[k] ?? 0)])) as Record<K, number>;
}

// ---- run ----

const server = await startServerProcess({
  KV_CACHE_MAX_BYTES: String(KV_BYTES),
  SESSION_TTL_MS: String(SESSION_TTL_MS),
});
log(
  `server ${server.url} (pid ${server.pid}); ${REQUESTS} requests, concurrency ${CONCURRENCY}, KV budget ${KV_BYTES} bytes, session TTL ${SESSION_TTL_MS} ms`,
);

const samples: Sample[] = [];
const statuses: Record<string, number> = {};
const latencies: number[] = [];
let badResponses = 0;
let cachedClient = 0;
let capacity = 0;
let peakBytes = 0;
let failure: Error | undefined;
let started = 0;
let finished = 0;
let start = 0;
let loadSeconds = 0;
let first: Counters | undefined;
let last: Counters | undefined;
let afterIdle: { kv_bytes: number; sessions: number; ttl_evictions: number } | undefined;

async function scrape(): Promise<Map<string, number>> {
  const m = await scrapeMetrics(server.url);
  const bytes = m.get('kvserve_kv_cache_bytes') ?? NaN;
  capacity = m.get('kvserve_kv_cache_capacity_bytes') ?? NaN;
  if (!(bytes <= capacity)) throw new Error(`kvserve_kv_cache_bytes ${bytes} exceeds kvserve_kv_cache_capacity_bytes ${capacity}`);
  peakBytes = Math.max(peakBytes, bytes);
  samples.push({
    requests: finished,
    t_s: round2((performance.now() - start) / 1000),
    kv_bytes: bytes,
    kv_entries: {
      session: m.get('kvserve_kv_cache_entries{kind="session"}') ?? 0,
      prefix: m.get('kvserve_kv_cache_entries{kind="prefix"}') ?? 0,
      active: m.get('kvserve_kv_cache_entries{kind="active"}') ?? 0,
    },
    rss_bytes: rssBytes(server.pid),
    rss_metric_bytes: m.get('kvserve_process_resident_memory_bytes'),
    heap_used_bytes: m.get('kvserve_nodejs_heap_size_used_bytes'),
    external_bytes: m.get('kvserve_nodejs_external_memory_bytes'),
  });
  return m;
}

async function one(): Promise<void> {
  const p = plan();
  let key: string;
  try {
    const r = await complete(server.url, p.body, REQUEST_TIMEOUT_MS);
    key = String(r.status);
    if (r.status === 200) {
      latencies.push(r.ms);
      cachedClient += r.usage?.prompt_tokens_details.cached_tokens ?? 0;
      if (r.usage?.completion_tokens !== p.maxTokens || r.finishReason !== 'length') badResponses++;
      const tokens = Buffer.byteLength(p.prompt) + Buffer.byteLength(r.text);
      if (p.session) p.session.transcript = tokens > SESSION_RESET_TOKENS ? undefined : `${p.prompt}${r.text}\n`;
    } else if (p.session) {
      // The server's session is whatever it held before; start the client's over to stay in step.
      p.session.transcript = undefined;
    }
  } catch (err) {
    key = (err as Error).name === 'TimeoutError' ? 'timeout' : 'network';
    if (p.session) p.session.transcript = undefined;
    if (!server.alive()) failure ??= new Error(`the server exited during the soak:\n${server.output()}`);
  } finally {
    if (p.session) p.session.busy = false;
  }
  statuses[key] = (statuses[key] ?? 0) + 1;
  finished++;
  if (finished % SCRAPE_EVERY === 0 || finished === BASELINE_AT) await scrape();
  if (finished % 1000 === 0 || finished === REQUESTS) {
    const s = samples.at(-1);
    log(
      `${finished}/${REQUESTS} in ${((performance.now() - start) / 1000).toFixed(1)} s; statuses ${JSON.stringify(statuses)}; ` +
        `kv ${s?.kv_bytes} bytes; rss ${s?.rss_bytes === undefined ? '?' : (s.rss_bytes / 2 ** 20).toFixed(1)} MiB`,
    );
  }
}

async function worker(): Promise<void> {
  while (started < REQUESTS && !failure) {
    started++;
    try {
      await one();
    } catch (err) {
      failure ??= err as Error;
    }
  }
}

try {
  start = performance.now();
  first = counters(await scrape());
  await Promise.all(Array.from({ length: CONCURRENCY }, () => worker()));
  if (failure) throw failure;
  loadSeconds = (performance.now() - start) / 1000;
  last = counters(await scrape());
  // Idle past the TTL: every session must expire (the worker sweeps once a second).
  await new Promise((r) => setTimeout(r, SESSION_TTL_MS + 1500));
  const idle = await scrapeMetrics(server.url);
  afterIdle = {
    kv_bytes: idle.get('kvserve_kv_cache_bytes') ?? NaN,
    sessions: idle.get('kvserve_kv_cache_entries{kind="session"}') ?? NaN,
    ttl_evictions: (idle.get('kvserve_kv_cache_evictions_total{reason="ttl"}') ?? 0) - last.evictions.ttl,
  };
} finally {
  const code = await server.stop();
  if (code !== 0) log(`WARNING: server exited with ${code}:\n${server.output()}`);
}

if (!first || !last || !afterIdle) throw new Error('soak run incomplete');
const seconds = loadSeconds;
const baseline = samples.find((s) => s.requests >= BASELINE_AT && s.rss_bytes !== undefined);
// The scrape right after the last request (samples[0] is the one before the first).
const end = samples.at(-1)!;
const afterBaseline = samples.filter((s) => baseline && s.requests >= baseline.requests && s.rss_bytes !== undefined).map((s) => s.rss_bytes!);
const ok = latencies.length > 0 ? latencies : [NaN];
const evictions = diff(first.evictions, last.evictions);
const lookups = diff(first.lookups, last.lookups);
const result = {
  requests: finished,
  seconds: round1(seconds),
  requests_per_s: round1(finished / seconds),
  concurrency: CONCURRENCY,
  statuses,
  bad_responses: badResponses,
  latency_ms: { p50: round1(percentile(ok, 50)), p90: round1(percentile(ok, 90)), p99: round1(percentile(ok, 99)), max: round1(Math.max(...ok)) },
  kv_cache: {
    capacity_bytes: capacity,
    peak_bytes: peakBytes,
    peak_over_capacity: round2(peakBytes / capacity),
    end_bytes: end.kv_bytes,
    after_idle_bytes: afterIdle.kv_bytes,
  },
  evictions,
  evicted_bytes: diff(first.evictedBytes, last.evictedBytes),
  lookups,
  reused_tokens: last.reused - first.reused,
  computed_tokens: last.computed - first.computed,
  rejected: diff(first.rejected, last.rejected),
  cached_tokens_client: cachedClient,
  rss: {
    baseline_at_requests: baseline?.requests ?? null,
    baseline_bytes: baseline?.rss_bytes ?? null,
    end_bytes: end.rss_bytes ?? null,
    ratio: baseline?.rss_bytes && end.rss_bytes ? round2(end.rss_bytes / baseline.rss_bytes) : null,
    min_bytes: afterBaseline.length ? Math.min(...afterBaseline) : null,
    max_bytes: afterBaseline.length ? Math.max(...afterBaseline) : null,
  },
  samples,
  after_idle: afterIdle,
  settings: {
    kv_cache_max_bytes: KV_BYTES,
    session_ttl_ms: SESSION_TTL_MS,
    session_ids: SESSION_IDS,
    session_share: SESSION_SHARE,
    system_prompt_tokens: SYSTEM_LENGTHS,
    session_reset_tokens: SESSION_RESET_TOKENS,
    max_tokens: [1, 8],
    scrape_every: SCRAPE_EVERY,
    seed: SEED,
  },
  ...benchMeta(),
};
mkdirSync(dirname(OUT_FILE), { recursive: true });
writeFileSync(OUT_FILE, `${JSON.stringify(result, null, 2)}\n`);

const mib = (b: number | null | undefined): string => (b == null ? '?' : `${(b / 2 ** 20).toFixed(1)} MiB`);
const errors = Object.entries(statuses).filter(([k]) => k !== '200');
const lines = [
  `Soak: ${finished} requests, ${CONCURRENCY} in flight, KV budget ${mib(KV_BYTES)}, session TTL ${SESSION_TTL_MS} ms`,
  '',
  '| metric | value |',
  '|:--|--:|',
  `| total time | ${result.seconds.toFixed(1)} s (${result.requests_per_s.toFixed(1)} req/s) |`,
  `| 200 | ${statuses['200'] ?? 0} |`,
  `| errors by status | ${errors.length ? errors.map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'} |`,
  `| bad 200 responses | ${badResponses} |`,
  `| latency p50 / p99 | ${result.latency_ms.p50} / ${result.latency_ms.p99} ms |`,
  `| peak KV pool / capacity | ${mib(peakBytes)} / ${mib(capacity)} (${(result.kv_cache.peak_over_capacity * 100).toFixed(0)}%) |`,
  `| evictions lru / ttl / deleted | ${evictions.lru} / ${evictions.ttl} / ${evictions.deleted} |`,
  `| lookups hit / partial / miss | ${lookups.hit} / ${lookups.partial} / ${lookups.miss} |`,
  `| prompt tokens reused / computed | ${result.reused_tokens} / ${result.computed_tokens} |`,
  `| rejected (server) | ${
    Object.entries(result.rejected)
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ') || 'none'
  } |`,
  `| RSS after ${result.rss.baseline_at_requests} req → end | ${mib(result.rss.baseline_bytes)} → ${mib(result.rss.end_bytes)} (×${result.rss.ratio ?? '?'}; goal ≤ 1.10) |`,
  `| RSS range after baseline | ${mib(result.rss.min_bytes)} – ${mib(result.rss.max_bytes)} |`,
  `| after idle ${SESSION_TTL_MS + 1500} ms | KV ${mib(afterIdle.kv_bytes)}, ${afterIdle.sessions} sessions, +${afterIdle.ttl_evictions} ttl evictions |`,
  '',
  `${result.machine.cpu}, ${result.machine.cores} cores, Node ${result.node}; wrote ${relative(process.cwd(), OUT_FILE)}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
