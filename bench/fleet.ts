// `npm run bench:fleet`: what cache-aware routing buys a fleet. Three replicas behind HAProxy
// (tools/fleet/fleet.ts) serve a multi-turn chat workload — sessions arriving at a fixed rate,
// each opening with one of a few long shared system prompts and continuing for several turns
// with its session_id — once with consistent hashing on the session / prompt prefix and once
// round-robin, same load balancer. Both without the Redis tier, so routing alone is measured;
// a third run, round-robin with Redis, shows how much the shared tier recovers.
// Writes bench/results/fleet.json:
//   {"cache_aware":{"ttft_p50_ms","ttft_p90_ms","prefilled_tokens"},"round_robin":{…},
//    "round_robin_redis":{…},"ttft_p50_ratio"}  — goal ttft_p50_ratio ≥ 3.
// On a 2-core machine the three replicas share the cores: prefilled tokens are the
// hardware-independent figure, times are what this machine shows.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Policy } from '../docker/haproxy/haproxy-config.js';
import { startFleet } from '../tools/fleet/fleet.js';
import { postStream } from './lib/http-stream.js';
import { envInt, log, round1 } from './lib/interleave.js';
import { benchMeta } from './lib/meta.js';
import { ROOT } from './lib/server.js';
import { median, percentile } from './lib/stats.js';
import { freePorts } from '../test/helpers/net.js';

const TEXT = readFileSync(join(ROOT, 'test/fixtures/shakespeare-20k.txt'), 'utf8');
const QUICK = process.argv.includes('--quick');
const SESSIONS = envInt('FLEET_SESSIONS', QUICK ? 12 : 30);
const TURNS = envInt('FLEET_TURNS', 4);
const SYSTEM_PROMPTS = 4;
const SYSTEM_CHARS = 768; // byte vocabulary: ≈ tokens
const ARRIVAL_MS = envInt('FLEET_ARRIVAL_MS', 400);
const THINK_MS = 200;
const REPLY = 16;

interface Turn {
  ttftMs: number;
  prefilled: number;
}

async function turn(url: string, body: Record<string, unknown>): Promise<Turn & { text: string }> {
  const start = performance.now();
  let first: number | undefined;
  let text = '';
  let prefilled = 0;
  await postStream(`${url}/v1/completions`, { ...body, stream: true, stream_options: { include_usage: true } }, (chunks, at) => {
    for (const c of chunks) {
      const piece = c.choices?.[0]?.text;
      if (piece) {
        first ??= at;
        text += piece;
      }
      if (c.usage) prefilled = c.usage.prompt_tokens - (c.usage.prompt_tokens_details?.cached_tokens ?? 0);
    }
  });
  return { ttftMs: (first ?? performance.now()) - start, prefilled, text };
}

/** Session s: a shared system prompt, then TURNS turns, each waiting for the previous answer. */
async function session(url: string, s: number, runTag: string): Promise<Turn[]> {
  const system = TEXT.slice((s % SYSTEM_PROMPTS) * 2000, (s % SYSTEM_PROMPTS) * 2000 + SYSTEM_CHARS);
  let prompt = `${system}\n--- ${runTag} chat ${s} ---\nUSER: ${TEXT.slice(10_000 + s * 60, 10_000 + s * 60 + 40)}\nBOT:`;
  const out: Turn[] = [];
  for (let k = 0; k < TURNS; k++) {
    const r = await turn(url, { prompt, session_id: `${runTag}-${s}`, max_tokens: REPLY, temperature: 0, ignore_eos: true });
    out.push(r);
    prompt = `${prompt}${r.text}\nUSER: ${TEXT.slice(14_000 + (s * TURNS + k) * 30, 14_000 + (s * TURNS + k) * 30 + 24)}\nBOT:`;
    await new Promise((r) => setTimeout(r, THINK_MS));
  }
  return out;
}

async function run(policy: Policy, redis: boolean, runTag: string) {
  const ports = await freePorts(5);
  const [port, redisPort, ...replicaPorts] = ports as [number, number, ...number[]];
  const fleet = await startFleet({ replicas: 3, port, redisPort, replicaPorts, policy, redis });
  try {
    const sessions = await Promise.all(
      Array.from({ length: SESSIONS }, async (_, s) => {
        await new Promise((r) => setTimeout(r, s * ARRIVAL_MS));
        return session(fleet.url, s, runTag);
      }),
    );
    const turns = sessions.flat();
    const ttft = turns.map((t) => t.ttftMs);
    const result = {
      ttft_p50_ms: round1(median(ttft)),
      ttft_p90_ms: round1(percentile(ttft, 90)),
      prefilled_tokens: turns.reduce((n, t) => n + t.prefilled, 0),
      requests: turns.length,
    };
    log(`${policy}${redis ? ' + redis' : ''}: ${JSON.stringify(result)}`);
    return result;
  } finally {
    await fleet.stop();
  }
}

const cacheAware = await run('cache-aware', false, 'ca');
const roundRobin = await run('round-robin', false, 'rr');
const roundRobinRedis = await run('round-robin', true, 'rrr');
const result = {
  cache_aware: cacheAware,
  round_robin: roundRobin,
  round_robin_redis: roundRobinRedis,
  ttft_p50_ratio: Math.round((roundRobin.ttft_p50_ms / cacheAware.ttft_p50_ms) * 100) / 100,
  prefilled_ratio: Math.round((roundRobin.prefilled_tokens / cacheAware.prefilled_tokens) * 100) / 100,
  workload: {
    replicas: 3,
    sessions: SESSIONS,
    turns: TURNS,
    system_prompts: SYSTEM_PROMPTS,
    system_tokens: SYSTEM_CHARS,
    arrival_ms: ARRIVAL_MS,
    reply_tokens: REPLY,
  },
  goals: { ttft_p50_ratio: '≥ 3' },
  quick: QUICK,
  ...benchMeta(),
};
writeFileSync(join(ROOT, 'bench/results/fleet.json'), `${JSON.stringify(result, null, 2)}\n`);
log(JSON.stringify({ ttft_p50_ratio: result.ttft_p50_ratio, prefilled_ratio: result.prefilled_ratio }));
