// The SSE wire format of both generation routes over real HTTP: headers, chunk shapes, exactly one
// finish chunk, the usage chunk, `[DONE]` last, `: ping` before the first token, stream == JSON.
import t, { type Test } from 'tap';
import { startServer } from '../helpers/server.js';
import { payloads, post, postSse, type SseResult } from '../helpers/sse.js';

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}
interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: Array<{ index: number; text?: string; delta?: { role?: string; content?: string }; finish_reason: string | null }>;
  usage?: Usage | null;
}

const server = await startServer();
t.teardown(() => server.close());
const completions = `${server.url}/v1/completions`;
const chat = `${server.url}/v1/chat/completions`;

/** Checks what every stream shares; returns the parsed chunks (everything before `[DONE]`). */
function checkStream(t: Test, res: SseResult & { status: number; headers: Headers }, object: string, idPrefix: string): Chunk[] {
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/event-stream/);
  t.equal(res.headers.get('cache-control'), 'no-cache');
  t.equal(res.headers.get('x-accel-buffering'), 'no');
  t.ok(res.headers.get('x-request-id'), 'x-request-id header');
  t.same(res.parseErrors, [], 'the body parses as SSE');

  const data = res.items.filter((i) => i.kind === 'data');
  t.ok(data.length >= 2, 'at least one chunk and [DONE]');
  t.equal(data.at(-1)?.data, '[DONE]', '[DONE] is the last event');
  t.ok(res.raw.endsWith('data: [DONE]\n\n'), 'nothing follows [DONE]');
  t.ok(
    data.every((d) => d.event === undefined),
    'no named events',
  );
  const firstData = res.items.findIndex((i) => i.kind === 'data');
  t.notOk(
    res.items.slice(firstData).some((i) => i.kind === 'comment'),
    'no heartbeat after the first event',
  );

  const chunks: Chunk[] = [];
  for (const d of data.slice(0, -1)) {
    try {
      chunks.push(JSON.parse(d.data) as Chunk);
    } catch {
      t.fail(`not JSON: ${d.data}`);
    }
  }
  const [first] = chunks;
  t.match(first?.id, new RegExp(`^${idPrefix}-\\w+$`));
  const distinct = (f: (c: Chunk) => unknown) => [...new Set(chunks.map(f))];
  t.same(
    distinct((c) => c.object),
    [object],
    `every chunk is a ${object}`,
  );
  t.same(
    distinct((c) => c.id),
    [first?.id],
    'one id for the whole stream',
  );
  t.same(
    distinct((c) => c.created),
    [first?.created],
    'one created time',
  );
  t.same(
    distinct((c) => c.model),
    [server.engine.info.id],
    'the served model',
  );

  // Exactly one chunk finishes, and it is the last one with a choice.
  const withChoices = chunks.filter((c) => c.choices.length > 0);
  const finishing = chunks.filter((c) => c.choices.some((ch) => ch.finish_reason !== null));
  t.equal(finishing.length, 1, 'exactly one chunk carries a finish_reason');
  t.equal(finishing[0], withChoices.at(-1), 'the finishing chunk is the last content chunk');
  return chunks;
}

const textOf = (chunks: Chunk[]) => chunks.map((c) => c.choices[0]?.text ?? '').join('');
const contentOf = (chunks: Chunk[]) => chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');

t.test('completion stream with usage: chunks, finish, usage chunk, [DONE]; same text as JSON', async (t) => {
  const prompt = 'ROMEO:\nBut soft, what light';
  const request = { prompt, max_tokens: 24, temperature: 0, ignore_eos: true };
  const res = await postSse(completions, { ...request, stream: true, stream_options: { include_usage: true } });
  const chunks = checkStream(t, res, 'text_completion', 'cmpl');

  const usageChunk = chunks.at(-1)!;
  t.same(usageChunk.choices, [], 'the usage chunk has no choices');
  t.match(usageChunk.usage, { prompt_tokens: Buffer.byteLength(prompt), completion_tokens: 24 });
  const u = usageChunk.usage!;
  t.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  t.ok(
    chunks.slice(0, -1).every((c) => c.usage === null),
    'chunks before the usage chunk carry usage: null',
  );

  const finish = chunks.at(-2)!;
  t.equal(finish.choices[0]?.finish_reason, 'length');
  t.ok(
    chunks.slice(0, -1).every((c) => c.choices.length === 1 && c.choices[0]?.index === 0),
    'one choice, index 0',
  );

  const json = (await (await post(completions, request)).json()) as { choices: [{ text: string; finish_reason: string }]; usage: Usage };
  t.equal(textOf(chunks), json.choices[0].text, 'concatenated deltas == non-streamed text');
  t.equal(json.choices[0].finish_reason, 'length');
  t.same(json.usage.completion_tokens, u.completion_tokens);
});

t.test('without include_usage no chunk has a usage field and the finish chunk is last', async (t) => {
  const res = await postSse(completions, { prompt: 'KING:\n', max_tokens: 5, temperature: 0, stream: true });
  const chunks = checkStream(t, res, 'text_completion', 'cmpl');
  t.notOk(
    chunks.some((c) => 'usage' in c),
    'no usage key',
  );
  t.not(chunks.at(-1)?.choices[0]?.finish_reason ?? null, null, 'the last chunk finishes');
  t.same(payloads(res), chunks);
});

t.test('chat stream: chat.completion.chunk, role in the first delta only, same content as JSON', async (t) => {
  const request = { messages: [{ role: 'user', content: 'Speak, friend.' }], max_tokens: 20, temperature: 0, ignore_eos: true };
  const res = await postSse(chat, { ...request, stream: true, stream_options: { include_usage: true } });
  const chunks = checkStream(t, res, 'chat.completion.chunk', 'chatcmpl');

  t.equal(chunks[0]?.choices[0]?.delta?.role, 'assistant', 'first delta names the role');
  t.notOk(
    chunks.slice(1).some((c) => c.choices[0]?.delta?.role !== undefined),
    'later deltas do not',
  );
  const finish = chunks.at(-2)!;
  t.equal(finish.choices[0]?.finish_reason, 'length');
  t.same(finish.choices[0]?.delta, {}, 'the finish chunk has an empty delta');
  const usage = chunks.at(-1)!;
  t.same(usage.choices, []);
  t.equal(usage.usage?.completion_tokens, 20);
  t.equal(usage.usage?.total_tokens, usage.usage!.prompt_tokens + usage.usage!.completion_tokens);

  const json = (await (await post(chat, request)).json()) as { choices: [{ message: { content: string } }]; usage: Usage };
  t.equal(contentOf(chunks), json.choices[0].message.content, 'concatenated deltas == non-streamed content');
  t.equal(json.usage.prompt_tokens, usage.usage?.prompt_tokens);
});

t.test('seeded sampling streams exactly the text the JSON answer has (any bytes, incl. invalid UTF-8)', async (t) => {
  const request = { prompt: 'To be, or not', max_tokens: 64, temperature: 1.5, seed: 7, ignore_eos: true };
  const chunks = checkStream(t, await postSse(completions, { ...request, stream: true }), 'text_completion', 'cmpl');
  const json = (await (await post(completions, request)).json()) as { choices: [{ text: string }] };
  t.equal(textOf(chunks), json.choices[0].text);
});

t.test('a request rejected before generation answers JSON, not an event stream', async (t) => {
  const res = await post(completions, { prompt: 'x', temperature: 3, stream: true });
  t.equal(res.status, 400);
  t.match(res.headers.get('content-type'), /^application\/json/);
  t.match(await res.json(), { error: { param: 'temperature', type: 'invalid_request_error' } });
});

t.test('heartbeat comments arrive while the prompt is prefilled, before the first data event', async (t) => {
  const hb = await startServer({ env: { SSE_HEARTBEAT_MS: '1' } });
  t.teardown(() => hb.close());
  // 2000 tokens no earlier request shares (no prefix-cache hit): prefill takes long enough that
  // the stream is open (after its brief wait for early refusals) well before the first token.
  const line = `${Date.now()} Now is the winter of our discontent made glorious summer by this sun of York. `;
  const prompt = line.repeat(Math.ceil(2000 / line.length)).slice(0, 2000);
  const res = await postSse(`${hb.url}/v1/completions`, { prompt, max_tokens: 2, temperature: 0, ignore_eos: true, stream: true });
  checkStream(t, res, 'text_completion', 'cmpl');
  const firstData = res.items.findIndex((i) => i.kind === 'data');
  const pings = res.items.slice(0, firstData);
  t.ok(pings.length >= 1, `${pings.length} heartbeat(s) before the first token`);
  t.ok(
    pings.every((p) => p.kind === 'comment' && p.text.trim() === 'ping'),
    'they are all "ping" comments',
  );
  t.ok(res.raw.startsWith(': ping\n\n'), 'the wire starts with a ": ping" comment');
});
