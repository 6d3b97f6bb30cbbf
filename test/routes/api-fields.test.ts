// The OpenAI fields real clients send, through the official `openai` SDK against the real
// server on the shipped model: logprobs (checked against log-softmax of the model's own logits,
// computed here independently), echo scoring (cold and warm prefix alike), n choices from one
// prefill, structured outputs (validated with ajv), logit_bias, token-id and batched prompts,
// and the fields kvserve refuses by name.
import t from 'tap';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { loadModel } from '../../src/runtime/load-model.js';
import { scrape } from '../helpers/metrics-text.js';
import { MODEL_DIR, runAll } from '../helpers/model.js';
import { startServer } from '../helpers/server.js';

const server = await startServer();
const reference = await loadModel(MODEL_DIR);
t.teardown(async () => {
  await server.close();
  await reference.decoder.close();
});
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
const model = server.engine.info.id;
const tok = reference.tokenizer;

/** log-softmax of one row, in float64. */
function logSoftmax(row: Float32Array): number[] {
  let m = -Infinity;
  for (const x of row) m = Math.max(m, x);
  let s = 0;
  for (const x of row) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  return Array.from(row, (x) => x - lse);
}

/** Each token's logprob after the first, from one independent forward pass over all of them. */
async function referenceLogprobs(ids: number[]): Promise<number[]> {
  const { rows } = await runAll(reference.decoder, ids);
  return ids.slice(1).map((id, i) => logSoftmax(rows[i]!)[id]!);
}

type Legacy = { tokens: string[]; token_logprobs: (number | null)[]; top_logprobs: (Record<string, number> | null)[]; text_offset: number[] };

t.test('scoring (echo, logprobs, max_tokens 0) equals log-softmax of the logits, cold and with the prefix cached', async (t) => {
  const prompt = 'KING RICHARD III:\nNow is the winter of our discontent\nMade glorious summer by this sun of York;\n';
  const ids = tok.encode(prompt);
  const expected = await referenceLogprobs(ids);
  const score = async () => {
    const res = await client.completions.create({ model, prompt, echo: true, logprobs: 2, max_tokens: 0, temperature: 0 });
    t.equal(res.choices.length, 1);
    t.equal(res.choices[0]!.text, prompt, 'the prompt is echoed');
    t.equal(res.usage?.completion_tokens, 0);
    return res.choices[0]!.logprobs as unknown as Legacy;
  };
  const cold = await score();
  t.equal(cold.tokens.length, ids.length);
  t.equal(cold.token_logprobs[0], null, "the first token's logprob is null");
  t.equal(cold.top_logprobs[0], null);
  let worst = 0;
  for (const [i, e] of expected.entries()) worst = Math.max(worst, Math.abs(cold.token_logprobs[i + 1]! - e));
  t.ok(worst < 1e-4, `every position within 1e-4 of the reference (worst ${worst})`);
  t.same(cold.text_offset.slice(0, 3), [0, 1, 2], 'text offsets of byte tokens');
  // A generation over the same prompt leaves its blocks in the prefix cache.
  await client.completions.create({ model, prompt, max_tokens: 4, temperature: 0 });
  const warm = await score();
  t.same(warm.token_logprobs, cold.token_logprobs, 'a cached prefix changes no prompt logprob');
  t.same(warm.top_logprobs, cold.top_logprobs);
});

t.test('completions logprobs (legacy shape) of generated tokens, streamed and not', async (t) => {
  const prompt = 'ROMEO:\nBut soft, what light';
  const res = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, logprobs: 3, echo: false });
  const lp = res.choices[0]!.logprobs as unknown as Legacy;
  t.equal(lp.tokens.length, res.usage!.completion_tokens);
  t.equal(lp.tokens.join(''), res.choices[0]!.text);
  const ids = [...tok.encode(prompt), ...lp.tokens.map((s) => tok.encode(s)[0]!)];
  const expected = (await referenceLogprobs(ids)).slice(-lp.tokens.length);
  for (const [i, e] of expected.entries()) t.ok(Math.abs(lp.token_logprobs[i]! - e) < 1e-4, `token ${i}: ${lp.token_logprobs[i]} ≈ ${e}`);
  for (const top of lp.top_logprobs) t.ok(Object.keys(top!).length >= 3 && Object.keys(top!).length <= 4, '3 alternatives (+ the chosen token)');
  // Greedy: the chosen token is the most likely one.
  t.ok(lp.top_logprobs.every((top, i) => Math.max(...Object.values(top!)) === lp.token_logprobs[i]));

  const stream = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, logprobs: 3, stream: true });
  const tokens: string[] = [];
  const logprobs: (number | null)[] = [];
  for await (const chunk of stream) {
    const l = chunk.choices[0]?.logprobs as unknown as Legacy | null;
    if (l) {
      tokens.push(...l.tokens);
      logprobs.push(...l.token_logprobs);
    }
  }
  t.same(tokens, lp.tokens, 'streamed chunks carry the same tokens');
  // The second request starts from the first's cached prefix: the same figures up to float rounding.
  t.ok(
    logprobs.every((x, i) => Math.abs(x! - lp.token_logprobs[i]!) < 1e-4),
    'and their logprobs',
  );
});

t.test('chat logprobs: content[] of {token, logprob, bytes, top_logprobs}, streamed and not', async (t) => {
  const messages = [{ role: 'user' as const, content: 'Speak.' }];
  const res = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 5 });
  const content = res.choices[0]!.logprobs!.content!;
  t.equal(content.length, res.usage!.completion_tokens);
  for (const c of content) {
    t.equal(c.top_logprobs.length, 5);
    t.same(c.bytes, Array.from(Buffer.from(c.token)));
    t.ok(c.logprob <= 0);
  }
  t.equal(content.map((c) => c.token).join(''), res.choices[0]!.message.content);
  const streamed: string[] = [];
  for await (const chunk of await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, logprobs: true, stream: true })) {
    for (const c of chunk.choices[0]?.logprobs?.content ?? []) streamed.push(c.token);
  }
  t.same(
    streamed,
    content.map((c) => c.token),
  );
  const plain = await client.chat.completions.create({ model, messages, max_tokens: 4, temperature: 0 });
  t.equal(plain.choices[0]!.logprobs, null, 'no logprobs unless asked');
});

t.test('n choices: the prompt is computed once, seeded choices are reproducible and differ, usage counts all', async (t) => {
  const prompt = `${'To be, or not to be, that is the question: '.repeat(3)}\n`;
  const promptTokens = tok.encode(prompt).length;
  const computed = async () => (await scrape(server.url)).get('kvserve_kv_cache_computed_tokens_total') ?? 0;
  const before = await computed();
  const params = { model, prompt: `${prompt}${Date.now()}`, max_tokens: 16, temperature: 1, seed: 7, n: 4, ignore_eos: true } as const;
  const ptoks = tok.encode(params.prompt).length;
  const a = await client.completions.create(params);
  t.equal((await computed()) - before, ptoks, `computed tokens grew by the prompt once (${ptoks}), not ${4 * ptoks}`);
  t.equal(a.choices.length, 4);
  t.same(
    a.choices.map((c) => c.index),
    [0, 1, 2, 3],
  );
  t.equal(a.usage!.completion_tokens, 64, 'usage counts every choice');
  t.equal(a.usage!.prompt_tokens, ptoks, 'the prompt counts once');
  t.equal(new Set(a.choices.map((c) => c.text)).size, 4, 'seeded choices differ from each other');
  const b = await client.completions.create(params);
  t.same(
    b.choices.map((c) => c.text),
    a.choices.map((c) => c.text),
    'the same seed gives the same choices',
  );
  const streamed = ['', '', '', ''];
  const order: number[] = [];
  const finishes: number[] = [];
  for await (const chunk of await client.completions.create({ ...params, stream: true })) {
    for (const c of chunk.choices) {
      streamed[c.index] += c.text;
      order.push(c.index);
      if (c.finish_reason) finishes.push(c.index);
    }
  }
  t.same(
    streamed,
    a.choices.map((c) => c.text),
    'streamed choices, by index, are the same texts',
  );
  t.ok(
    order.slice(0, 8).some((i) => i !== order[0]),
    'choices interleave in the stream',
  );
  t.same(finishes.sort(), [0, 1, 2, 3], 'each choice finishes once');
  t.ok(promptTokens > 0);
  const chat = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hark' }], n: 3, max_tokens: 6, seed: 1 });
  t.equal(chat.choices.length, 3);
});

t.test('best_of returns the n choices with the highest mean logprob', async (t) => {
  const res = await client.completions.create({ model, prompt: 'HAMLET:\n', max_tokens: 8, best_of: 4, n: 2, seed: 3, logprobs: 0 });
  t.equal(res.choices.length, 2);
  const mean = (c: (typeof res.choices)[number]) => {
    const l = (c.logprobs as unknown as Legacy).token_logprobs as number[];
    return l.reduce((s, x) => s + x, 0) / l.length;
  };
  t.ok(mean(res.choices[0]!) >= mean(res.choices[1]!), 'best first');
  const err = await client.completions.create({ model, prompt: 'x', best_of: 1, n: 2 }).catch((e: unknown) => e);
  t.match(err, { status: 400, param: 'best_of' });
});

t.test('structured outputs: every output parses and validates, across seeds and temperatures', async (t) => {
  const schema = {
    type: 'object',
    properties: {
      name: { type: 'string' },
      age: { type: 'integer' },
      mood: { enum: ['merry', 'sad'] },
      lines: { type: 'array', items: { type: 'string' }, maxItems: 3 },
      stage: { type: 'object', properties: { act: { type: 'number' } }, required: ['act'], additionalProperties: false },
    },
    required: ['name', 'age', 'mood', 'lines', 'stage'],
    additionalProperties: false,
  };
  const validate = new Ajv().compile(schema);
  for (const temperature of [0, 0.7, 1.3]) {
    for (const seed of [1, 2, 3]) {
      const res = await client.chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'Who goes there?' }],
        temperature,
        seed,
        max_tokens: 300,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema, strict: true } },
      });
      const text = res.choices[0]!.message.content!;
      let doc: unknown;
      t.doesNotThrow(() => (doc = JSON.parse(text)), `T=${temperature} seed=${seed}: parses`);
      t.ok(validate(doc), `T=${temperature} seed=${seed}: validates ${JSON.stringify(validate.errors)}`);
    }
  }
  const obj = await client.completions.create({ model, prompt: 'A letter:', max_tokens: 200, seed: 5, response_format: { type: 'json_object' } } as never);
  const parsed = JSON.parse((obj as unknown as OpenAI.Completion).choices[0]!.text) as unknown;
  t.equal(typeof parsed, 'object');
  t.notOk(Array.isArray(parsed));
  let text = '';
  for await (const chunk of await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'x' }],
    stream: true,
    max_tokens: 300,
    seed: 9,
    response_format: { type: 'json_schema', json_schema: { name: 'p', schema, strict: true } },
  })) {
    text += chunk.choices[0]?.delta.content ?? '';
  }
  t.ok(validate(JSON.parse(text)), 'streamed: validates');
  const err = await client.chat.completions
    .create({
      model,
      messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: { name: 'p', schema: { type: 'string', pattern: '^a+$' } } },
    })
    .catch((e: unknown) => e);
  t.match(err, { status: 400, param: 'response_format.json_schema.schema', message: /pattern/ });
});

t.test('logit_bias steers sampling; token-id and batched prompts; refused fields name themselves', async (t) => {
  const z = tok.encode('z')[0]!;
  const biased = await client.completions.create({ model, prompt: 'Hello', max_tokens: 6, seed: 1, logit_bias: { [z]: 100 } });
  t.equal(biased.choices[0]!.text, 'zzzzzz', '+100 makes the token certain');
  const greedy = await client.completions.create({ model, prompt: 'Hello', max_tokens: 1, temperature: 0 });
  const first = tok.encode(greedy.choices[0]!.text)[0]!;
  const banned = await client.completions.create({ model, prompt: 'Hello', max_tokens: 1, temperature: 0, logit_bias: { [first]: -100 } });
  t.not(banned.choices[0]!.text, greedy.choices[0]!.text, '-100 bans the greedy token');
  const err = await client.completions.create({ model, prompt: 'x', logit_bias: { 999999: 1 } }).catch((e: unknown) => e);
  t.match(err, { status: 400, param: 'logit_bias' });

  const ids = tok.encode('ROMEO:\n');
  const fromIds = await client.completions.create({ model, prompt: ids, max_tokens: 8, temperature: 0 });
  const fromText = await client.completions.create({ model, prompt: 'ROMEO:\n', max_tokens: 8, temperature: 0 });
  t.equal(fromIds.choices[0]!.text, fromText.choices[0]!.text, 'token ids and text give the same completion');
  const batch = await client.completions.create({ model, prompt: ['JULIET:\n', ids] as never, max_tokens: 5, temperature: 0, n: 2 });
  t.same(
    batch.choices.map((c) => c.index),
    [0, 1, 2, 3],
    'two prompts × n=2: four choices',
  );
  t.equal(batch.choices[2]!.text, fromText.choices[0]!.text.slice(0, batch.choices[2]!.text.length));
  const badId = await client.completions.create({ model, prompt: [1, 2, 99999] }).catch((e: unknown) => e);
  t.match(badId, { status: 400, param: 'prompt' });

  const refused = ['tools', 'tool_choice', 'functions', 'function_call', 'audio', 'prediction'];
  for (const field of refused) {
    const e = await client.chat.completions
      .create({ model, messages: [{ role: 'user', content: 'x' }], [field]: field === 'tool_choice' ? 'auto' : [{}] } as never)
      .catch((x: unknown) => x);
    t.match(e, { status: 400, param: field }, `${field}: 400 naming it`);
  }
  const image = await client.chat.completions
    .create({ model, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] })
    .catch((x: unknown) => x);
  t.match(image, { status: 400, param: /^messages\[0\]\.content/ });
  const unknownOk = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], max_tokens: 2, some_future_field: 1 } as never);
  t.ok(unknownOk, 'unknown fields stay ignored');
  const zero = await client.completions.create({ model, prompt: 'x', max_tokens: 0 }).catch((x: unknown) => x);
  t.match(zero, { status: 400, param: 'max_tokens' }, 'max_tokens 0 needs echo');
});

/** Every (method, path) the app serves, read off Fastify's own route tree (printRoutes), HEAD aside. */
function appRoutes(tree: string): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const m = /^(.*?)[├└]── (\S+) \(([^)]+)\)/.exec(line) ?? /^(.*?)[├└]── (\S+)$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    const path = (stack[depth - 1] ?? '') + m[2]!;
    stack[depth] = path;
    for (const method of (m[3] ?? '').split(', ').filter((x) => x && x !== 'HEAD')) out.push(`${method} ${path.replace(/:(\w+)/g, '{$1}')}`);
  }
  return out;
}

t.test('/openapi.json lists every route the app serves, sessions and models/{id} included', async (t) => {
  const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, { summary: string }>> };
  const served = appRoutes(server.app.printRoutes({ commonPrefix: false }));
  t.ok(served.length >= 13, `${served.length} routes found in the route table`);
  for (const route of served) {
    const [method, path] = route.split(' ') as [string, string];
    t.ok(doc.paths[path]?.[method.toLowerCase()], `${route} is documented`);
  }
  const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
  t.same(documented.sort(), [...served].sort(), 'and nothing else');
  for (const r of ['GET /v1/sessions', 'GET /v1/sessions/{id}', 'DELETE /v1/sessions/{id}', 'GET /v1/models/{id}']) t.ok(served.includes(r), `${r} served`);
  const completions = doc.paths['/v1/completions']!.post as unknown as {
    requestBody: { content: { 'application/json': { schema: { properties: Record<string, unknown> } } } };
  };
  for (const f of ['logprobs', 'echo', 'n', 'best_of', 'logit_bias', 'response_format'])
    t.ok(completions.requestBody.content['application/json'].schema.properties[f], `completions body documents ${f}`);
});
