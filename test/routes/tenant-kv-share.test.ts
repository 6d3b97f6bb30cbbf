// kvShare with the real model: tenant A floods unique prompts far beyond the KV budget while
// tenant B's session stays cached (B within its share, A over its own: A's entries are
// recycled first). The same flood without shares — one tenant — does evict the session, so
// the test can fail.
import t from 'tap';
import { bearer, keyFile } from '../helpers/keys.js';
import { startServer } from '../helpers/server.js';

const A = 'sk-flooder';
const B = 'sk-quiet';
// 4 KiB per token: a budget of 256 tokens.
const BUDGET = 256 * 4096;

async function post(url: string, key: string | undefined, body: unknown) {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? bearer(key) : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as any };
}

const sessionPrompt = 'Now is the winter of our discontent made glorious summer by this sun of York;';
const floodPrompt = (i: number) => `${i} ${'abcdefghijklmnopqrstuvwxyz'.slice(i % 26)}${'To be or not to be, that is the question. '.slice(0, 40)} #${i}`;

/** B keeps a session; A sends 40 unique prompts (each ~80 tokens cached as blocks: ~12x the budget). Returns B's next cached_tokens. */
async function floodAndCheck(url: string, keyA: string | undefined, keyB: string | undefined): Promise<{ kept: number; cached: number; statuses: number[] }> {
  const first = await post(url, keyB, { prompt: sessionPrompt, max_tokens: 4, temperature: 0, session_id: 'b-chat' });
  const kept = first.json.usage.prompt_tokens + first.json.usage.completion_tokens - 1;
  const statuses: number[] = [];
  for (let i = 0; i < 40; i++) statuses.push((await post(url, keyA, { prompt: floodPrompt(i), max_tokens: 4, temperature: 0 })).status);
  const next = await post(url, keyB, { prompt: sessionPrompt + first.json.choices[0].text, max_tokens: 1, temperature: 0, session_id: 'b-chat' });
  return { kept, cached: next.json.usage.prompt_tokens_details.cached_tokens, statuses };
}

const env = { KV_CACHE_MAX_BYTES: String(BUDGET), KV_CACHE_COMPRESSED_MAX_BYTES: '0' };

t.test("with shares, A's flood never evicts B's session", async (t) => {
  const file = keyFile(t, {
    keys: [
      { tenant: 'a', key: A, kvShare: 0.25 },
      { tenant: 'b', key: B, kvShare: 0.5 },
    ],
  });
  const server = await startServer({ env: { ...env, API_KEYS_FILE: file.path } });
  t.teardown(() => server.close());
  const { kept, cached, statuses } = await floodAndCheck(server.url, A, B);
  t.ok(
    statuses.every((s) => s === 200),
    'every flood request served',
  );
  const stats = await server.engine.stats();
  t.ok(stats.cache.evictions.lru > 20, `the flood evicted (${stats.cache.evictions.lru} LRU evictions)`);
  t.ok(stats.cache.bytes <= BUDGET, 'never over the budget');
  t.equal(cached, kept, `B's next turn reuses its whole session (${kept} tokens)`);
});

t.test('control: one tenant (no shares), the same flood evicts the session', async (t) => {
  const server = await startServer({ env });
  t.teardown(() => server.close());
  const { cached } = await floodAndCheck(server.url, undefined, undefined);
  t.equal(cached, 0, 'the session was evicted by plain LRU');
});
