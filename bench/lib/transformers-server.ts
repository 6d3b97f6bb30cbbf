// The baseline of bench/concurrency.ts: the shipped model served the way a Node user would
// serve it without kvserve — Transformers.js loads it from the local directory and
// `model.generate()` runs behind a plain node:http server. Transformers.js has no server and
// no batching, so requests run one at a time, first come first served; each token is streamed
// as soon as generate() hands it to the streamer, in OpenAI's completion-chunk shape.
//
// Only what the bench sends is served: POST /v1/completions with stream: true ({prompt,
// max_tokens, ignore_eos}; always greedy), and GET /health/ready. ignore_eos maps to
// min_new_tokens = max_new_tokens (the EOS logit is masked until then). A client that goes away
// is skipped if still queued, and stopped at the next step if running.
//
// The model: Transformers.js reads config.json, generation_config.json, tokenizer.json,
// tokenizer_config.json and onnx/model.onnx from the model directory, and feeds the graph's
// present.* back as the next past_key_values, so it needs present.* to hold the whole cache
// (Optimum's form). kvserve's own export emits only the new tokens' keys and values; then the
// server serves a copy, in a temporary directory, whose present.* are Concat(past, new) —
// same graph, same weights (bench/lib/onnx-present.ts). The shipped directory is never touched.
//
// Environment: PORT, HOST, MODEL_DIR (default models/tiny-shakespeare), TJS_THREADS
// (onnxruntime intra-op threads, default 1 — see below). Session options are kvserve's own
// (sessionOptions() from src/runtime/onnx-decoder.ts: sequential execution, all graph
// optimisations, idle threads sleep). kvserve opens two sessions — prefill on every core,
// one-token decode steps on one thread — while generate() has one session for both; we give
// it kvserve's decode-thread count, since decode steps are nearly all of its steps.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import {
  AutoModelForCausalLM,
  AutoTokenizer,
  InterruptableStoppingCriteria,
  type PreTrainedTokenizer,
  type Tensor,
  TextStreamer,
  env,
} from '@huggingface/transformers';
import { sessionOptions } from '../../src/runtime/onnx-decoder.js';
import { concatPresentOutputs, presentHoldsWholeCache } from './onnx-present.js';
import { ROOT } from './server.js';

const MODEL_DIR = resolve(ROOT, process.env.MODEL_DIR ?? 'models/tiny-shakespeare');
const THREADS = Number(process.env.TJS_THREADS ?? 1);
if (!Number.isInteger(THREADS) || THREADS < 1 || THREADS > availableParallelism() * 4)
  throw new Error(`TJS_THREADS=${process.env.TJS_THREADS} is not a thread count`);

/** The model directory Transformers.js can drive: MODEL_DIR itself, or a rewritten copy. */
async function optimumFormDir(): Promise<{ dir: string; temporary: boolean }> {
  const onnx = join(MODEL_DIR, 'onnx/model.onnx');
  if (await presentHoldsWholeCache(onnx)) return { dir: MODEL_DIR, temporary: false };
  const dir = join(mkdtempSync(join(tmpdir(), 'kvserve-bench-tjs-')), basename(MODEL_DIR));
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  for (const name of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) {
    if (existsSync(join(MODEL_DIR, name))) copyFileSync(join(MODEL_DIR, name), join(dir, name));
  }
  writeFileSync(join(dir, 'onnx/model.onnx'), concatPresentOutputs(readFileSync(onnx)));
  return { dir, temporary: true };
}

const served = await optimumFormDir();
const removeCopy = (): void => {
  if (served.temporary) rmSync(dirname(served.dir), { recursive: true, force: true });
};
process.once('exit', removeCopy);

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = dirname(served.dir);
const MODEL_ID = basename(served.dir);
const tokenizer = await AutoTokenizer.from_pretrained(MODEL_ID);
const model = await AutoModelForCausalLM.from_pretrained(MODEL_ID, {
  dtype: 'fp32',
  device: 'cpu',
  session_options: sessionOptions(THREADS),
});

const EOS_IDS = new Set([model.generation_config?.eos_token_id ?? []].flat().map((id) => BigInt(id)));

/**
 * Hands generate()'s tokens to `onText` one at a time. generate() calls put() once with the
 * prompt, then once per new token. Bytes of a multi-byte character wait for the rest (the
 * decoded text ends in U+FFFD until then). A TextStreamer (what generate()'s types ask for)
 * whose put() replaces its word-by-word buffering: kvserve streams every token, so must this.
 */
class TokenStreamer extends TextStreamer {
  #sawPrompt = false;
  #pending: bigint[] = [];
  tokens = 0;
  lastToken: bigint | undefined;

  constructor(
    tokenizer: PreTrainedTokenizer,
    readonly onText: (text: string) => void,
  ) {
    super(tokenizer, { skip_prompt: true });
  }

  override put(value: bigint[][]): void {
    if (!this.#sawPrompt) {
      this.#sawPrompt = true;
      return;
    }
    const token = value[0]![0]!;
    this.tokens++;
    this.lastToken = token;
    this.#pending.push(token);
    const text = this.tokenizer.decode(this.#pending, { skip_special_tokens: true });
    if (text.endsWith('\uFFFD') && this.#pending.length < 4) return;
    this.#pending = [];
    if (text) this.onText(text);
  }

  override end(): void {}
}

interface Job {
  prompt: string;
  maxTokens: number;
  ignoreEos: boolean;
  includeUsage: boolean;
  res: ServerResponse;
  gone: AbortSignal;
}

// A FIFO mutex: each generation starts when the previous one has ended.
let queueTail: Promise<void> = Promise.resolve();
function enqueue(job: Job): void {
  queueTail = queueTail
    .then(() => generate(job))
    .catch((err: unknown) => {
      process.stderr.write(`generation failed: ${String(err)}\n`);
    });
}

let nextId = 0;

async function generate(job: Job): Promise<void> {
  const { res } = job;
  if (job.gone.aborted) return;
  const id = `cmpl-tjs-${nextId++}`;
  const created = Math.floor(Date.now() / 1000);
  const send = (data: unknown): void => void res.write(`data: ${JSON.stringify(data)}\n\n`);
  const chunk = (text: string, finishReason: string | null): unknown => ({
    id,
    object: 'text_completion',
    created,
    model: MODEL_ID,
    choices: [{ index: 0, text, finish_reason: finishReason, logprobs: null }],
    usage: null,
  });

  const inputs = tokenizer(job.prompt, { add_special_tokens: false }) as { input_ids: Tensor; attention_mask: Tensor };
  const promptTokens = inputs.input_ids.dims.at(-1)!;
  const streamer = new TokenStreamer(tokenizer, (text) => send(chunk(text, null)));
  const interrupt = new InterruptableStoppingCriteria();
  const onGone = (): void => interrupt.interrupt();
  job.gone.addEventListener('abort', onGone);
  try {
    await model.generate({
      ...inputs,
      max_new_tokens: job.maxTokens,
      ...(job.ignoreEos ? { min_new_tokens: job.maxTokens } : {}),
      do_sample: false,
      streamer,
      stopping_criteria: [interrupt],
    });
  } catch (err) {
    send({ error: { message: 'generation failed', type: 'server_error', param: null, code: 'internal_error' } });
    res.end('data: [DONE]\n\n');
    throw err;
  } finally {
    job.gone.removeEventListener('abort', onGone);
  }
  if (job.gone.aborted) return;
  const eos = streamer.lastToken !== undefined && EOS_IDS.has(streamer.lastToken);
  send(chunk('', eos ? 'stop' : 'length'));
  if (job.includeUsage) {
    send({
      id,
      object: 'text_completion',
      created,
      model: MODEL_ID,
      choices: [],
      usage: {
        prompt_tokens: promptTokens,
        completion_tokens: streamer.tokens,
        total_tokens: promptTokens + streamer.tokens,
        prompt_tokens_details: { cached_tokens: 0 },
      },
    });
  }
  res.end('data: [DONE]\n\n');
}

function fail(res: ServerResponse, status: number, message: string, param: string | null = null): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { message, type: 'invalid_request_error', param, code: null } }));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  let body = '';
  for await (const chunk of req) body += String(chunk);
  return JSON.parse(body);
}

async function completions(req: IncomingMessage, res: ServerResponse): Promise<void> {
  let body: Record<string, unknown>;
  try {
    body = (await readJson(req)) as Record<string, unknown>;
  } catch {
    return fail(res, 400, 'body is not JSON');
  }
  const { prompt, max_tokens: maxTokens = 16, stream, ignore_eos: ignoreEos = false, stream_options: streamOptions } = body;
  if (typeof prompt !== 'string' || prompt === '') return fail(res, 400, 'prompt must be a non-empty string', 'prompt');
  if (!Number.isInteger(maxTokens) || (maxTokens as number) < 1) return fail(res, 400, 'max_tokens must be a positive integer', 'max_tokens');
  if (stream !== true) return fail(res, 400, 'this baseline serves only stream: true', 'stream');
  const gone = new AbortController();
  res.once('close', () => gone.abort());
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
  res.flushHeaders();
  enqueue({
    prompt,
    maxTokens: maxTokens as number,
    ignoreEos: ignoreEos === true,
    includeUsage: (streamOptions as { include_usage?: unknown } | undefined)?.include_usage === true,
    res,
    gone: gone.signal,
  });
}

const server = createServer((req, res) => {
  if (req.method === 'GET' && (req.url === '/health' || req.url === '/health/ready')) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
  } else if (req.method === 'POST' && req.url === '/v1/completions') {
    completions(req, res).catch((err: unknown) => {
      process.stderr.write(`request failed: ${String(err)}\n`);
      if (!res.headersSent) fail(res, 500, 'internal error');
      else res.end();
    });
  } else {
    fail(res, 404, `no route ${req.method} ${req.url}`);
  }
});
server.listen(Number(process.env.PORT ?? 8081), process.env.HOST ?? '127.0.0.1');
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
