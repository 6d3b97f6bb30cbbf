// A fleet on loopback (tools/fleet/fleet.ts): real redis-server, real HAProxy, three replicas of
// the real model. Multi-turn sessions through the load balancer keep their cache; a prefix
// computed on one replica is reused on another; when the replica serving a session is killed,
// the next turn succeeds elsewhere from Redis with the same greedy text; with Redis stopped
// nothing fails, and the shared tier comes back with it.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startServerProcess } from '../../bench/lib/server.js';
import { type Fleet, startFleet } from '../../tools/fleet/fleet.js';
import { needs } from '../helpers/binaries.js';
import { postJson } from '../helpers/http.js';
import { scrape } from '../helpers/metrics-text.js';
import { freePorts } from '../helpers/net.js';

const fixture = readFileSync(new URL('../fixtures/shakespeare-20k.txt', import.meta.url), 'utf8');
const greedy = { temperature: 0, ignore_eos: true };
const REPLY = 12;

if (needs(t, 'redis-server', 'haproxy')) {
  const ports = await freePorts(5);
  const [port, redisPort, ...replicaPorts] = ports;
  // A generous lookup timeout: on a loaded CI machine a 100 ms MGET can time out, and the
  // test would then pass on a replica's own recomputation rather than on Redis.
  const fleet: Fleet = await startFleet({ replicas: 3, port: port!, redisPort: redisPort!, replicaPorts, env: { KV_CACHE_REDIS_TIMEOUT_MS: '2000' } });
  t.teardown(() => fleet.stop());
  const lb = (path: string) => `${fleet.url}${path}`;

  /** One turn of session `id` through the load balancer: the prompt is the whole conversation so far. */
  async function turn(id: string, prompt: string, url = lb('/v1/completions')) {
    const r = await postJson(url, { prompt, session_id: id, max_tokens: REPLY, ...greedy });
    return { status: r.status, instance: r.headers.get('x-kvserve-instance'), text: r.json.choices?.[0]?.text as string, usage: r.json.usage, json: r.json };
  }

  t.test('20 sessions × 5 turns through the load balancer: every turn reuses the whole previous context', async (t) => {
    let short = 0;
    const served = new Set<string>();
    await Promise.all(
      Array.from({ length: 20 }, async (_, s) => {
        let prompt = `${fixture.slice(s * 400, s * 400 + 120)}\nSESSION ${s}:\n`;
        let previous: { prompt_tokens: number; completion_tokens: number } | undefined;
        for (let k = 0; k < 5; k++) {
          const r = await turn(`chat-${s}`, prompt);
          if (r.status !== 200) throw new Error(`session ${s} turn ${k + 1}: ${r.status} ${JSON.stringify(r.json)}`);
          served.add(r.instance ?? '?');
          if (previous && r.usage.prompt_tokens_details.cached_tokens < previous.prompt_tokens + previous.completion_tokens - 1) short++;
          previous = r.usage;
          prompt = `${prompt}${r.text}\nTURN ${k + 2}:\n`;
        }
      }),
    );
    t.equal(short, 0, 'no turn after the first reused less than the previous prompt and reply');
    t.ok(served.size >= 2, `the sessions were spread over replicas (${[...served].join(', ')})`);
  });

  t.test('a 1,024-token prefix computed on one replica is reused by another, through Redis', async (t) => {
    const [a, b] = fleet.replicas;
    const prompt = `${fixture.slice(5000, 6024)}\nQUERY:`;
    const first = await postJson(`${a!.url}/v1/completions`, { prompt, max_tokens: 2, ...greedy });
    t.equal(first.json.usage.prompt_tokens_details.cached_tokens, 0, 'computed cold on the first replica');
    // Publishing is asynchronous: give the writes a moment to land.
    let cached = 0;
    for (let i = 0; i < 20 && cached < 1008; i++) {
      await sleep(100);
      const other = await postJson(`${b!.url}/v1/completions`, { prompt: `${prompt}${i}`, max_tokens: 2, ...greedy });
      cached = other.json.usage.prompt_tokens_details.cached_tokens;
    }
    t.ok(cached >= 1008, `the other replica reused ${cached} tokens`);
    const m = await scrape(b!.url);
    t.ok((m.get('kvserve_kv_cache_tier_hits_total{tier="remote"}') ?? 0) >= 63, 'its blocks are counted as remote hits');
    t.ok((m.get('kvserve_kv_cache_remote_bytes_total{direction="received"}') ?? 0) > 0, 'and as bytes received');
  });

  t.test('the replica serving a session is killed: the next turn succeeds elsewhere, from Redis, with the same text', async (t) => {
    let prompt = 'ROMEO:\nBut soft, what light through yonder window breaks?\n';
    const t1 = await turn('survivor', prompt);
    t.equal(t1.status, 200);
    prompt = `${prompt}${t1.text}\nJULIET:\n`;
    const sent = async (url: string) => (await scrape(url)).get('kvserve_kv_cache_remote_bytes_total{direction="sent"}') ?? 0;
    const owner = fleet.replicas.find((r) => r.name === t1.instance)!;
    const sentBefore = await sent(owner.url);
    const t2 = await turn('survivor', prompt);
    t.equal(t2.status, 200);
    t.equal(t2.instance, t1.instance, 'both turns went to the same replica (consistent hashing on session_id)');
    prompt = `${prompt}${t2.text}\nROMEO:\n`;
    const context = t2.usage.prompt_tokens + t2.usage.completion_tokens - 1;

    const victim = fleet.replicas.find((r) => r.name === t2.instance)!;
    // The tier thread publishes the turn to Redis after the response. A kill before that may
    // lose it, as the design allows; this checks that what was published carries the session,
    // so the kill waits until the replica's acknowledged sends have grown and then held.
    for (let i = 0, last = -1; i < 200; i++) {
      const now = await sent(victim.url);
      if (now > sentBefore && now === last) break;
      last = now;
      await sleep(50);
    }
    process.kill(victim.server.pid, 'SIGKILL');
    const t3 = await turn('survivor', prompt);
    t.equal(t3.status, 200, 'the next turn succeeds');
    t.not(t3.instance, victim.name, `on another replica (${t3.instance})`);
    t.ok(
      t3.usage.prompt_tokens_details.cached_tokens >= context,
      `reusing the previous context (${t3.usage.prompt_tokens_details.cached_tokens} ≥ ${context} cached)`,
    );

    // A replica that never died, computing the same turn cold, writes the same greedy text.
    const reference = await startServerProcess({});
    t.teardown(() => reference.stop());
    const cold = await postJson(`${reference.url}/v1/completions`, { prompt, max_tokens: REPLY, ...greedy });
    t.equal(cold.json.usage.prompt_tokens_details.cached_tokens, 0, 'the reference is computed cold');
    t.equal(t3.text, cold.json.choices[0].text, 'the same greedy text as a replica that never died');
    await fleet.restart(victim.name);
  });

  t.test('Redis stopped mid-run: nothing fails; the shared tier recovers when it returns', async (t) => {
    const [a, b] = fleet.replicas;
    await fleet.stopRedis();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await postJson(lb('/v1/completions'), { prompt: `${fixture.slice(9000 + i * 50, 9300 + i * 50)}`, max_tokens: 4, session_id: `down-${i % 3}` });
      statuses.push(r.status);
    }
    t.strictSame(
      statuses.filter((s) => s >= 500),
      [],
      'no response ≥ 500 while Redis is down',
    );
    t.ok(
      statuses.every((s) => s === 200),
      'every request served from the local tiers',
    );
    t.equal((await scrape(a!.url)).get('kvserve_kv_cache_remote_up'), 0, 'the replica reports the shared tier down');

    await fleet.startRedis();
    let up = 0;
    for (let i = 0; i < 60 && up === 0; i++) {
      await sleep(100);
      up = (await scrape(a!.url)).get('kvserve_kv_cache_remote_up') ?? 0;
    }
    t.equal(up, 1, 'the replica reconnects');
    while (((await scrape(b!.url)).get('kvserve_kv_cache_remote_up') ?? 0) === 0) await sleep(100);
    const prompt = `${fixture.slice(12_000, 13_024)}\nAFTER:`;
    await postJson(`${a!.url}/v1/completions`, { prompt, max_tokens: 2, ...greedy });
    let cached = 0;
    for (let i = 0; i < 20 && cached < 1008; i++) {
      await sleep(100);
      cached = (await postJson(`${b!.url}/v1/completions`, { prompt: `${prompt}${i}`, max_tokens: 2, ...greedy })).json.usage.prompt_tokens_details
        .cached_tokens;
    }
    t.ok(cached >= 1008, `prefixes are shared again (${cached} cached on the other replica)`);
  });

  t.test('deleting a session removes it from Redis too, whichever replica is asked', async (t) => {
    const [a, b] = fleet.replicas;
    // Shorter than a block: only the session itself could give the third replica a cache.
    const prompt = 'GONE, all:';
    const first = await postJson(`${a!.url}/v1/completions`, { prompt, session_id: 'to-delete', max_tokens: 4, ...greedy });
    t.equal(first.status, 200);
    await sleep(200);
    // Asked of a replica that never held it: not found there, but gone from the shared tier.
    const del = await fetch(`${b!.url}/v1/sessions/to-delete`, { method: 'DELETE' });
    t.equal(del.status, 404, 'the other replica does not hold it');
    await fetch(`${a!.url}/v1/sessions/to-delete`, { method: 'DELETE' });
    await sleep(200);
    const c = fleet.replicas[2]!;
    const next = await postJson(`${c.url}/v1/completions`, { prompt: `${prompt} again`, session_id: 'to-delete', max_tokens: 4, ...greedy });
    t.equal(next.json.usage.prompt_tokens_details.cached_tokens, 0, 'a third replica finds no session in Redis');
  });
}
