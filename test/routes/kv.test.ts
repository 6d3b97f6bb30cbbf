// GET /v1/kv through the real server: its figures agree with what the requests reported
// (usage), with GET /v1/sessions and with each other, and it holds counts and sizes only.
import t from 'tap';
import { postJson } from '../helpers/http.js';
import { startServer } from '../helpers/server.js';

const server = await startServer();
t.teardown(() => server.close());
const kv = async () => {
  const res = await fetch(`${server.url}/v1/kv`);
  t.equal(res.status, 200);
  return (await res.json()) as any;
};
const greedy = { max_tokens: 24, temperature: 0, ignore_eos: true };
const prompt = 'PROSPERO:\nNow does my project gather to a head.\n';

/** Every number array in a JSON value (token ids would be one). */
const numberArrays = (v: unknown): unknown[] =>
  Array.isArray(v)
    ? v.length > 0 && v.every((x) => typeof x === 'number')
      ? [v]
      : v.flatMap(numberArrays)
    : v && typeof v === 'object'
      ? Object.values(v).flatMap(numberArrays)
      : [];

t.test('an idle service: nothing held, nothing reused, no hit rate yet', async (t) => {
  const body = await kv();
  t.equal(body.object, 'kv');
  t.equal(body.pool.bytes, 0);
  t.equal(body.pool.capacity_bytes, server.config.kvCache.maxBytes, 'the budget is KV_CACHE_MAX_BYTES');
  t.strictSame(body.sessions, []);
  t.equal(body.hit_rate, null);
  t.strictSame(body.tiers.ram, { bytes: 0, capacity_bytes: server.config.kvCache.maxBytes });
  t.equal(body.tiers.compressed.capacity_bytes, server.config.kvCache.compressedMaxBytes, 'the compressed tier is on by default');
  t.equal(body.tiers.disk, null, 'no KV_CACHE_DIR: the disk tier is off');
  t.equal(body.tiers.remote, null, 'no KV_CACHE_REDIS_URL: the remote tier is off');
});

t.test('after requests: sessions, bytes by kind and reuse agree with usage and /v1/sessions', async (t) => {
  const usages = [];
  for (const session_id of ['kv-a', 'kv-a', undefined]) {
    const res = await postJson(`${server.url}/v1/completions`, { prompt, session_id, ...greedy });
    t.equal(res.status, 200);
    usages.push(res.json.usage);
  }
  const body = await kv();
  const sessions = (await (await fetch(`${server.url}/v1/sessions`)).json()) as any;
  t.equal(body.sessions.length, 1);
  const { age_seconds, ...session } = body.sessions[0];
  const { object: _, ...listed } = sessions.data[0];
  t.strictSame(session, listed, 'the session as /v1/sessions lists it');
  t.ok(age_seconds >= 0 && age_seconds <= 60, `age ${age_seconds} s`);

  const kinds = body.pool.by_kind;
  t.equal(kinds.active.bytes + kinds.session.bytes + kinds.prefix.bytes, body.pool.bytes, 'the kinds add up to the pool');
  t.equal(kinds.session.bytes, session.bytes, "the session kind holds the session's bytes");
  t.equal(kinds.session.entries, 1);
  t.equal(kinds.active.entries, 0, 'nothing running');
  t.ok(kinds.prefix.entries > 0 && kinds.prefix.bytes > 0, `prefix blocks: ${kinds.prefix.entries}`);
  t.equal(body.tiers.ram.bytes, body.pool.bytes);

  const cached = usages.reduce((n, u) => n + u.prompt_tokens_details.cached_tokens, 0);
  const prefilled = usages.reduce((n, u) => n + u.prompt_tokens - u.prompt_tokens_details.cached_tokens, 0);
  t.ok(cached > 0, `the repeats reused ${cached} tokens`);
  t.equal(body.reused_tokens, cached, 'reused tokens = the sum of cached_tokens');
  t.equal(body.computed_tokens, prefilled, 'computed tokens = the sum of the prompt tokens not cached');
  t.equal(body.hit_rate, cached / (cached + prefilled));
  t.equal(body.lookups.hit + body.lookups.partial + body.lookups.miss, 3, 'one lookup per request');

  const text = JSON.stringify(body);
  t.notOk(text.includes('PROSPERO') || text.includes('project'), 'no prompt text');
  t.strictSame(numberArrays(body), [], 'no token ids');
});

t.test('deleting a session counts as an eviction by reason deleted', async (t) => {
  const before = await kv();
  t.equal((await fetch(`${server.url}/v1/sessions/kv-a`, { method: 'DELETE' })).status, 200);
  const after = await kv();
  t.strictSame(after.sessions, []);
  t.equal(after.evictions.count.deleted, before.evictions.count.deleted + 1);
  t.equal(after.evictions.bytes.deleted, before.evictions.bytes.deleted + before.sessions[0].bytes, 'its bytes');
  t.equal(after.evictions.count.lru, before.evictions.count.lru);
  t.equal(after.pool.by_kind.session.bytes, 0);
});

t.test('the OpenAPI document describes GET /v1/kv with its response schema', async (t) => {
  const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as any;
  const schema = doc.paths['/v1/kv']?.get?.responses?.['200']?.content?.['application/json']?.schema;
  t.ok(schema, 'a 200 schema');
  for (const key of ['pool', 'tiers', 'hit_rate', 'evictions', 'sessions']) t.ok(schema.properties[key], key);
  t.strictSame(Object.keys(schema.properties.tiers.properties), ['ram', 'compressed', 'disk', 'remote']);
  t.strictSame(schema.properties.sessions.items.properties.tier.enum, ['ram', 'compressed', 'disk', 'remote']);
});
