// bench:peer's other server: llama.cpp (node-llama-cpp's prebuilt CPU build) on the GGUF of the
// same weights, behind a plain node:http server speaking the subset of OpenAI's completions API
// the benches send. Batching and prefix reuse are node-llama-cpp's own: one context with
// SEQUENCES sequences, whose pending tokens it evaluates together in one batch per event-loop
// cycle; each request gets a free sequence (bench/lib/llama-cpp-slots.ts), which keeps its
// evaluated tokens afterwards, and a new prompt skips the prefix it shares with them
// (adaptStateToTokens erases only the cells after the first difference). `session_id` pins a
// sequence to a session between requests.
//
// Served: GET /health/ready; POST /v1/completions ({prompt (text), max_tokens, stream,
// stream_options.include_usage, ignore_eos, session_id}; always greedy); DELETE
// /v1/sessions/:id. Usage reports prompt_tokens_details.cached_tokens: the prompt tokens whose
// cells were reused. ignore_eos as kvserve and vLLM: an end-of-generation token is generated
// and evaluated like any other, and generation goes on.
//
// Environment: PORT, HOST, MODEL (the .gguf), THREADS (llama.cpp threads; default: its own, the
// machine's math cores), SEQUENCES (16, kvserve's MAX_RUNNING_SEQUENCES), CONTEXT_SIZE (tokens
// per sequence; default the model's training context), KV_TYPE (F32 or F16 cache; default F32),
// FLASH_ATTENTION (on, off or auto: llama.cpp's default).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { basename } from 'node:path';
import { getLlama, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { type Slot, SlotPool } from './llama-cpp-slots.js';

const env = process.env;
if (!env.MODEL) throw new Error('MODEL (a .gguf path) is required');
const int = (name: string): number | undefined => {
  if (env[name] === undefined || env[name] === '') return undefined;
  const n = Number(env[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}=${env[name]} is not a positive integer`);
  return n;
};
const kvType = env.KV_TYPE ?? 'F32';
if (kvType !== 'F32' && kvType !== 'F16') throw new Error(`KV_TYPE=${kvType}: expected F32 or F16`);

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.warn });
const model = await llama.loadModel({ modelPath: env.MODEL });
const threads = int('THREADS');
const fa = env.FLASH_ATTENTION ?? 'auto';
if (fa !== 'on' && fa !== 'off' && fa !== 'auto') throw new Error(`FLASH_ATTENTION=${fa}: expected on, off or auto`);
const context = await model.createContext({
  sequences: int('SEQUENCES') ?? 16,
  contextSize: int('CONTEXT_SIZE') ?? model.trainContextSize,
  experimentalKvCacheKeyType: kvType,
  experimentalKvCacheValueType: kvType,
  flashAttention: fa === 'auto' ? 'auto' : fa === 'on',
  ...(threads ? { threads } : {}),
});
const pool = new SlotPool(context);
const MODEL_ID = basename(env.MODEL);

interface Job {
  tokens: Token[];
  maxTokens: number;
  ignoreEos: boolean;
  session: string | undefined;
  /** Called with each piece of text as it is decoded. */
  onText: (text: string) => void;
  gone: AbortSignal;
}

interface Outcome {
  completionTokens: number;
  cachedTokens: number;
  finishReason: 'stop' | 'length';
}

async function generate(job: Job): Promise<Outcome> {
  const slot: Slot = await pool.acquire(job.tokens, job.session);
  try {
    const seq = slot.sequence;
    // Keep the cells of the longest common prefix, but evaluate at least the prompt's last token
    // (its logits give the first new token).
    await seq.adaptStateToTokens(job.tokens.slice(0, -1), false);
    const cachedTokens = seq.nextTokenIndex;
    let completionTokens = 0;
    let finishReason: Outcome['finishReason'] = 'length';
    let pending: Token[] = [];
    for await (const token of seq.evaluate(job.tokens.slice(cachedTokens), { temperature: 0, yieldEogToken: true })) {
      if (job.gone.aborted) break;
      completionTokens++;
      if (model.isEogToken(token) && !job.ignoreEos) {
        finishReason = 'stop';
        break;
      }
      // A multi-byte character's bytes wait for the rest (the decoded text ends in U+FFFD until then).
      pending.push(token);
      const text = model.detokenize(pending);
      if (!(text.endsWith('\uFFFD') && pending.length < 4)) {
        pending = [];
        if (text) job.onText(text);
      }
      if (completionTokens >= job.maxTokens) break;
    }
    return { completionTokens, cachedTokens, finishReason };
  } finally {
    pool.release(slot);
  }
}

let nextId = 0;

function fail(res: ServerResponse, status: number, message: string, param: string | null = null): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { message, type: 'invalid_request_error', param, code: null } }));
}

async function completions(req: IncomingMessage, res: ServerResponse): Promise<void> {
  let body: Record<string, unknown>;
  try {
    let raw = '';
    for await (const chunk of req) raw += String(chunk);
    body = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    return fail(res, 400, 'body is not JSON');
  }
  const { prompt, max_tokens: maxTokens = 16, stream = false, ignore_eos: ignoreEos = false, session_id: session } = body;
  if (typeof prompt !== 'string' || prompt === '') return fail(res, 400, 'prompt must be a non-empty string', 'prompt');
  if (!Number.isInteger(maxTokens) || (maxTokens as number) < 1) return fail(res, 400, 'max_tokens must be a positive integer', 'max_tokens');
  if (session !== undefined && typeof session !== 'string') return fail(res, 400, 'session_id must be a string', 'session_id');
  const tokens = model.tokenize(prompt, false);
  if (tokens.length + (maxTokens as number) > context.contextSize) {
    return fail(res, 400, `${tokens.length} prompt tokens + max_tokens exceed the ${context.contextSize}-token context`, 'max_tokens');
  }
  const includeUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
  const id = `cmpl-llamacpp-${nextId++}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, object: 'text_completion', created, model: MODEL_ID };
  const gone = new AbortController();
  res.once('close', () => gone.abort());
  const send = (data: unknown): void => void res.write(`data: ${JSON.stringify(data)}\n\n`);
  let text = '';
  if (stream === true) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    res.flushHeaders();
  }
  const onText = (piece: string): void => {
    if (stream === true) send({ ...base, choices: [{ index: 0, text: piece, finish_reason: null, logprobs: null }], usage: null });
    else text += piece;
  };
  const out = await generate({
    tokens,
    maxTokens: maxTokens as number,
    ignoreEos: ignoreEos === true,
    session: session as string | undefined,
    onText,
    gone: gone.signal,
  });
  if (gone.signal.aborted) return;
  const usage = {
    prompt_tokens: tokens.length,
    completion_tokens: out.completionTokens,
    total_tokens: tokens.length + out.completionTokens,
    prompt_tokens_details: { cached_tokens: out.cachedTokens },
  };
  if (stream !== true) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ...base, choices: [{ index: 0, text, finish_reason: out.finishReason, logprobs: null }], usage }));
    return;
  }
  send({ ...base, choices: [{ index: 0, text: '', finish_reason: out.finishReason, logprobs: null }], usage: null });
  if (includeUsage) send({ ...base, choices: [], usage });
  res.end('data: [DONE]\n\n');
}

const server = createServer((req, res) => {
  const session = req.method === 'DELETE' ? /^\/v1\/sessions\/([^/?]+)$/.exec(req.url ?? '') : null;
  if (req.method === 'GET' && (req.url === '/health' || req.url === '/health/ready')) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
  } else if (req.method === 'POST' && req.url === '/v1/completions') {
    completions(req, res).catch((err: unknown) => {
      process.stderr.write(`request failed: ${String(err)}\n`);
      if (!res.headersSent) fail(res, 500, 'internal error');
      else res.end();
    });
  } else if (session) {
    const found = pool.endSession(decodeURIComponent(session[1]!));
    res.writeHead(found ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ deleted: found }));
  } else {
    fail(res, 404, `no route ${req.method} ${req.url}`);
  }
});
server.listen(Number(env.PORT ?? 8082), env.HOST ?? '127.0.0.1');
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
