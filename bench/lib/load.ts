// The load generator of bench/concurrency.ts, run as its own process (bench/lib/load-runner.ts
// starts it): reads LoadParams as JSON on stdin, drives `clients` concurrent streaming clients
// over node:http (bench/lib/http-stream.ts: lean, since on 2 cores its CPU is taken from the
// server it measures; every result reports that share as `load_cpu`), prints one LoadResult
// as JSON on stdout.
//
//   client 1: ─[req]─[req]───[req]─[req]──[req]─┤
//   client N: ──[req]──[req]─[req]──[req]─[req]──┴──[req]┤
//   |── warm-up ──────────|── measured window ──|── drain ──|
//    ≥ warmupMs and until   windowMs             no new requests; the running ones finish
//    every client finished                       (aborted after drainTimeoutMs)
//    one request
//
// Every request: POST /v1/completions, stream with the usage chunk, greedy, EOS ignored. We
// record the send time, the arrival time of every SSE event carrying text, and the usage.
//  - tokens/s: the completion tokens whose text arrived inside the window (each request's
//    usage.completion_tokens spread evenly over its text chunks — one chunk per token for the
//    byte-level model on ASCII text; mismatches are counted) ÷ the window's length. Counting
//    arrivals, not whole requests, keeps a request straddling an edge from counting in full.
//  - TTFT: requests SENT inside the window, send → first text chunk. The drain lets every one
//    of them finish, so a long queue (a one-at-a-time server at 32 clients) is measured, not
//    cut off.
//  - ITL: gaps between successive text chunks of one stream whose later chunk arrived inside
//    the window (during the drain the load falls off, so later gaps would flatter).
import { postStream } from './http-stream.js';
import { percentile } from './stats.js';
import type { LoadParams, LoadResult, Percentiles } from './load-runner.js';

interface RequestRecord {
  sentAt: number;
  /** performance.now() at each SSE event carrying non-empty text. */
  chunkAt: number[];
  completionTokens: number;
  promptTokens: number;
  cachedTokens: number;
  error: string | undefined;
  aborted: boolean;
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number } | null;
}

async function readStdin(): Promise<string> {
  let s = '';
  for await (const chunk of process.stdin) s += String(chunk);
  return s;
}

const params = JSON.parse(await readStdin()) as LoadParams;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One streamed completion, timed chunk by chunk. Never throws: failures are recorded. */
async function send(prompt: string, signal: AbortSignal): Promise<RequestRecord> {
  const record: RequestRecord = {
    sentAt: performance.now(),
    chunkAt: [],
    completionTokens: 0,
    promptTokens: 0,
    cachedTokens: 0,
    error: undefined,
    aborted: false,
  };
  try {
    const body = {
      prompt,
      max_tokens: params.maxTokens,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    };
    let usage: Usage | undefined;
    await postStream(
      `${params.url}/v1/completions`,
      body,
      (chunks, at) => {
        for (const chunk of chunks) {
          if (chunk.choices?.[0]?.text) record.chunkAt.push(at);
          if (chunk.usage) usage = chunk.usage;
        }
      },
      signal,
    );
    if (!usage) throw new Error('stream ended without a usage chunk');
    if (record.chunkAt.length === 0) throw new Error('stream carried no text');
    record.completionTokens = usage.completion_tokens;
    record.promptTokens = usage.prompt_tokens;
    record.cachedTokens = usage.prompt_tokens_details?.cached_tokens ?? 0;
  } catch (err) {
    record.aborted = signal.aborted;
    record.error = (err as Error).message;
  }
  return record;
}

const abort = new AbortController();
const records: RequestRecord[] = [];
const finishedPerClient = new Array<number>(params.clients).fill(0);
let nextPrompt = 0;
let stopSending = false;
let onFinish: () => void = () => {};

async function client(c: number): Promise<void> {
  while (!stopSending) {
    const prompt = params.prompts[nextPrompt++ % params.prompts.length]!;
    const record = await send(prompt, abort.signal);
    records.push(record);
    finishedPerClient[c]!++;
    onFinish();
    if (record.error !== undefined && !record.aborted) await sleep(50); // don't spin on a failing server
  }
}

const start = performance.now();
const clients = Array.from({ length: params.clients }, (_, c) => client(c));

// Warm-up: at least warmupMs, and every client through one request (the server's queue is then full).
await sleep(params.warmupMs);
while (finishedPerClient.some((n) => n === 0)) {
  if (performance.now() - start > params.warmupTimeoutMs) {
    abort.abort();
    throw new Error(`warm-up: not every client finished a request within ${params.warmupTimeoutMs} ms`);
  }
  await Promise.race([new Promise<void>((r) => (onFinish = r)), sleep(100)]);
}
const t0 = performance.now();
const cpu0 = process.cpuUsage();
await sleep(params.windowMs);
const t1 = performance.now();
const cpu = process.cpuUsage(cpu0);
stopSending = true;

// Drain: the requests sent inside the window finish (their TTFT is measured in full).
const drainTimer = setTimeout(() => abort.abort(), params.drainTimeoutMs);
await Promise.all(clients);
clearTimeout(drainTimer);
const drainEnd = performance.now();

const inWindow = (t: number): boolean => t >= t0 && t < t1;
let windowTokens = 0;
let mismatches = 0;
const ttft: number[] = [];
const itl: number[] = [];
const errors: string[] = [];
let failed = 0;
let abortedCount = 0;
let promptTokens = 0;
let cachedTokens = 0;
for (const r of records) {
  if (r.error !== undefined) {
    if (r.aborted) abortedCount++;
    else {
      failed++;
      if (errors.length < 5) errors.push(r.error);
    }
    continue;
  }
  promptTokens += r.promptTokens;
  cachedTokens += r.cachedTokens;
  const n = r.chunkAt.length;
  if (n !== r.completionTokens) mismatches++;
  windowTokens += (r.completionTokens * r.chunkAt.filter(inWindow).length) / n;
  if (inWindow(r.sentAt)) ttft.push(r.chunkAt[0]! - r.sentAt);
  for (let i = 1; i < n; i++) if (inWindow(r.chunkAt[i]!)) itl.push(r.chunkAt[i]! - r.chunkAt[i - 1]!);
}

const summary = (values: number[]): Percentiles =>
  values.length === 0 ? { p50: NaN, p99: NaN, n: 0 } : { p50: percentile(values, 50), p99: percentile(values, 99), n: values.length };

const result: LoadResult = {
  clients: params.clients,
  warmup_ms: t0 - start,
  window_ms: t1 - t0,
  drain_ms: drainEnd - t1,
  window_tokens: windowTokens,
  tokens_per_s: (windowTokens / (t1 - t0)) * 1000,
  load_cpu: (cpu.user + cpu.system) / 1000 / (t1 - t0),
  ttft_ms: summary(ttft),
  itl_ms: summary(itl),
  requests: {
    warmup: records.filter((r) => r.sentAt < t0).length,
    sent_in_window: records.filter((r) => inWindow(r.sentAt)).length,
    finished_in_window: records.filter((r) => r.error === undefined && inWindow(r.chunkAt.at(-1)!)).length,
    total: records.length,
    failed,
    aborted_at_drain_timeout: abortedCount,
  },
  prompt_tokens: promptTokens,
  cached_prompt_tokens: cachedTokens,
  chunk_token_mismatches: mismatches,
  prompts_wrapped: nextPrompt > params.prompts.length,
  errors,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
