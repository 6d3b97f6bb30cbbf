// A client that goes away stops its generation: the request's log line says finishReason 'abort'
// with far fewer than max_tokens tokens, no generation stays running, and the server serves on.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { once } from 'node:events';
import t, { type Test } from 'tap';
import { waitFor } from '../helpers/poll.js';
import { startServer } from '../helpers/server.js';
import { scrape } from '../helpers/metrics-text.js';
import { readSse } from '../helpers/sse.js';

const logs: Array<Record<string, unknown>> = [];
const server = await startServer({ onLog: (line) => logs.push(line) });
t.teardown(() => server.close());

const MAX_TOKENS = 2000;
const body = (extra: Record<string, unknown>) => JSON.stringify({ prompt: 'ROMEO:\n', max_tokens: MAX_TOKENS, ignore_eos: true, ...extra });

/** Starts a POST /v1/completions on its own connection, tagged with a request id the log line will carry. */
function post(payload: string): { req: http.ClientRequest; reqId: string } {
  const reqId = `disconnect-${randomUUID()}`;
  const req = http.request(`${server.url}/v1/completions`, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'x-request-id': reqId },
  });
  req.end(payload);
  return { req, reqId };
}

const requestLog = (reqId: string) =>
  waitFor(`the 'request' log line of ${reqId}`, () => logs.find((l) => l.msg === 'request' && l.reqId === reqId), { timeoutMs: 10_000 });

/** The request's log line shows the engine stopped it early, and nothing is left running. */
async function expectStopped(t: Test, reqId: string): Promise<void> {
  const line = await requestLog(reqId);
  t.equal(line.route, '/v1/completions');
  t.equal(line.finishReason, 'abort', 'the generation ended because of the client');
  t.type(line.completionTokens, 'number');
  t.ok((line.completionTokens as number) < MAX_TOKENS / 2, `far fewer than ${MAX_TOKENS} tokens (${String(line.completionTokens)})`);
  t.equal(line.status, 499, 'logged as client closed request');
  // The HTTP side lets go of the request; then the engine must have released it too.
  await waitFor('the HTTP side to drop the generation', () => server.app.services.running === 0);
  const m = await waitFor('the engine to release the request', async () => {
    const now = await scrape(server.url);
    return now.get('kvserve_requests_running') === 0 ? now : undefined;
  });
  t.equal(m.get('kvserve_kv_cache_pinned_entries'), 0, 'no KV entry left pinned by the aborted request');
  t.equal(m.get('kvserve_kv_cache_entries{kind="active"}'), 0, 'no active reservation left in the pool');
}

t.test('a streaming client that aborts after 3 data events stops its generation', async (t) => {
  const { req, reqId } = post(body({ stream: true }));
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  t.equal(res.statusCode, 200);
  let runningMidStream = -1;
  const outcome = await readSse(res, (_data, index) => {
    if (index !== 2) return;
    runningMidStream = server.app.services.running;
    req.destroy();
  });
  t.equal(runningMidStream, 1, 'the generation was running when the client left');
  t.ok(outcome.events.length >= 3, 'received the 3 events');
  t.notOk(outcome.events.includes('[DONE]'), 'the stream never completed');

  await expectStopped(t, reqId);
});

t.test('a non-streaming client that aborts before any response stops its generation', async (t) => {
  const { req, reqId } = post(body({}));
  let responded = false;
  req.on('response', () => (responded = true));
  const failed = once(req, 'error').catch(() => undefined);
  // Leave once the generation is under way (it needs far longer than this to reach 2000 tokens).
  await waitFor('the generation to start', () => server.app.services.running === 1);
  req.destroy();
  await failed;
  t.notOk(responded, 'no response was received');

  await expectStopped(t, reqId);
});

t.test('after the disconnects the server serves normally (and logs them)', async (t) => {
  const { req, reqId } = post(JSON.stringify({ prompt: 'ROMEO:\n', max_tokens: 5, ignore_eos: true }));
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  t.equal(res.statusCode, 200);
  let text = '';
  for await (const chunk of res) text += String(chunk);
  const json = JSON.parse(text) as { choices: Array<{ finish_reason: string }>; usage: { completion_tokens: number } };
  t.equal(json.choices[0]?.finish_reason, 'length');
  t.equal(json.usage.completion_tokens, 5);
  const line = await requestLog(reqId);
  t.equal(line.finishReason, 'length');
  t.equal(line.completionTokens, 5);
  t.equal(line.status, 200);

  const stream = post(JSON.stringify({ prompt: 'ROMEO:\n', max_tokens: 5, ignore_eos: true, stream: true }));
  const [sres] = (await once(stream.req, 'response')) as [http.IncomingMessage];
  const outcome = await readSse(sres);
  t.equal(outcome.error, undefined);
  t.equal(outcome.events.at(-1), '[DONE]', 'a later stream completes');
  t.equal(server.app.services.running, 0);
});
