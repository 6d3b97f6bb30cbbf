// Sessions and automatic prefix caching through the real server: reused tokens are reported
// as usage.prompt_tokens_details.cached_tokens, reuse never changes greedy output, and the
// sessions API lists, returns and frees what is kept.
import t from 'tap';
import { postJson } from '../helpers/http.js';
import { startServer } from '../helpers/server.js';

const server = await startServer();
t.teardown(() => server.close());
const url = `${server.url}/v1/completions`;
const BLOCK = server.config.kvCache.blockSize;
const bytesPerToken = 2 * 4 * 4 * 32 * 4; // 2 × layers × kv_heads × head_dim × float32, from config.json
const greedy = { max_tokens: 24, temperature: 0, ignore_eos: true };
const bytes = (s: string) => Buffer.byteLength(s); // byte-level tokenizer: one token per UTF-8 byte
const system = 'You are a player in a Shakespeare comedy. Speak in verse, and never break character!\n\n';

t.test('a repeated prompt reuses its cached prefix blocks and generates the same text', async (t) => {
  const prompt = `${system}ROMEO:\nWhat light is this?\n`;
  const cold = await postJson(url, { prompt, ...greedy });
  const warm = await postJson(url, { prompt, ...greedy });
  t.equal(cold.json.usage.prompt_tokens_details.cached_tokens, 0, 'cold request: nothing cached');
  const reusable = Math.floor((bytes(prompt) - 1) / BLOCK) * BLOCK;
  t.equal(warm.json.usage.prompt_tokens_details.cached_tokens, reusable, 'warm request: every full block but the last token');
  t.equal(warm.json.choices[0].text, cold.json.choices[0].text, 'identical greedy output');
});

t.test('a prompt sharing a system prompt reuses the shared blocks only', async (t) => {
  const a = await postJson(url, { prompt: `${system}JULIET:\nWherefore art thou?\n`, ...greedy });
  const b = await postJson(url, { prompt: `${system}NURSE:\nGood morrow!\n`, ...greedy });
  t.equal(a.status, 200);
  const shared = Math.floor(bytes(system) / BLOCK) * BLOCK;
  t.ok(b.json.usage.prompt_tokens_details.cached_tokens >= shared, `reused the system prompt's ${shared} tokens`);
  t.ok(b.json.usage.prompt_tokens_details.cached_tokens < b.json.usage.prompt_tokens - 1, 'but not the different tail');
});

t.test('a session continues its cache turn after turn and never re-prefills history', async (t) => {
  const session_id = 'chat-1';
  let history = 'MENENIUS:\nWhat work is here?\n';
  const first = await postJson(url, { prompt: history, session_id, ...greedy });
  t.equal(first.json.usage.prompt_tokens_details.cached_tokens, 0);
  // The session holds the prompt and every generated token but the last (its KV is computed when it is fed).
  history += first.json.choices[0].text;
  const kept = bytes(history) - 1;
  const info = (await (await fetch(`${server.url}/v1/sessions/${session_id}`)).json()) as Record<string, unknown>;
  t.match(info, { id: session_id, tokens: kept, bytes: kept * bytesPerToken, pinned: false });
  t.type(info.created, 'number');
  t.type(info.last_used, 'number');

  history += '\nCOMINIUS:\nHence!\n';
  const second = await postJson(url, { prompt: history, session_id, ...greedy });
  t.equal(second.json.usage.prompt_tokens_details.cached_tokens, kept, 'only the new turn is prefilled');
  const cold = await postJson(url, { prompt: history, ...greedy, session_id: 'another' });
  t.equal(second.json.choices[0].text, cold.json.choices[0].text, 'session reuse does not change output');

  const diverged = await postJson(url, { prompt: 'MENENIUS:\nWhat news?\n', session_id, ...greedy });
  t.equal(diverged.json.usage.prompt_tokens_details.cached_tokens, bytes('MENENIUS:\nWhat '), 'a diverging prompt reuses the common prefix');
});

t.test('the sessions API lists, returns and deletes sessions; unknown ids are 404', async (t) => {
  await postJson(url, { prompt: 'LEONTES:\nToo hot, too hot!\n', session_id: 'listed', ...greedy });
  const list = (await (await fetch(`${server.url}/v1/sessions`)).json()) as { object: string; data: { id: string }[] };
  t.equal(list.object, 'list');
  t.ok(list.data.some((s: { id: string }) => s.id === 'listed'));
  const del = await fetch(`${server.url}/v1/sessions/listed`, { method: 'DELETE' });
  t.same(await del.json(), { id: 'listed', object: 'session', deleted: true });
  for (const method of ['GET', 'DELETE']) {
    const res = await fetch(`${server.url}/v1/sessions/listed`, { method });
    t.equal(res.status, 404, `${method} after delete`);
    t.match(await res.json(), { error: { type: 'invalid_request_error', code: 'session_not_found', param: 'id' } });
  }
});

t.test('a session id of 256 characters (the most allowed) is reachable by URL', async (t) => {
  const id = 'Ω'.repeat(100) + 's'.repeat(156);
  const res = await postJson(url, { prompt: 'KING LEAR:\nBlow, winds!\n', session_id: id, ...greedy });
  t.equal(res.status, 200);
  const path = `${server.url}/v1/sessions/${encodeURIComponent(id)}`;
  const got = await fetch(path);
  t.equal(got.status, 200);
  t.match(await got.json(), { object: 'session', id });
  const del = await fetch(path, { method: 'DELETE' });
  t.same(await del.json(), { id, object: 'session', deleted: true });
});

t.test('idle sessions expire after the TTL', async (t) => {
  const short = await startServer({ env: { SESSION_TTL_MS: '300' } });
  t.teardown(() => short.close());
  await postJson(`${short.url}/v1/completions`, { prompt: 'PROSPERO:\nNow does my project gather to a head.\n', session_id: 'brief', ...greedy });
  t.equal((await fetch(`${short.url}/v1/sessions/brief`)).status, 200);
  await new Promise((r) => setTimeout(r, 1500));
  t.equal((await fetch(`${short.url}/v1/sessions/brief`)).status, 404, 'gone after the TTL');
});

t.test('a request whose cache could never fit the budget is a clear 400', async (t) => {
  const tiny = await startServer({ env: { KV_CACHE_MAX_BYTES: String(64 * bytesPerToken) } });
  t.teardown(() => tiny.close());
  const res = await postJson(`${tiny.url}/v1/completions`, { prompt: 'KING LEAR:\n', max_tokens: 100 });
  t.equal(res.status, 400);
  t.match(res.json.error, { code: 'kv_budget_exceeded', param: 'max_tokens' });
  const chat = await postJson(`${tiny.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 100 });
  t.equal(chat.status, 400);
  t.match(chat.json.error, { code: 'kv_budget_exceeded', param: 'max_completion_tokens' }, 'the field the client used');
  const ok = await postJson(`${tiny.url}/v1/completions`, { prompt: 'KING LEAR:\n', max_tokens: 20 });
  t.equal(ok.status, 200, 'a request that fits still runs');
});
