// HTTP fuzzing of every route with fast-check, shared by the suite (test/fuzz/http.test.ts: a
// fixed seed, bounded) and `npm run fuzz` (test/fuzz/run.ts: any seed, any count). Requests are
// valid-shaped bodies with hostile values, wrong types, huge and deeply nested JSON, odd content
// types, headers and methods, auth headers; over app.inject for speed, and raw bytes over a real
// socket where the wire is the subject (invalid UTF-8, odd methods and request lines).
// What must hold for each: no status ≥ 500, and every refusal in OpenAI's error shape.
import { connect } from 'node:net';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';

export interface FuzzRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer | undefined;
}

/** Generations stay tiny: at most this many tokens when a valid max_tokens is drawn. */
const MAX_TOKENS = 2;

const hostileNumber = fc.oneof(
  fc.constantFrom(-1, 0, 1e308, -1e308, 2 ** 53, 2 ** 64, 0.5, -0.0, 1e-320, 4294967296, Number.MAX_SAFE_INTEGER + 2),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer(),
);
const hostileString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('', '\u0000', '\ud800', '\udfff\ud800', '%00', '__proto__', '{"a":1}', '<script>', '\u202e', 'ROMEO:\n'.repeat(300), 'x'.repeat(70_000)),
);
/** A JSON value of any type, small. */
const anyJson = fc.oneof(
  hostileNumber,
  hostileString,
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 4 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 3 }),
);

/** A value for field `name`: usually valid, sometimes hostile or of a wrong type. */
function field(valid: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc.oneof({ weight: 3, arbitrary: valid }, { weight: 1, arbitrary: anyJson });
}

const prompt = fc.oneof({ weight: 4, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 24 }) }, { weight: 1, arbitrary: hostileString });
const samplingFields = {
  max_tokens: field(fc.integer({ min: 1, max: MAX_TOKENS })),
  temperature: field(fc.double({ min: 0, max: 2, noNaN: true })),
  top_p: field(fc.double({ min: 0.01, max: 1, noNaN: true })),
  top_k: field(fc.integer({ min: -1, max: 50 })),
  min_p: field(fc.double({ min: 0, max: 1, noNaN: true })),
  frequency_penalty: field(fc.double({ min: -2, max: 2, noNaN: true })),
  presence_penalty: field(fc.double({ min: -2, max: 2, noNaN: true })),
  repetition_penalty: field(fc.double({ min: 0.1, max: 10, noNaN: true })),
  seed: field(fc.nat()),
  stop: field(fc.oneof(fc.string({ maxLength: 4 }), fc.array(fc.string({ maxLength: 4 }), { maxLength: 20 }))),
  stream: field(fc.boolean()),
  stream_options: field(fc.record({ include_usage: fc.boolean() })),
  n: field(fc.constantFrom(1, 2)),
  ignore_eos: field(fc.boolean()),
  session_id: field(fc.string({ minLength: 1, maxLength: 300 })),
  model: field(fc.constantFrom('tiny-shakespeare', 'gpt-4', '')),
  user: field(fc.string({ maxLength: 8 })),
};
const message = fc.record(
  {
    role: field(fc.constantFrom('system', 'developer', 'user', 'assistant', 'tool')),
    content: field(fc.oneof(prompt, fc.array(fc.record({ type: fc.constantFrom('text', 'image_url'), text: prompt }), { maxLength: 3 }))),
    name: field(fc.string({ maxLength: 8 })),
  },
  { requiredKeys: [] },
);
// max_tokens is always present: the default (256 tokens) would make generation dominate.
const completionBody = fc.record(
  { ...samplingFields, prompt: field(fc.oneof(prompt, fc.array(prompt, { maxLength: 2 }))), echo: field(fc.boolean()) },
  {
    requiredKeys: ['max_tokens'],
  },
);
const chatBody = fc.record(
  {
    ...samplingFields,
    messages: field(fc.array(message, { maxLength: 4 })),
    max_completion_tokens: field(fc.integer({ min: 1, max: MAX_TOKENS })),
    logprobs: field(fc.boolean()),
  },
  { requiredKeys: ['max_tokens'] },
);
const tokenizeBody = fc.record(
  {
    prompt: field(prompt),
    messages: field(fc.array(message, { maxLength: 3 })),
    add_generation_prompt: field(fc.boolean()),
    model: field(fc.string({ maxLength: 4 })),
  },
  { requiredKeys: [] },
);
const detokenizeBody = fc.record(
  { tokens: field(fc.array(fc.oneof(fc.nat({ max: 300 }), hostileNumber), { maxLength: 40 })), model: field(fc.string({ maxLength: 4 })) },
  { requiredKeys: [] },
);

/** Deeply nested arrays or objects, huge arrays, and JSON that is not. */
const oddPayload = fc.oneof(
  fc.integer({ min: 1, max: 200_000 }).map((depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`),
  fc.integer({ min: 1, max: 100_000 }).map((depth) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`),
  fc.integer({ min: 1, max: 300_000 }).map((n) => JSON.stringify({ prompt: 'x', max_tokens: 1, stop: Array.from({ length: n }, () => 'a') })),
  fc.integer({ min: 1, max: 200_000 }).map((n) => JSON.stringify({ tokens: Array.from({ length: n }, (_, i) => i % 300) })),
  fc.constantFrom('', '{', '{"prompt":', 'null', '[]', '"a"', '1e999', '{"prompt":"x","max_tokens":1,}', '\ufeff{"prompt":"x"}', 'x'.repeat(1_100_000)),
  anyJson.map((v) => JSON.stringify(v)),
);

const POSTS = ['/v1/completions', '/v1/chat/completions', '/tokenize', '/detokenize'] as const;
const bodyFor: Record<(typeof POSTS)[number], fc.Arbitrary<unknown>> = {
  '/v1/completions': completionBody,
  '/v1/chat/completions': chatBody,
  '/tokenize': tokenizeBody,
  '/detokenize': detokenizeBody,
};

const oddHeaders = fc.dictionary(
  fc.constantFrom('authorization', 'x-request-id', 'accept', 'accept-encoding', 'x-forwarded-for', 'origin', 'cookie', 'x-api-key', 'user-agent'),
  fc.oneof(
    fc.constantFrom('Bearer sk-test', 'Bearer ', 'Basic Zm9vOmJhcg==', 'Bearer ' + 'k'.repeat(4000), 'text/event-stream', '*/*', 'gzip, br', 'null'),
    fc.string({ unit: 'binary-ascii', maxLength: 60 }).map((s) => s.replace(/[^\x20-\x7e]/g, '')),
  ),
  { maxKeys: 4 },
);
const contentType = fc.constantFrom(
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'APPLICATION/JSON',
  '',
);
const sessionPath = fc.oneof(
  fc.string({ minLength: 1, maxLength: 40 }).map(encodeURIComponent),
  fc.constantFrom('%', '%zz', '..%2F..%2Fetc', 'a'.repeat(2000), '%F0%28%8C%BC'),
);

/** A request to any route, or near one. */
export const fuzzRequest: fc.Arbitrary<FuzzRequest> = fc.oneof(
  // JSON routes with valid-shaped, hostile bodies.
  {
    weight: 10,
    arbitrary: fc
      .record({ url: fc.constantFrom(...POSTS), headers: oddHeaders })
      .chain(({ url, headers }) =>
        bodyFor[url].map((body) => ({ method: 'POST', url, headers: { ...headers, 'content-type': 'application/json' }, payload: JSON.stringify(body) })),
      ),
  },
  // Any payload, any content type, any POST route.
  {
    weight: 3,
    arbitrary: fc
      .record({ url: fc.constantFrom(...POSTS), headers: oddHeaders, ct: contentType, payload: oddPayload })
      .map(({ url, headers, ct, payload }) => ({
        method: 'POST',
        url,
        headers: ct ? { ...headers, 'content-type': ct } : headers,
        payload,
      })),
  },
  // Invalid UTF-8 inside a JSON string.
  {
    weight: 1,
    arbitrary: fc.record({ url: fc.constantFrom(...POSTS), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }).map(({ url, bytes }) => ({
      method: 'POST',
      url,
      headers: { 'content-type': 'application/json' },
      payload: Buffer.concat([
        Buffer.from('{"prompt":"'),
        Buffer.from([0xff, 0xc3, ...bytes, 0x80]),
        Buffer.from('","tokens":[1],"messages":[{"role":"user","content":"a"}],"max_tokens":1}'),
      ]),
    })),
  },
  // The GET routes and sessions, with odd ids.
  {
    weight: 3,
    arbitrary: fc
      .record({ method: fc.constantFrom('GET', 'HEAD', 'DELETE'), id: sessionPath, which: fc.nat({ max: 8 }), headers: oddHeaders })
      .map(({ method, id, which, headers }) => ({
        method,
        url: ['/health', '/health/ready', '/metrics', '/v1/models', `/v1/models/${id}`, '/openapi.json', '/v1/sessions', `/v1/sessions/${id}`, `/v1/${id}`][
          which
        ]!,
        headers,
      })),
  },
  // Methods the routes do not take, and paths that are not routes.
  {
    weight: 2,
    arbitrary: fc.record({
      method: fc.constantFrom('PUT', 'PATCH', 'OPTIONS', 'DELETE', 'GET', 'POST', 'TRACE'),
      url: fc.oneof(
        fc.constantFrom(...POSTS, '/health', '/metrics', '/v1/sessions', '/', '/v1', '/v1/', '/v1/completions/', '/v1/completions?x=%zz', '/%'),
        // inject parses the URL itself: it needs a path; stranger request lines go over the wire.
        fc.webPath().map((p) => `/${p.replace(/^\/+/, '')}`),
      ),
      headers: oddHeaders,
      payload: fc.option(oddPayload, { nil: undefined }),
    }),
  },
);

export interface Verdict {
  ok: boolean;
  problem?: string;
}

/** The error shape: exactly {"error":{"message","type","param","code"}} with message and type strings. */
export function isErrorShape(body: unknown): boolean {
  const error = (body as { error?: Record<string, unknown> } | null)?.error;
  if (!error || typeof error !== 'object' || Object.keys(body as object).length !== 1) return false;
  const keys = Object.keys(error).sort().join(',');
  return keys === 'code,message,param,type' && typeof error.message === 'string' && typeof error.type === 'string';
}

/** Judges one answer: no 5xx; a refusal (≥ 400, with a body) in the error shape. */
export function judge(method: string, status: number, contentType: string | undefined, body: string): Verdict {
  if (status >= 500) return { ok: false, problem: `status ${status}: ${body.slice(0, 200)}` };
  if (status < 400 || method === 'HEAD' || body === '')
    return status >= 400 && method !== 'HEAD' ? { ok: false, problem: `status ${status} with no body` } : { ok: true };
  if (!/^application\/json/.test(contentType ?? '')) return { ok: false, problem: `status ${status} answered as ${contentType}` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { ok: false, problem: `status ${status}: not JSON: ${body.slice(0, 200)}` };
  }
  return isErrorShape(parsed) ? { ok: true } : { ok: false, problem: `status ${status}: not the error shape: ${body.slice(0, 200)}` };
}

/** Sends one request with app.inject and judges the answer. */
export async function injectOne(app: FastifyInstance, req: FuzzRequest): Promise<Verdict & { status: number }> {
  const res = await app.inject({
    method: req.method as 'GET',
    url: req.url,
    headers: req.headers,
    ...(req.payload !== undefined ? { payload: req.payload } : {}),
  });
  const verdict = judge(req.method, res.statusCode, res.headers['content-type'] as string | undefined, res.body);
  return { ...verdict, status: res.statusCode };
}

/** Raw bytes over a real socket (Connection: close); resolves with the status line's code, headers and body. */
export function rawRequest(port: number, bytes: Buffer, timeoutMs = 10_000): Promise<{ status: number; contentType: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(new Error('no answer in time')), timeoutMs);
    socket.on('data', (c) => chunks.push(c));
    socket.once('error', (err) => {
      clearTimeout(timer);
      // The server may close after answering while bytes are still being written, or close an
      // unparseable connection without a word (EPIPE/ECONNRESET): not a failure. No answer is.
      if (err.message === 'no answer in time') reject(err);
      else finish();
    });
    socket.once('close', () => {
      clearTimeout(timer);
      finish();
    });
    let done = false;
    function finish(): void {
      if (done) return;
      done = true;
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const split = text.indexOf('\r\n\r\n');
      const head = split < 0 ? text : text.slice(0, split);
      let body = split < 0 ? '' : text.slice(split + 4);
      if (/\r\ntransfer-encoding: chunked/i.test(head)) body = dechunk(body);
      resolve({ status: m ? Number(m[1]) : 0, contentType: /\r\ncontent-type: ([^\r]*)/i.exec(head)?.[1], body: Buffer.from(body, 'latin1').toString('utf8') });
    }
    socket.end(bytes);
  });
}

function dechunk(body: string): string {
  let out = '';
  for (let at = 0; ; ) {
    const eol = body.indexOf('\r\n', at);
    if (eol < 0) return out;
    const size = Number.parseInt(body.slice(at, eol), 16);
    if (!(size > 0)) return out;
    out += body.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}

/** What goes over the wire: odd methods and request lines, invalid UTF-8 bodies, huge headers. */
export const wireRequest: fc.Arbitrary<Buffer> = fc.oneof(
  fc.record({ url: fc.constantFrom(...POSTS), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }).map(({ url, bytes }) => {
    const body = Buffer.concat([
      Buffer.from('{"prompt":"'),
      Buffer.from(bytes),
      Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1]),
      Buffer.from('","max_tokens":1}'),
    ]);
    return Buffer.concat([
      Buffer.from(`POST ${url} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`),
      body,
    ]);
  }),
  fc
    .record({
      method: fc.constantFrom('FOO', 'BREW', 'get', 'CONNECT', 'PROPFIND', 'M-SEARCH', 'PRI', 'G\u00c9T', ''),
      url: fc.constantFrom('/health', '/v1/completions', '*', '/%', 'http://x/health', ''),
    })
    .map(({ method, url }) => Buffer.from(`${method} ${url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 'latin1')),
  fc.constantFrom(
    Buffer.from('GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ' + 'a'.repeat(20_000) + '\r\nConnection: close\r\n\r\n'),
    Buffer.from('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n'),
    Buffer.from('POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\nzz\r\n'),
    Buffer.from('GET /v1/models/%E0%A4%A HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    Buffer.from('GET /health HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n'),
    Buffer.from('\x00\x01\x02\xff\r\n\r\n', 'latin1'),
    Buffer.from('GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nConnection: close\r\n\r\n'),
    Buffer.from(
      'POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 30\r\nConnection: close\r\n\r\n{"prompt":"\xff\xfe\xfd"}',
      'latin1',
    ),
  ),
);
