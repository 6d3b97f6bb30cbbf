// /tokenize and /detokenize round-trip any UTF-8 text as its bytes (the model is byte-level),
// plus the small GET routes: /v1/models, /health, /health/ready and the generated /openapi.json.
import t from 'tap';
import { INLINE_TOKENIZE_CHARS } from '../../src/workers/engine-client.js';
import { startServer } from '../helpers/server.js';

const server = await startServer();
t.teardown(() => server.close());
const { app } = server;
const model = server.engine.info.id;

const post = async (url: string, payload: unknown) => {
  const res = await app.inject({ method: 'POST', url, payload: payload as object });
  return { status: res.statusCode, body: res.json() as Record<string, unknown> };
};

const samples = {
  ascii: 'To be, or not to be: that is the question.\n',
  cjk: '東京',
  emoji: 'I 💜 Verona 🌹',
  'zwj sequence': '👩‍👩‍👧',
  accents: 'Ça, déjà vu: naïveté, Ångström, São Paulo',
};

t.test('tokenize gives the UTF-8 bytes and detokenize gives the text back', async (t) => {
  for (const [name, text] of Object.entries(samples)) {
    const tok = await post('/tokenize', { prompt: text });
    t.equal(tok.status, 200, `${name}: tokenize 200`);
    const bytes = [...Buffer.from(text, 'utf8')];
    t.same(tok.body, { tokens: bytes, count: bytes.length, max_model_len: 2048 }, `${name}: tokens are the UTF-8 bytes`);
    const detok = await post('/detokenize', { tokens: tok.body.tokens });
    t.same(detok, { status: 200, body: { prompt: text } }, `${name}: detokenize round-trips`);
  }
});

t.test('the model field, when given, must name the served model', async (t) => {
  t.equal((await post('/tokenize', { model, prompt: 'x' })).status, 200);
  t.match(await post('/tokenize', { model: 'other', prompt: 'x' }), { status: 404, body: { error: { code: 'model_not_found' } } });
});

t.test('detokenize: an empty list is empty text; end-of-text is skipped; a cut character is U+FFFD', async (t) => {
  t.same((await post('/detokenize', { tokens: [] })).body, { prompt: '' });
  t.same((await post('/detokenize', { tokens: [72, 256, 105] })).body, { prompt: 'Hi' });
  const cut = [...Buffer.from('東')].slice(0, 2);
  t.same((await post('/detokenize', { tokens: [65, ...cut] })).body, { prompt: 'A\uFFFD' });
});

t.test('detokenize rejects an id outside the vocabulary and names its index', async (t) => {
  const vocab = server.engine.info.vocabSize;
  t.equal(vocab, 257);
  const res = await post('/detokenize', { tokens: [72, 105, vocab] });
  t.equal(res.status, 400);
  t.match(res.body, { error: { type: 'invalid_request_error', param: 'tokens[2]', message: /257/ } });
  t.match(await post('/detokenize', { tokens: [-1] }), { status: 400, body: { error: { param: 'tokens[0]' } } });
  t.match(await post('/detokenize', { tokens: [1.5] }), { status: 400, body: { error: { param: 'tokens[0]' } } });
});

t.test('tokenize with messages renders the chat template; chat requests use the same prompt', async (t) => {
  const messages = [
    { role: 'system', content: 'Thou art a poet.' },
    { role: 'user', content: '東京 🌸' },
  ];
  const contentBytes = messages.reduce((n, m) => n + Buffer.byteLength(m.content), 0);
  const rendered = await post('/tokenize', { messages });
  t.equal(rendered.status, 200);
  const count = rendered.body.count as number;
  t.ok(count > contentBytes, `${count} tokens > ${contentBytes} bytes of content`);
  t.equal((rendered.body.tokens as number[]).length, count);

  // Every content's bytes appear, in order, inside the rendered prompt.
  const text = (await post('/detokenize', { tokens: rendered.body.tokens })).body.prompt as string;
  const positions = messages.map((m) => text.indexOf(m.content));
  t.ok(
    positions.every((p, i) => p >= 0 && (i === 0 || p > positions[i - 1]!)),
    'contents appear in order',
  );

  const without = await post('/tokenize', { messages, add_generation_prompt: false });
  t.ok((without.body.count as number) < count, 'add_generation_prompt: false renders a shorter prompt');

  const chat = await post('/v1/chat/completions', { messages, max_tokens: 1, temperature: 0 });
  t.equal(chat.status, 200);
  t.match(chat.body, { usage: { prompt_tokens: count } }, 'the chat route counts the same prompt');
});

t.test('a long text is tokenized off the HTTP thread: the event loop goes on turning meanwhile', async (t) => {
  const text = Array.from({ length: 8_000 }, (_, i) => `JULIET ${i}: O Romeo, Romeo! wherefore art thou Romeo? 🌹\n`).join('');
  t.ok(text.length > INLINE_TOKENIZE_CHARS);
  // What tokenizing it costs this thread, the yardstick for the stall below (same machine, same run).
  const started = performance.now();
  const expected = server.engine.tokenizer.encode(text);
  const inlineMs = performance.now() - started;
  let last = performance.now();
  let longestStallMs = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    longestStallMs = Math.max(longestStallMs, now - last);
    last = now;
  }, 1);
  const res = await post('/tokenize', { prompt: text });
  clearInterval(ticker);
  longestStallMs = Math.max(longestStallMs, performance.now() - last);
  t.equal(res.status, 200);
  t.same(res.body.tokens, expected, 'the same tokens');
  t.ok(longestStallMs < inlineMs / 3, `longest stall of this thread ${longestStallMs.toFixed(1)} ms, tokenizing here takes ${inlineMs.toFixed(1)} ms`);
});

t.test('a completion whose prompt is tokenized off the HTTP thread: its tokens are counted the same', async (t) => {
  // Longer than the context (2,048 tokens, one per byte here): the context check reports the count.
  const prompt = `ROMEO: ${'But soft, what light through yonder window breaks? '.repeat(60)}`;
  t.ok(prompt.length > INLINE_TOKENIZE_CHARS);
  const res = await post('/v1/completions', { prompt, max_tokens: 2 });
  t.equal(res.status, 400);
  t.match(res.body, {
    error: { code: 'context_length_exceeded', param: 'prompt', message: `(${Buffer.byteLength(prompt)} in the prompt, 2 in the completion)` },
  });
});

t.test('tokenize needs prompt or messages', async (t) => {
  t.match(await post('/tokenize', {}), { status: 400, body: { error: { type: 'invalid_request_error' } } });
  t.match(await post('/tokenize', { messages: [] }), { status: 400, body: { error: { param: 'messages' } } });
});

t.test('/v1/models and /v1/models/:id over HTTP', async (t) => {
  const list = await fetch(`${server.url}/v1/models`);
  t.equal(list.status, 200);
  const body = (await list.json()) as { object: string; data: Array<Record<string, unknown>> };
  t.equal(body.object, 'list');
  t.equal(body.data.length, 1);
  t.match(body.data[0], { id: model, object: 'model', owned_by: String, created: Number, context_length: 2048, max_model_len: 2048 });

  const one = await fetch(`${server.url}/v1/models/${model}`);
  t.equal(one.status, 200);
  t.same(await one.json(), body.data[0]);

  const missing = await fetch(`${server.url}/v1/models/no-such-model`);
  t.equal(missing.status, 404);
  t.match(await missing.json(), { error: { code: 'model_not_found', type: 'invalid_request_error' } });
});

t.test('/health and /health/ready over HTTP', async (t) => {
  const health = await fetch(`${server.url}/health`);
  t.equal(health.status, 200);
  t.same(await health.json(), { status: 'ok' });
  const ready = await fetch(`${server.url}/health/ready`);
  t.equal(ready.status, 200);
  t.same(await ready.json(), { status: 'ready' });
});

interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  anyOf?: JsonSchema[];
  maximum?: number;
  minimum?: number;
  items?: JsonSchema;
}
/** The non-null branch of a nullish field (`anyOf: [T, {type:'null'}]`), or the schema itself. */
const nonNull = (s: JsonSchema | undefined) => s?.anyOf?.find((b) => b.type !== 'null') ?? s;

t.test('/openapi.json is OpenAPI 3.1 generated from the request schemas', async (t) => {
  const res = await fetch(`${server.url}/openapi.json`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^application\/json/);
  const doc = (await res.json()) as {
    openapi: string;
    info: { title: string; version: string };
    paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: JsonSchema }> }; responses: Record<string, unknown> }>>;
  };
  t.match(doc.openapi, /^3\.1\.\d+$/);
  t.match(doc.info, { title: String, version: String });
  for (const path of ['/v1/completions', '/v1/chat/completions', '/v1/models', '/tokenize', '/detokenize', '/health', '/health/ready']) {
    t.ok(doc.paths[path], `documents ${path}`);
  }

  const request = (path: string) => doc.paths[path]?.post?.requestBody?.content['application/json']?.schema;
  const completion = request('/v1/completions');
  const chat = request('/v1/chat/completions');
  for (const [name, schema] of [
    ['completions', completion],
    ['chat', chat],
  ] as const) {
    t.match(nonNull(schema?.properties?.temperature), { type: 'number', minimum: 0, maximum: 2 }, `${name}: temperature in [0, 2]`);
    t.match(nonNull(schema?.properties?.stop), { anyOf: Array }, `${name}: stop is a string or a list`);
    t.ok(doc.paths[name === 'chat' ? '/v1/chat/completions' : '/v1/completions']?.post?.responses['400'], `${name}: documents 400`);
  }
  t.ok(completion?.required?.includes('prompt'), 'completions require prompt');
  t.ok(chat?.required?.includes('messages'), 'chat requires messages');
  t.match(chat?.properties?.messages, { type: 'array', items: { properties: { role: Object, content: Object } } });
  t.notOk(completion?.properties?.messages, 'messages belongs to chat only');
});
