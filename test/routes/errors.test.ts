// Every way a request can be wrong gets the OpenAI error shape {error:{message,type,param,code}}
// with the catalog's status/type/code and a `param` naming the field; the service keeps serving.
import t, { type Test } from 'tap';
import { connect } from 'node:net';
import { catalog } from '../../src/errors.js';
import { startServer, type TestServer } from '../helpers/server.js';

const server = await startServer();
t.teardown(() => server.close());

const C = '/v1/completions';
const CHAT = '/v1/chat/completions';
const tokens = (text: string): number => server.engine.tokenizer.encode(text).length;
/** A valid completion body with one field changed. */
const completion = (fields: Record<string, unknown>) => ({ prompt: 'To be', max_tokens: 4, ...fields });
const userSays = (content: unknown) => [{ role: 'user', content }];

interface Row {
  name: string;
  method?: 'GET' | 'POST' | 'DELETE' | 'PUT';
  url?: string;
  /** An object is sent as JSON; a string is sent as-is. */
  body?: unknown;
  contentType?: string;
  status: number;
  type: string;
  param: string | null;
  code: string | null;
  /** Substrings the message must contain besides the param. */
  mentions?: string[];
}

const invalid = (name: string, body: unknown, param: string | null, url = C): Row => ({
  name,
  url,
  body,
  status: 400,
  type: 'invalid_request_error',
  param,
  code: null,
});

const longPrompt = 'a'.repeat(3000);
const rows: Row[] = [
  { name: 'malformed JSON', body: '{"prompt": "To be",', status: 400, type: 'invalid_request_error', param: null, code: 'invalid_json' },
  invalid('a JSON array body', '[{"prompt":"To be"}]', null),
  invalid('a JSON string body', '"To be"', null),
  invalid('a JSON null body', 'null', null),
  { ...invalid('missing prompt', { max_tokens: 4 }, 'prompt'), mentions: ['required'] },
  invalid("empty prompt ''", completion({ prompt: '' }), 'prompt'),
  invalid('prompt of the wrong type (number)', completion({ prompt: 5 }), 'prompt'),
  invalid("temperature 'x'", completion({ temperature: 'x' }), 'temperature'),
  invalid('temperature -1', completion({ temperature: -1 }), 'temperature'),
  invalid('temperature 3', completion({ temperature: 3 }), 'temperature'),
  invalid('top_p 0', completion({ top_p: 0 }), 'top_p'),
  invalid('top_p 1.5', completion({ top_p: 1.5 }), 'top_p'),
  invalid('top_k 1.5', completion({ top_k: 1.5 }), 'top_k'),
  invalid('min_p 2', completion({ min_p: 2 }), 'min_p'),
  invalid('frequency_penalty 3', completion({ frequency_penalty: 3 }), 'frequency_penalty'),
  invalid('presence_penalty -3', completion({ presence_penalty: -3 }), 'presence_penalty'),
  invalid('repetition_penalty 0', completion({ repetition_penalty: 0 }), 'repetition_penalty'),
  invalid('seed -1', completion({ seed: -1 }), 'seed'),
  invalid('max_tokens 0', completion({ max_tokens: 0 }), 'max_tokens'),
  invalid('max_tokens 1.5', completion({ max_tokens: 1.5 }), 'max_tokens'),
  invalid("max_tokens 'ten'", completion({ max_tokens: 'ten' }), 'max_tokens'),
  invalid('stop 5', completion({ stop: 5 }), 'stop'),
  invalid('stop [1]', completion({ stop: [1] }), 'stop[0]'),
  { ...invalid('stop with 17 strings', completion({ stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }), 'stop'), mentions: ['16'] },
  invalid('prompt with an empty batch', completion({ prompt: [] }), 'prompt'),
  invalid('prompt with a negative token id', completion({ prompt: [1, -2] }), 'prompt[1]'),
  invalid("stream 'yes'", completion({ stream: 'yes' }), 'stream'),
  invalid('n 0', completion({ n: 0 }), 'n'),
  invalid('logprobs 21', completion({ logprobs: 21 }), 'logprobs'),
  invalid('best_of below n', completion({ n: 3, best_of: 2 }), 'best_of'),
  invalid('logit_bias 101', completion({ logit_bias: { 5: 101 } }), 'logit_bias.5'),
  { ...invalid('tools (not supported)', completion({ tools: [{ type: 'function' }] }), 'tools'), mentions: ['not supported'] },
  invalid('response_format of an unknown type', completion({ response_format: { type: 'yaml' } }), 'response_format.type'),
  {
    name: 'unknown model',
    body: completion({ model: 'gpt-4o' }),
    status: 404,
    type: 'invalid_request_error',
    param: 'model',
    code: 'model_not_found',
    mentions: ['gpt-4o'],
  },
  { ...invalid('chat: messages missing', { max_tokens: 4 }, 'messages', CHAT), mentions: ['required'] },
  invalid('chat: messages []', { messages: [], max_tokens: 4 }, 'messages', CHAT),
  invalid("chat: role 'robot'", { messages: [{ role: 'robot', content: 'hi' }], max_tokens: 4 }, 'messages[0].role', CHAT),
  invalid('chat: content 5', { messages: userSays(5), max_tokens: 4 }, 'messages[0].content', CHAT),
  invalid(
    'chat: an image part',
    {
      messages: userSays([
        { type: 'text', text: 'hi' },
        { type: 'image_url', image_url: { url: 'x' } },
      ]),
      max_tokens: 4,
    },
    'messages[0].content[1].type',
    CHAT,
  ),
  {
    name: 'context overflow: max_tokens 5000 with a short prompt',
    body: completion({ max_tokens: 5000 }),
    status: 400,
    type: 'invalid_request_error',
    param: 'max_tokens',
    code: 'context_length_exceeded',
    mentions: ['2048', String(tokens('To be') + 5000)],
  },
  {
    name: 'context overflow: a prompt longer than the context, no max_tokens',
    body: { prompt: longPrompt },
    status: 400,
    type: 'invalid_request_error',
    param: 'prompt',
    code: 'context_length_exceeded',
    mentions: ['2048', String(tokens(longPrompt))],
  },
  {
    name: 'context overflow: a prompt longer than the context names the prompt, even with max_tokens',
    body: { prompt: longPrompt, max_tokens: 2 },
    status: 400,
    type: 'invalid_request_error',
    param: 'prompt',
    code: 'context_length_exceeded',
    mentions: ['2048', String(tokens(longPrompt))],
  },
  {
    name: 'a prompt of a million characters is refused before it is tokenized',
    body: { prompt: 'x'.repeat(1_000_000) },
    status: 400,
    type: 'invalid_request_error',
    param: 'prompt',
    code: 'context_length_exceeded',
    mentions: ['2048', '1000000 characters', 'without tokenizing'],
  },
  {
    name: 'chat: more messages than the context has tokens are refused before they are rendered',
    url: CHAT,
    body: { messages: Array.from({ length: 2049 }, () => ({ role: 'user', content: '' })) },
    status: 400,
    type: 'invalid_request_error',
    param: 'messages',
    code: 'context_length_exceeded',
    mentions: ['2048', '2049 messages'],
  },
  {
    name: 'chat: messages of a million characters are refused before they are rendered',
    url: CHAT,
    body: { messages: userSays('x'.repeat(1_000_000)) },
    status: 400,
    type: 'invalid_request_error',
    param: 'messages',
    code: 'context_length_exceeded',
    mentions: ['1000000 characters'],
  },
  {
    name: 'chat: max_completion_tokens wins over max_tokens (and is checked)',
    url: CHAT,
    body: { messages: userSays('hi'), max_tokens: 4, max_completion_tokens: 100_000 },
    status: 400,
    type: 'invalid_request_error',
    param: 'max_completion_tokens',
    code: 'context_length_exceeded',
    mentions: ['100000'],
  },
  {
    name: 'chat context overflow: messages longer than the context',
    url: CHAT,
    body: { messages: userSays(longPrompt) },
    status: 400,
    type: 'invalid_request_error',
    param: 'messages',
    code: 'context_length_exceeded',
    mentions: ['2048'],
  },
  {
    name: 'chat context overflow through max_completion_tokens names that field',
    url: CHAT,
    body: { messages: userSays('hi'), max_completion_tokens: 5000 },
    status: 400,
    type: 'invalid_request_error',
    param: 'max_completion_tokens',
    code: 'context_length_exceeded',
    mentions: ['2048'],
  },
  {
    name: 'a URL with bad percent-encoding',
    method: 'GET',
    url: '/v1/sessions/%ZZ',
    status: 400,
    type: 'invalid_request_error',
    param: null,
    code: 'bad_request',
  },
  { name: 'unknown route', method: 'GET', url: '/v1/engines', status: 404, type: 'invalid_request_error', param: null, code: 'not_found' },
  { name: 'wrong method (GET on a POST route)', method: 'GET', url: C, status: 404, type: 'invalid_request_error', param: null, code: 'not_found' },
  { name: 'wrong method (DELETE on chat)', method: 'DELETE', url: CHAT, status: 404, type: 'invalid_request_error', param: null, code: 'not_found' },
  {
    name: 'non-JSON content type (text/plain)',
    body: JSON.stringify(completion({})),
    contentType: 'text/plain',
    status: 415,
    type: 'invalid_request_error',
    param: null,
    code: 'unsupported_media_type',
  },
  {
    name: 'non-JSON content type (form-urlencoded)',
    body: 'prompt=To+be',
    contentType: 'application/x-www-form-urlencoded',
    status: 415,
    type: 'invalid_request_error',
    param: null,
    code: 'unsupported_media_type',
  },
];

async function send(s: TestServer, row: Pick<Row, 'method' | 'url' | 'body' | 'contentType'>) {
  const method = row.method ?? 'POST';
  const payload = row.body === undefined ? undefined : typeof row.body === 'string' ? row.body : JSON.stringify(row.body);
  return s.app.inject({
    method,
    url: row.url ?? C,
    ...(payload === undefined ? {} : { payload }),
    headers: payload === undefined ? {} : { 'content-type': row.contentType ?? 'application/json' },
  });
}

/** The body is exactly {error:{message,type,param,code}}, with no internals in it. */
function checkShape(t: Test, raw: string): { message: string; type: string; param: unknown; code: unknown } {
  const body = JSON.parse(raw) as { error: { message: string; type: string; param: unknown; code: unknown } };
  t.strictSame(Object.keys(body), ['error'], 'only an `error` member');
  t.strictSame(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'], 'exactly message, type, param, code');
  t.type(body.error.message, 'string');
  t.ok(body.error.message.length > 0, 'a message');
  t.notMatch(raw, /\n\s+at |stack|node_modules|\.ts:\d+/, 'no stack trace or source paths');
  return body.error;
}

for (const row of rows) {
  t.test(row.name, async (t) => {
    const res = await send(server, row);
    t.equal(res.statusCode, row.status, 'status');
    t.match(res.headers['content-type'], /^application\/json/);
    const error = checkShape(t, res.body);
    t.equal(error.type, row.type, 'type');
    t.equal(error.param, row.param, 'param');
    t.equal(error.code, row.code, 'code');
    // The catalog entry for this code (or the generic 400) agrees with status and type.
    const entry = Object.values(catalog).find((e) => e.code === row.code && e.status === row.status);
    t.ok(entry, `a catalog entry with status ${row.status} and code ${row.code}`);
    if (entry) t.equal(entry.type, error.type, 'type as in the catalog');
    // A 400 about a field names that field (context errors name both numbers instead).
    if (row.status === 400 && row.param !== null && row.code !== 'context_length_exceeded') {
      t.ok(error.message.includes(row.param), `message names ${row.param}: ${JSON.stringify(error.message)}`);
    }
    for (const s of row.mentions ?? []) t.ok(error.message.includes(s), `message mentions ${s}: ${JSON.stringify(error.message)}`);
  });
}

t.test('the service keeps serving after the whole table', async (t) => {
  const res = await send(server, { url: C, body: completion({}) });
  t.equal(res.statusCode, 200);
  const body = res.json() as { choices: Array<{ text: string; finish_reason: string }> };
  t.equal(body.choices.length, 1);
  t.type(body.choices[0]!.text, 'string');
  const chat = await send(server, { url: CHAT, body: { messages: userSays('hi'), max_tokens: 4 } });
  t.equal(chat.statusCode, 200);
});

t.test('unknown extra fields are ignored (documented behaviour)', async (t) => {
  const res = await send(server, { url: C, body: completion({ foo: 1, bar: { baz: [1, 2] } }) });
  t.equal(res.statusCode, 200, res.body);
  t.equal((res.json() as { choices: unknown[] }).choices.length, 1);
  const chat = await send(server, { url: CHAT, body: { messages: userSays('hi'), max_tokens: 4, foo: 1 } });
  t.equal(chat.statusCode, 200, chat.body);
});

t.test('a __proto__ or constructor key is dropped like any unknown field', async (t) => {
  const res = await send(server, { url: C, body: '{"prompt":"To be","max_tokens":2,"__proto__":{"x":1},"constructor":{"prototype":{"y":1}}}' });
  t.equal(res.statusCode, 200, res.body);
  t.equal((res.json() as { usage: { completion_tokens: number } }).usage.completion_tokens, 2);
});

t.test('chat: max_completion_tokens sets the length when both fields are sent', async (t) => {
  const res = await send(server, { url: CHAT, body: { messages: userSays('hi'), max_tokens: 50, max_completion_tokens: 3, ignore_eos: true } });
  t.equal(res.statusCode, 200, res.body);
  t.equal((res.json() as { usage: { completion_tokens: number } }).usage.completion_tokens, 3);
});

/** Sends raw bytes on a fresh connection; resolves with all that came back once the server closes it (or after `waitMs`). */
function rawExchange(url: string, payload: string, waitMs = 10_000): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let out = '';
    const timer = setTimeout(() => socket.destroy(), waitMs);
    socket.on('data', (d) => (out += String(d)));
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    socket.write(payload);
  });
}

/** Splits a raw HTTP/1.1 response into its status and its (JSON) body. */
function parseRaw(raw: string): { status: number; headers: string; body: string } {
  const [head = '', body = ''] = raw.split('\r\n\r\n');
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), headers: head, body };
}

t.test('errors below the routes (bad HTTP, huge headers, a slow client) get the same shape', async (t) => {
  const slow = await startServer({ env: { RECEIVE_TIMEOUT_MS: '300' } });
  t.teardown(() => slow.close());
  const cases = [
    { name: 'not HTTP at all', payload: 'GARBAGE\r\n\r\n', status: 400, code: 'bad_request' },
    { name: 'headers over 16 KiB', payload: `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, status: 431, code: 'headers_too_large' },
    { name: 'headers that never end', payload: 'POST /v1/completions HTTP/1.1\r\nHost: x\r\n', status: 408, code: 'receive_timeout' },
    {
      name: 'a body that never comes',
      payload: 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{',
      status: 408,
      code: 'receive_timeout',
    },
  ];
  for (const c of cases) {
    const res = parseRaw(await rawExchange(slow.url, c.payload));
    t.equal(res.status, c.status, `${c.name}: status`);
    t.match(res.headers, /content-type: application\/json/i, `${c.name}: JSON`);
    const error = checkShape(t, res.body);
    t.equal(error.code, c.code, `${c.name}: code`);
    t.equal(error.type, 'invalid_request_error');
    t.ok(
      Object.values(catalog).some((e) => e.code === c.code && e.status === c.status),
      `${c.name}: in the catalog`,
    );
  }
  // RECEIVE_TIMEOUT_MS bounds receiving the request, not streaming the answer.
  const started = performance.now();
  const stream = await fetch(`${slow.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'To be', max_tokens: 1000, ignore_eos: true, stream: true }),
  });
  const text = await stream.text();
  t.ok(performance.now() - started > 300, 'the stream outlasted the receive timeout');
  t.ok(text.endsWith('data: [DONE]\n\n'), 'and ended normally');
});

t.test('a body over BODY_LIMIT_BYTES gets 413', async (t) => {
  const small = await startServer({ env: { BODY_LIMIT_BYTES: '1024' } });
  t.teardown(() => small.close());
  const res = await send(small, { url: C, body: completion({ prompt: 'a'.repeat(2000) }) });
  t.equal(res.statusCode, 413);
  const error = checkShape(t, res.body);
  t.equal(error.type, 'invalid_request_error');
  t.equal(error.param, null);
  t.equal(error.code, 'body_too_large');
  const ok = await send(small, { url: C, body: completion({ prompt: 'a'.repeat(500) }) });
  t.equal(ok.statusCode, 200, 'a body under the limit is served by the same server');
});
