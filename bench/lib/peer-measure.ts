// bench:peer's measurements of one server over HTTP; each runs the same way against kvserve and
// against bench/lib/llama-cpp-server.ts. Requests are greedy with EOS ignored (exact token
// counts); the prompts' token counts are checked against usage (both vocabularies encode ASCII
// text one token per byte), and whether a prompt was served from cache against cached_tokens.
import { randomBytes, randomInt } from 'node:crypto';
import { type LoadResult, runLoadProcess } from './load-runner.js';
import { type ServerProcess, type StreamResult, complete, rssBytes, streamCompletion } from './server.js';
import { median } from './stats.js';

const WORDS = (
  'the and thou thee thy lord king queen love death night day sword crown heart blood ' +
  'speak hear good noble gentle sweet fair foul grave honour fortune heaven earth tongue'
).split(' ');

/** `n` characters of random words (ASCII: exactly n tokens for both servers). */
export function randomText(n: number): string {
  let s = '';
  while (s.length < n) s += `${WORDS[randomInt(WORDS.length)]!} `;
  return s.slice(0, n);
}

/** A fresh prompt of `n` tokens, random from its first character (no cached prefix can match it). */
export const freshPrompt = (n: number): string => `${randomBytes(4).toString('hex')} ${randomText(n - 9)}`;

const mb = (bytes: number | undefined): number => (bytes ?? NaN) / 2 ** 20;
export const rssMb = (server: ServerProcess): number => mb(rssBytes(server.pid));

function expectTokens(what: string, r: StreamResult, prompt: number, completion: number, cached?: 'none'): void {
  if (r.usage.prompt_tokens !== prompt) throw new Error(`${what}: ${r.usage.prompt_tokens} prompt tokens, expected ${prompt}`);
  if (r.usage.completion_tokens !== completion) throw new Error(`${what}: ${r.usage.completion_tokens} completion tokens, expected ${completion}`);
  // A random prompt may share its first character or two with an earlier one, which llama.cpp
  // reuses; kvserve's prefix cache works in 16-token blocks.
  if (cached === 'none' && r.usage.prompt_tokens_details.cached_tokens >= 16) {
    throw new Error(`${what}: ${r.usage.prompt_tokens_details.cached_tokens} prompt tokens came from a cache`);
  }
}

/** One stream of `tokens` tokens after a short prompt: decode tokens/s from the first token to the last. */
export async function singleStream(url: string, prompt: string, tokens: number): Promise<{ tokens_per_s: number; ttft_ms: number }> {
  const r = await streamCompletion(url, { prompt, max_tokens: tokens });
  if (r.usage.completion_tokens !== tokens) throw new Error(`single stream: ${r.usage.completion_tokens} tokens, expected ${tokens}`);
  return { tokens_per_s: ((tokens - 1) / (r.totalMs - r.ttftMs)) * 1000, ttft_ms: r.ttftMs };
}

/** Time to first token of a fresh `n`-token prompt (nothing cached), median of `reps`. */
export async function coldTtft(url: string, n: number, reps: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const r = await streamCompletion(url, { prompt: freshPrompt(n), max_tokens: 4 });
    expectTokens(`TTFT ${n}`, r, n, 4, 'none');
    times.push(r.ttftMs);
  }
  return median(times);
}

/** A 1,024-token prefix sent twice with different 16-token suffixes: [cold TTFT, warm TTFT, cached tokens of the warm one]. */
export async function prefixPair(url: string): Promise<{ cold_ms: number; warm_ms: number; warm_cached: number }> {
  const prefix = freshPrompt(1024);
  const a = randomText(16);
  let b = randomText(16);
  while (b === a) b = randomText(16);
  const cold = await streamCompletion(url, { prompt: prefix + a, max_tokens: 4 });
  const warm = await streamCompletion(url, { prompt: prefix + b, max_tokens: 4 });
  expectTokens('prefix cold', cold, 1040, 4, 'none');
  expectTokens('prefix warm', warm, 1040, 4);
  const cached = warm.usage.prompt_tokens_details.cached_tokens;
  if (cached < 1008) throw new Error(`prefix warm: only ${cached} of 1,024 prefix tokens reused`);
  return { cold_ms: cold.ttftMs, warm_ms: warm.ttftMs, warm_cached: cached };
}

export interface ChatRun {
  seconds: number;
  prompt_tokens: number;
  /** Σ prompt_tokens − cached_tokens: what the server computed. */
  prefilled_tokens: number;
}

/**
 * A `turns`-turn chat with a session_id, as bench:prefix runs it: the transcript is the prompt,
 * each turn appends the reply (32 tokens) and a 40-token user line.
 */
export async function chat(url: string, turns: number): Promise<ChatRun> {
  const session = `bench-peer-${randomBytes(8).toString('hex')}`;
  let prompt = `${randomBytes(4).toString('hex')}\nUSER: ${randomText(28)}\nBOT:`;
  const run: ChatRun = { seconds: 0, prompt_tokens: 0, prefilled_tokens: 0 };
  const start = performance.now();
  for (let turn = 0; turn < turns; turn++) {
    const r = await complete(url, { prompt, max_tokens: 32, session_id: session });
    if (r.status !== 200 || !r.usage) throw new Error(`chat turn ${turn + 1}: HTTP ${r.status} (${r.errorCode})`);
    run.prompt_tokens += r.usage.prompt_tokens;
    run.prefilled_tokens += r.usage.prompt_tokens - r.usage.prompt_tokens_details.cached_tokens;
    prompt += `${r.text}\nUSER: ${randomText(28)}\nBOT:`;
  }
  run.seconds = (performance.now() - start) / 1000;
  await (await fetch(`${url}/v1/sessions/${session}`, { method: 'DELETE' })).arrayBuffer();
  return run;
}

/** RSS after `count` sessions of a fresh `tokens`-token prompt each are held; the sessions are deleted afterwards. */
export async function sessionsRss(server: ServerProcess, count: number, tokens: number): Promise<number> {
  const ids = Array.from({ length: count }, (_, i) => `bench-peer-mem-${i}-${randomBytes(4).toString('hex')}`);
  for (const id of ids) {
    const r = await complete(server.url, { prompt: freshPrompt(tokens), max_tokens: 1, session_id: id });
    if (r.status !== 200) throw new Error(`session ${id}: HTTP ${r.status} (${r.errorCode})`);
  }
  await new Promise((r) => setTimeout(r, 500));
  const rss = rssMb(server);
  for (const id of ids) await (await fetch(`${server.url}/v1/sessions/${id}`, { method: 'DELETE' })).arrayBuffer();
  return rss;
}

export interface LoadSettings {
  prompts: string[];
  maxTokens: number;
  warmupMs: number;
  windowMs: number;
}

/** `clients` closed-loop streaming clients from the load generator's own process (bench/lib/load.ts). */
export async function concurrent(url: string, clients: number, s: LoadSettings): Promise<LoadResult> {
  const r = await runLoadProcess({
    url,
    clients,
    prompts: s.prompts,
    maxTokens: s.maxTokens,
    warmupMs: s.warmupMs,
    warmupTimeoutMs: 600_000,
    windowMs: s.windowMs,
    drainTimeoutMs: 600_000,
  });
  if (r.requests.failed > 0) throw new Error(`${clients} clients: ${r.requests.failed} requests failed, e.g. ${r.errors.join(' | ')}`);
  return r;
}
