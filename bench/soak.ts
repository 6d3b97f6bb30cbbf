// `npm run bench:soak`: the service under a long mixed load on a small KV budget — does every
// request get an answer it may get, does the pool stay inside its budget and release every pin,
// and does the process's memory stay flat?
//
// The real server (a separate process) runs with KV_CACHE_MAX_BYTES = 16 MiB (4,096 tokens of
// the shipped model at 4 KiB/token), KV_CACHE_COMPRESSED_MAX_BYTES = 8 MiB and SESSION_TTL_MS = 5 s. SOAK_CLIENTS (32) clients run a
// closed loop for SOAK_SECONDS (60), each as one of two tenants (client i: tenant i mod 2), each
// request drawn from a seeded PRNG (SOAK_SEED):
//   30% streamed completion · 20% non-streamed · 15% stream aborted by the client at a random
//   point (before the answer, or after 1–6 chunks) · 15% a turn of a multi-turn chat session
//   (each client keeps its own session, over /v1/chat/completions) · 10% /tokenize or
//   /detokenize · 10% a bad request (wrong types, out-of-range values, invalid JSON, no route).
// max_tokens is 1–12, so requests are short and many.
//
// Tenants: with API keys (`--keys k1,k2` or SOAK_API_KEYS=k1,k2) the server is started with a
// key file naming them as tenants soak-a and soak-b (API_KEYS_FILE, the authentication's
// format; a server without authentication ignores it) and each tenant's clients send
// `Authorization: Bearer <key>`; without keys no header is sent and the server serves both as
// its one tenant ('default') — the load is the same, the isolation is not exercised.
//
// Expected answers: 200 for a valid request (a stream carrying text and [DONE], no error event
// before its first token), 429/503 with Retry-After in the error shape when the server is
// overloaded, 400/404 in the error shape for a bad request, nothing for an abort. Anything else
// — another status, a 5xx, an error event before a token, a stream without [DONE], a network
// error, a timeout — is `unexpected`. /metrics is scraped every 500 ms: kvserve_kv_cache_bytes
// never above the budget (max_pool_bytes), the server's RSS read from /proc/<pid>/status. After
// the load the engine drains; leaked_pins = kvserve_kv_cache_pinned_entries then (0 expected).
// rss_drift = median RSS of the second half of the samples over that of the first half, − 1.
// The 60 s are measured after SOAK_WARMUP_SECONDS (30) of the same load: RSS climbs for the
// first ~40 s of load (JIT, V8 heap sizing, the pool and the compressed tier filling to their
// budgets: 364 → 540 MiB, flat from there, in a run without warm-up) — growth to a plateau,
// not a leak, which is what the drift is to catch. `unexpected` counts warm-up requests too.
//
// Writes bench/results/soak.json:
//   {"clients":32,"seconds":60,"tenants":2,"requests":…,"unexpected":0,"leaked_pins":0,
//    "max_pool_bytes":…,"budget_bytes":…,"rss_drift":…, by_kind, statuses, unexpected_samples,
//    rss_bytes: {first_half_median, second_half_median}, commit, date, machine, node, onnxruntime}
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Agent, request } from 'node:http';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { scrape } from '../test/helpers/metrics-text.js';
import { SseReader } from '../test/helpers/sse.js';
import { envInt, log, round2 } from './lib/interleave.js';
import { benchMeta } from './lib/meta.js';
import { prng } from './lib/prompts.js';
import { ROOT, rssBytes, startService } from './lib/server.js';
import { median } from './lib/stats.js';

const OUT_FILE = join(ROOT, 'bench/results/soak.json');
const { values } = parseArgs({ options: { keys: { type: 'string' } } });
const KEYS = (values.keys ?? process.env.SOAK_API_KEYS ?? '').split(',').filter((k) => k !== '');
const CLIENTS = envInt('SOAK_CLIENTS', 32);
const SECONDS = envInt('SOAK_SECONDS', 60);
const WARMUP_SECONDS = envInt('SOAK_WARMUP_SECONDS', 30);
const SEED = envInt('SOAK_SEED', 1);
const KV_BYTES = 16 * 2 ** 20;
const COMPRESSED_BYTES = 8 * 2 ** 20;
const SESSION_TTL_MS = 5000;
const REQUEST_TIMEOUT_MS = 60_000;
const SCRAPE_MS = 500;
if (KEYS.length !== 0 && KEYS.length !== 2) throw new Error('--keys / SOAK_API_KEYS: two keys, one per tenant');

const random = prng(SEED);
const int = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
const WORDS = 'the and thou thee thy lord king queen love death night day sword crown heart blood speak hear good noble fair foul grave'.split(' ');
const text = (n: number): string => {
  let s = '';
  while (s.length < n) s += `${pick(WORDS)} `;
  return s.slice(0, n);
};
const SYSTEMS = [100, 200, 300].map((n, i) => `SYSTEM ${i}: ${text(n)}\n`);

// ---- one request over node:http, read to its end (or aborted) ----

const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });

interface Answer {
  status: number;
  retryAfter: string | undefined;
  json: unknown;
  /** Event stream: text chunks, error events before the first text, [DONE] seen. */
  textChunks: number;
  earlyErrors: number;
  done: boolean;
  sse: boolean;
  aborted: boolean;
}

function send(method: string, path: string, headers: Record<string, string>, payload: string | undefined, abortAfterChunks?: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error('timeout')), REQUEST_TIMEOUT_MS);
    const answer: Answer = { status: 0, retryAfter: undefined, json: undefined, textChunks: 0, earlyErrors: 0, done: false, sse: false, aborted: false };
    const finish = (): void => {
      clearTimeout(timer);
      resolve(answer);
    };
    const req = request(`${server.url}${path}`, { method, agent, headers, signal: controller.signal }, (res) => {
      answer.status = res.statusCode ?? 0;
      answer.retryAfter = res.headers['retry-after'] as string | undefined;
      answer.sse = /^text\/event-stream/.test(String(res.headers['content-type']));
      res.setEncoding('utf8');
      const reader = new SseReader();
      let raw = '';
      let chunks = 0;
      res.on('data', (s: string) => {
        if (!answer.sse) {
          raw += s;
          return;
        }
        for (const item of reader.push(s)) {
          if (item.kind !== 'data') continue;
          if (item.data === '[DONE]') {
            answer.done = true;
            continue;
          }
          const event = JSON.parse(item.data) as { error?: unknown; choices?: Array<{ text?: string; delta?: { content?: string } }> };
          if (event.error && answer.textChunks === 0) answer.earlyErrors++;
          if (event.choices?.some((c) => (c.text ?? c.delta?.content ?? '') !== '')) answer.textChunks++;
          if (abortAfterChunks !== undefined && ++chunks >= abortAfterChunks) {
            answer.aborted = true;
            res.destroy();
            finish();
            return;
          }
        }
      });
      res.once('end', () => {
        if (!answer.sse && raw !== '') answer.json = JSON.parse(raw);
        finish();
      });
      res.once('error', () => (answer.aborted ? finish() : reject(new Error('response error'))));
    });
    req.once('error', (err) => {
      clearTimeout(timer);
      if (answer.aborted) finish();
      else reject(err);
    });
    if (abortAfterChunks === 0) {
      // Abort before any answer: once the request is on its way.
      req.once('finish', () =>
        setTimeout(
          () => {
            answer.aborted = true;
            req.destroy();
            finish();
          },
          int(0, 20),
        ),
      );
    }
    req.end(payload);
  });
}

// ---- the workload ----

type Kind = 'stream' | 'json' | 'abort' | 'session' | 'tokenize' | 'bad';
const KINDS: Array<[Kind, number]> = [
  ['stream', 0.3],
  ['json', 0.2],
  ['abort', 0.15],
  ['session', 0.15],
  ['tokenize', 0.1],
  ['bad', 0.1],
];
function drawKind(): Kind {
  let r = random();
  for (const [kind, p] of KINDS) {
    r -= p;
    if (r < 0) return kind;
  }
  return 'bad';
}

const isErrorShape = (body: unknown): boolean => {
  const e = (body as { error?: Record<string, unknown> } | undefined)?.error;
  return !!e && Object.keys(e).sort().join(',') === 'code,message,param,type';
};
const overloaded = (a: Answer): boolean => (a.status === 429 || a.status === 503) && a.retryAfter !== undefined && isErrorShape(a.json);
const goodStream = (a: Answer): boolean => a.status === 200 && a.sse && a.textChunks > 0 && a.done && a.earlyErrors === 0;

interface Client {
  tenant: number;
  headers: Record<string, string>;
  chat: Array<{ role: string; content: string }>;
  session: string;
}

const BAD_BODIES: Array<[string, string]> = [
  ['/v1/completions', JSON.stringify({ prompt: 'x', max_tokens: 'many' })],
  ['/v1/completions', JSON.stringify({ prompt: 'x', temperature: 9, max_tokens: 1 })],
  ['/v1/completions', '{"prompt":'],
  ['/v1/chat/completions', JSON.stringify({ messages: [], max_tokens: 1 })],
  ['/v1/chat/completions', JSON.stringify({ messages: [{ role: 'wizard', content: 'x' }], max_tokens: 1 })],
  ['/detokenize', JSON.stringify({ tokens: [-1] })],
  ['/v1/nothing', '{}'],
];

/** Runs one request of `kind`; true if its answer is one it may get. */
async function one(client: Client, kind: Kind): Promise<boolean> {
  const json = { ...client.headers, 'content-type': 'application/json' };
  const maxTokens = int(1, 12);
  const prompt = `${pick(SYSTEMS)}USER: ${text(int(4, 60))}\nBOT:`;
  switch (kind) {
    case 'stream': {
      const a = await send('POST', '/v1/completions', json, JSON.stringify({ prompt, max_tokens: maxTokens, ignore_eos: true, stream: true }));
      return goodStream(a) || overloaded(a);
    }
    case 'json': {
      const a = await send('POST', '/v1/completions', json, JSON.stringify({ prompt, max_tokens: maxTokens, ignore_eos: true }));
      return (a.status === 200 && (a.json as { usage?: { completion_tokens: number } }).usage?.completion_tokens === maxTokens) || overloaded(a);
    }
    case 'abort': {
      const a = await send('POST', '/v1/completions', json, JSON.stringify({ prompt, max_tokens: 200, ignore_eos: true, stream: true }), int(0, 6));
      return a.aborted ? a.status === 0 || a.status === 200 : goodStream(a) || overloaded(a);
    }
    case 'session': {
      if (client.chat.length === 0 || client.chat.length > 8) client.chat = [{ role: 'system', content: pick(SYSTEMS) }];
      client.chat.push({ role: 'user', content: text(int(10, 40)) });
      const a = await send('POST', '/v1/chat/completions', json, JSON.stringify({ messages: client.chat, max_tokens: maxTokens, session_id: client.session }));
      const reply = (a.json as { choices?: Array<{ message: { content: string } }> } | undefined)?.choices?.[0]?.message.content;
      if (a.status === 200 && reply !== undefined) {
        client.chat.push({ role: 'assistant', content: reply });
        return true;
      }
      client.chat = [];
      return overloaded(a);
    }
    case 'tokenize': {
      const a =
        random() < 0.5
          ? await send('POST', '/tokenize', json, JSON.stringify({ prompt }))
          : await send('POST', '/detokenize', json, JSON.stringify({ tokens: Array.from({ length: int(1, 50) }, () => int(10, 120)) }));
      return a.status === 200;
    }
    case 'bad': {
      const [path, body] = pick(BAD_BODIES);
      const a = await send('POST', path, json, body);
      return (a.status === 400 || a.status === 404) && isErrorShape(a.json);
    }
  }
}

// ---- run ----

// The compressed tier below RAM gets a small budget too: at its default (256 MiB) it fills for
// minutes, which is growth within a budget but would read as RSS drift here.
const keysFile = KEYS.length === 2 ? join(mkdtempSync(join(tmpdir(), 'kvserve-soak-')), 'keys.json') : undefined;
if (keysFile) writeFileSync(keysFile, JSON.stringify({ keys: KEYS.map((key, i) => ({ tenant: `soak-${'ab'[i]}`, key })) }));
const server = await startService({
  ...(keysFile ? { API_KEYS_FILE: keysFile } : {}),
  KV_CACHE_MAX_BYTES: String(KV_BYTES),
  KV_CACHE_COMPRESSED_MAX_BYTES: String(COMPRESSED_BYTES),
  SESSION_TTL_MS: String(SESSION_TTL_MS),
});
log(
  `server ${server.url} (pid ${server.pid}); ${CLIENTS} clients × ${SECONDS} s after ${WARMUP_SECONDS} s of warm-up, KV budget ${KV_BYTES} bytes, ${KEYS.length === 2 ? 'two API keys' : 'no API keys (one server tenant)'}`,
);

const byKind: Record<string, { requests: number; unexpected: number }> = {};
const unexpectedSamples: string[] = [];
const rss: number[] = [];
let requests = 0;
let unexpected = 0;
let maxPoolBytes = 0;
let budget = 0;
let overBudget = false;
const start = performance.now();
const measureFrom = start + WARMUP_SECONDS * 1000;
const endAt = measureFrom + SECONDS * 1000;
let warmupRequests = 0;

async function sample(): Promise<Map<string, number>> {
  const m = await scrape(server.url);
  const bytes = m.get('kvserve_kv_cache_bytes') ?? Number.NaN;
  budget = m.get('kvserve_kv_cache_capacity_bytes') ?? Number.NaN;
  if (!(bytes <= budget)) overBudget = true;
  maxPoolBytes = Math.max(maxPoolBytes, bytes);
  const r = rssBytes(server.pid);
  if (r !== undefined && performance.now() >= measureFrom) rss.push(r);
  return m;
}

async function runClient(i: number): Promise<void> {
  const tenant = i % 2;
  const client: Client = { tenant, headers: KEYS.length === 2 ? { authorization: `Bearer ${KEYS[tenant]}` } : {}, chat: [], session: `soak-${SEED}-${i}` };
  while (performance.now() < endAt) {
    const kind = drawKind();
    let ok: boolean;
    try {
      ok = await one(client, kind);
    } catch (err) {
      ok = false;
      if (unexpectedSamples.length < 20) unexpectedSamples.push(`${kind}: ${(err as Error).message}`);
    }
    if (performance.now() < measureFrom) warmupRequests++;
    else requests++;
    byKind[kind] ??= { requests: 0, unexpected: 0 };
    const k = byKind[kind];
    k.requests++;
    if (!ok) {
      unexpected++;
      k.unexpected++;
      if (unexpectedSamples.length < 20) unexpectedSamples.push(`${kind}: unexpected answer`);
    }
  }
}

let drained: Map<string, number>;
try {
  await sample();
  const sampler = setInterval(() => void sample().catch(() => {}), SCRAPE_MS);
  const progress = setInterval(
    () => log(`${Math.round((performance.now() - start) / 1000)} s: ${requests} requests, ${unexpected} unexpected, max pool ${maxPoolBytes} bytes`),
    10_000,
  );
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => runClient(i)));
  clearInterval(sampler);
  clearInterval(progress);
  // Aborted generations end at the engine's next step: wait for nothing to run, then read pins.
  const deadline = performance.now() + 30_000;
  for (;;) {
    drained = await sample();
    const busy = (drained.get('kvserve_requests_running') ?? 0) + (drained.get('kvserve_requests_queued') ?? 0);
    if (busy === 0 || performance.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (!server.alive()) throw new Error(`the server exited during the soak:\n${server.output()}`);
} finally {
  const code = await server.stop();
  if (code !== 0) log(`WARNING: server exited with ${code}:\n${server.output()}`);
}

const half = Math.floor(rss.length / 2);
const firstHalf = median(rss.slice(0, half));
const secondHalf = median(rss.slice(half));
const result = {
  clients: CLIENTS,
  seconds: SECONDS,
  tenants: 2,
  requests,
  unexpected,
  leaked_pins: drained!.get('kvserve_kv_cache_pinned_entries') ?? Number.NaN,
  max_pool_bytes: maxPoolBytes,
  budget_bytes: budget,
  rss_drift: round2(secondHalf / firstHalf - 1),
  warmup_seconds: WARMUP_SECONDS,
  warmup_requests: warmupRequests,
  over_budget: overBudget,
  api_keys: KEYS.length === 2,
  by_kind: byKind,
  unexpected_samples: unexpectedSamples,
  rss_bytes: { first_half_median: firstHalf, second_half_median: secondHalf, samples: rss.length },
  // One sample in ten, in MiB: whether RSS levels off or keeps climbing.
  rss_mib: rss.filter((_, i) => i % 10 === 0).map((b) => Math.round(b / 2 ** 20)),
  ...benchMeta(),
};
mkdirSync(dirname(OUT_FILE), { recursive: true });
writeFileSync(OUT_FILE, `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(result)}\n`);
const failed = unexpected > 0 || result.leaked_pins !== 0 || overBudget || Math.abs(result.rss_drift) > 0.1;
if (failed) process.exitCode = 1;
