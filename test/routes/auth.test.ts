// API keys as tenants, against the real service: every route that touches data needs a key
// (401 in OpenAI's shape otherwise, on every registered route), probes and docs stay open,
// /metrics takes its own key, tenants see only their own sessions and cache, keys of one
// tenant share it, maxRequests answers 429 + Retry-After, CORS preflights answer, and no key
// ever reaches the log.
import t from 'tap';
import { bearer, digestOf, keyFile } from '../helpers/keys.js';
import { startServer } from '../helpers/server.js';
import { readSse } from '../helpers/sse.js';

const ALICE = 'sk-alice-0123456789abcdef';
const ALICE2 = 'sk-alice-second-key-fedcba';
const BOB = 'sk-bob-9876543210';
const METRICS = 'metrics-key-abc';
const ORIGIN = 'https://app.example.com';

const file = keyFile(t, {
  keys: [
    { tenant: 'alice', key: ALICE },
    { tenant: 'alice', sha256: digestOf(ALICE2) },
    { tenant: 'bob', sha256: digestOf(BOB).toUpperCase(), maxRequests: 2, kvShare: 0.25 },
  ],
});
const logs: string[] = [];
const server = await startServer({
  env: { API_KEYS_FILE: file.path, METRICS_API_KEY: METRICS, CORS_ORIGINS: `${ORIGIN}, https://other.example` },
  onLog: (line) => logs.push(JSON.stringify(line)),
});
t.teardown(() => server.close());

async function call(method: string, path: string, headers: Record<string, string> = {}, body?: unknown) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

const completion = (prompt: string, extra: Record<string, unknown> = {}) => ({ prompt, max_tokens: 2, temperature: 0, ...extra });

/** Every route the app registered, from Fastify's own route tree. */
/** Every route the app registered, from /openapi.json (built by an onRoute hook, src/routes/openapi.ts). */
async function registeredRoutes(): Promise<Array<{ method: string; url: string }>> {
  const doc = (await call('GET', '/openapi.json')).json as { paths: Record<string, Record<string, unknown>> };
  return Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.keys(ops).map((method) => ({ method: method.toUpperCase(), url: path.replace(/\{([^}]+)\}/g, ':$1') })),
  );
}

const OPEN = new Set(['/health', '/health/ready', '/openapi.json']);
/** The playground's page and files: open (the page asks for a key); 404 until `npm run build` made them. */
const PLAYGROUND = new Set(['/', '/playground/app.js', '/playground/app.css']);

t.test('every registered route that is not a probe or documentation answers 401 without a key or with a wrong one', async (t) => {
  const routes = await registeredRoutes();
  t.ok(routes.length >= 12, `${routes.length} routes found: ${routes.map((r) => `${r.method} ${r.url}`).join(', ')}`);
  const protectedRoutes = routes.filter((r) => !OPEN.has(r.url) && !PLAYGROUND.has(r.url));
  for (const r of ['/v1/completions', '/v1/chat/completions', '/v1/models', '/v1/sessions', '/tokenize', '/detokenize', '/metrics']) {
    t.ok(
      protectedRoutes.some((p) => p.url === r),
      `${r} is among the protected`,
    );
  }
  for (const { method, url } of protectedRoutes) {
    const path = url.replace(':id', 'some-id');
    const body = method === 'POST' ? { prompt: 'x', tokens: [1] } : undefined;
    for (const [how, headers] of [
      ['no key', {}],
      ['a wrong key', bearer('sk-wrong')],
      ['a Basic header', { authorization: `Basic ${Buffer.from(`u:${ALICE}`).toString('base64')}` }],
      ['the metrics key', url === '/metrics' ? bearer(BOB) : bearer(METRICS)],
    ] as const) {
      const res = await call(method, path, headers, body);
      t.equal(res.status, 401, `${method} ${path} with ${how}: 401`);
      t.strictSame(Object.keys(res.json.error ?? {}).sort(), ['code', 'message', 'param', 'type'], 'the error shape');
      t.match(res.json.error, { type: 'invalid_request_error', param: null, code: 'invalid_api_key' });
      t.notMatch(JSON.stringify(res.json), ALICE, 'the key is not echoed');
    }
  }
  const unknown = await call('GET', '/v1/no-such-route');
  t.equal(unknown.status, 401, 'an unknown /v1 URL needs a key too (deny by default; routes are not leaked)');
});

t.test('probes and documentation stay open', async (t) => {
  for (const path of OPEN) t.equal((await call('GET', path)).status, 200, `${path}: 200 without a key`);
  for (const path of PLAYGROUND) t.not((await call('GET', path)).status, 401, `${path}: no key asked`);
});

t.test('the OpenAPI document declares the bearer scheme, and the probes as open', async (t) => {
  const doc = (await call('GET', '/openapi.json')).json;
  t.match(doc.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer' });
  t.strictSame(doc.security, [{ bearerAuth: [] }]);
  t.strictSame(doc.paths['/health'].get.security, []);
  t.ok(doc.paths['/v1/completions'].post.responses['401'], 'documents the 401');
});

t.test('/metrics takes METRICS_API_KEY only', async (t) => {
  const res = await call('GET', '/metrics', bearer(METRICS));
  t.equal(res.status, 200);
  t.match(res.json, 'kvserve_tenant_requests_total');
});

t.test('a valid key serves, and each key of a tenant acts for it', async (t) => {
  for (const key of [ALICE, ALICE2, BOB]) {
    const models = await call('GET', '/v1/models', bearer(key));
    t.equal(models.status, 200, 'GET /v1/models');
    const res = await call('POST', '/v1/completions', { authorization: `bearer   ${key}` }, completion('To be'));
    t.equal(res.status, 200, 'the scheme is case-insensitive, spaces are allowed');
  }
  const tok = await call('POST', '/tokenize', bearer(BOB), { prompt: 'abc' });
  t.equal(tok.json.count, 3);
});

t.test('sessions are visible, readable and deletable by their tenant only (404 for others, never 403)', async (t) => {
  const session_id = 'shared-name';
  const a = await call('POST', '/v1/completions', bearer(ALICE), completion('Alice says hello to the world', { session_id }));
  t.equal(a.status, 200);
  const listA = await call('GET', '/v1/sessions', bearer(ALICE2));
  t.ok(
    listA.json.data.some((s: { id: string }) => s.id === session_id),
    "alice's other key lists it",
  );
  const listB = await call('GET', '/v1/sessions', bearer(BOB));
  t.notOk(
    listB.json.data.some((s: { id: string }) => s.id === session_id),
    'bob does not see it',
  );
  for (const method of ['GET', 'DELETE']) {
    const res = await call(method, `/v1/sessions/${session_id}`, bearer(BOB));
    t.equal(res.status, 404, `${method} by bob: 404`);
    t.equal(res.json.error.code, 'session_not_found');
  }
  // Bob's request naming the same session id starts its own session: nothing of alice's is read.
  const b = await call('POST', '/v1/completions', bearer(BOB), completion('Alice says hello to the world', { session_id }));
  t.equal(b.json.usage.prompt_tokens_details.cached_tokens, 0, "bob's turn with alice's session id reuses nothing");
  t.equal((await call('GET', `/v1/sessions/${session_id}`, bearer(ALICE))).status, 200, "alice's session is still hers");
  t.equal((await call('DELETE', `/v1/sessions/${session_id}`, bearer(ALICE))).status, 200, 'alice deletes hers');
  t.equal((await call('GET', `/v1/sessions/${session_id}`, bearer(BOB))).status, 200, "bob's own is untouched");
});

t.test("the prefix cache never serves one tenant's blocks to another; keys of one tenant share it", async (t) => {
  const prompt = `${'The quality of mercy is not strained; it droppeth as the gentle rain. '.repeat(3)}Q`;
  const cold = await call('POST', '/v1/completions', bearer(ALICE), completion(prompt));
  t.equal(cold.json.usage.prompt_tokens_details.cached_tokens, 0, 'cold for alice');
  const other = await call('POST', '/v1/completions', bearer(BOB), completion(prompt));
  t.equal(other.json.usage.prompt_tokens_details.cached_tokens, 0, 'bob: cached_tokens 0 for the prompt alice cached');
  const same = await call('POST', '/v1/completions', bearer(ALICE2), completion(prompt));
  t.ok(
    same.json.usage.prompt_tokens_details.cached_tokens >= 64,
    `alice's second key reuses it (${same.json.usage.prompt_tokens_details.cached_tokens} tokens)`,
  );
  t.equal(same.json.choices[0].text, other.json.choices[0].text, 'the same greedy text either way');
});

t.test('maxRequests: a tenant over its running + queued limit gets 429 rate_limited with Retry-After, others are unaffected', async (t) => {
  const controllers: AbortController[] = [];
  const streams: Promise<unknown>[] = [];
  // Two long streams hold bob's two slots.
  for (let i = 0; i < 2; i++) {
    const c = new AbortController();
    controllers.push(c);
    const res = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(BOB) },
      body: JSON.stringify({ prompt: `Long ${i}`, max_tokens: 2000, ignore_eos: true, stream: true }),
      signal: c.signal,
    });
    t.equal(res.status, 200, `stream ${i} started`);
    streams.push(readSse(res.body).catch(() => undefined));
  }
  const refused = await call('POST', '/v1/completions', bearer(BOB), completion('one more'));
  t.equal(refused.status, 429, 'the third: 429');
  t.match(refused.json.error, { code: 'rate_limited', type: 'rate_limit_error', param: null });
  t.equal(refused.headers.get('retry-after'), '1');
  const streamed = await call('POST', '/v1/chat/completions', bearer(BOB), { messages: [{ role: 'user', content: 'hi' }], stream: true, max_tokens: 2 });
  t.equal(streamed.status, 429, 'a streaming request is refused with a status too, not an event');
  t.equal((await call('POST', '/tokenize', bearer(BOB), { prompt: 'abc' })).status, 200, 'non-generation routes are not counted');
  t.equal((await call('POST', '/v1/completions', bearer(ALICE), completion('alice is served'))).status, 200, 'another tenant is served');
  for (const c of controllers) c.abort();
  await Promise.all(streams);
  // Slots come back when the streams end.
  let status = 0;
  for (let i = 0; i < 50 && status !== 200; i++) {
    status = (await call('POST', '/v1/completions', bearer(BOB), completion('again'))).status;
    if (status !== 200) await new Promise((r) => setTimeout(r, 20));
  }
  t.equal(status, 200, 'served again once its streams ended');
  t.equal(server.app.auth.inFlight('bob'), 0, 'nothing left counted');
});

t.test('CORS: listed origins get preflights answered with Authorization allowed; others get no CORS headers', async (t) => {
  const pre = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
  t.equal(pre.status, 204, 'the preflight answers (without a key: browsers send none)');
  t.equal(pre.headers.get('access-control-allow-origin'), ORIGIN);
  t.match(pre.headers.get('access-control-allow-headers') ?? '', /authorization/i);
  t.match(pre.headers.get('access-control-allow-methods') ?? '', 'POST');
  const actual = await call('GET', '/v1/models', { origin: ORIGIN, ...bearer(ALICE) });
  t.equal(actual.status, 200);
  t.equal(actual.headers.get('access-control-allow-origin'), ORIGIN, 'the actual request carries the header');
  const noKey = await call('GET', '/v1/models', { origin: ORIGIN });
  t.equal(noKey.status, 401, 'CORS does not open the API: the key is still needed');
  t.equal(noKey.headers.get('access-control-allow-origin'), ORIGIN, 'and the browser can read the 401');
  const foreign = await call('GET', '/v1/models', { origin: 'https://evil.example', ...bearer(ALICE) });
  t.equal(foreign.headers.get('access-control-allow-origin'), null, 'an unlisted origin gets no CORS header');
});

t.test('requests are counted by tenant; 401s have no tenant', async (t) => {
  const text = (await call('GET', '/metrics', bearer(METRICS))).json as string;
  t.match(text, /kvserve_tenant_requests_total\{tenant="alice",status="200"\} [1-9]/);
  t.match(text, /kvserve_tenant_requests_total\{tenant="bob",status="429"\} [1-9]/);
  t.notMatch(text, /kvserve_tenant_requests_total\{tenant="(default|)"/, 'no tenant label for refused keys');
  t.match(text, /kvserve_kv_cache_tenant_bytes\{tenant="alice"\} [1-9]/);
  t.match(text, /kvserve_requests_total\{route="\/v1\/completions",status="401"\} [1-9]/);
});

t.test('no key is ever written to the log', async (t) => {
  t.ok(logs.length > 20, `${logs.length} log lines`);
  const all = logs.join('\n');
  for (const key of [ALICE, ALICE2, BOB, METRICS, 'sk-wrong']) t.notMatch(all, key, 'not in the log');
  t.notMatch(all, /authorization/i, 'no Authorization header in the log');
});
