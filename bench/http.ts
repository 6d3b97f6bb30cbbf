// `npm run bench:http`: what serving costs — the same generation through the whole service
// (a separate server process: HTTP, JSON, SSE, the main thread ↔ engine worker hop) against
// the engine driven directly in this process (the Scheduler class on a loadModel()-loaded model,
// as test/helpers/engine.ts drives it: no worker, no HTTP).
//
// 1. Single-stream throughput: HTTP_MAX_TOKENS (256) greedy tokens, EOS ignored, from a short
//    prompt, HTTP_REPS (7) repetitions per side. HTTP streams /v1/completions and counts the
//    tokens from the final usage chunk (stream_options.include_usage); its clock runs from
//    sending the request to the end of the stream. The engine's clock runs from submit() to
//    its done event. ratio = http / engine (1.0 = serving costs nothing; goal ≥ 0.95). The
//    prompt is shorter than one prefix-cache block, so neither side can reuse anything
//    (checked: cached_tokens must be 0).
// 2. Time to first token over HTTP for a 256-token prompt: HTTP_TTFT_RUNS (9) streamed
//    requests, each prompt unique at its START (a random tag), so the prefix cache — keyed
//    from the first token — can never help; the clock runs from sending the request to the
//    first data chunk with text. The in-process engine gets the same kind of prompts
//    (interleaved), reported as an extra key, to show what HTTP adds to the first token.
//
// As in bench/kv-cache.ts the sides run interleaved with alternating order and we report
// medians. Both sides run with the same configuration: loadConfig() over this process's
// environment, which the server process inherits too (MODEL_DIR, ORT_THREADS, KV_CACHE_*).
// Note the HTTP side's client (node:http + SSE parsing, bench/lib/http-stream.ts) shares the
// machine's cores with the server, as a co-located client would.
//
// Writes bench/results/http.json: {"engine_tokens_per_s", "http_tokens_per_s", "ratio",
// "ttft_ms_p50"} plus context (engine_ttft_ms_p50, per-run figures, machine, date).
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { loadConfig } from '../src/config.js';
import type { EngineEvent } from '../src/core/scheduler/events.js';
import { Scheduler } from '../src/core/scheduler/scheduler.js';
import { defaultSampling } from '../src/core/sampling/params.js';
import { KvCacheManager } from '../src/core/kv/cache-manager.js';
import { loadModel } from '../src/runtime/load-model.js';
import { readModelDir } from '../src/runtime/model-dir.js';
import { modelWeightBytes, planThreads } from '../src/runtime/threads.js';
import { envInt, interleave, log, round1, round2 } from './lib/interleave.js';
import { ROOT, startService, streamCompletion } from './lib/server.js';
import { median, percentile } from './lib/stats.js';
import { benchMeta } from './lib/meta.js';

const OUT_FILE = join(ROOT, 'bench/results/http.json');
const PROMPT = 'ROMEO:';
const MAX_TOKENS = envInt('HTTP_MAX_TOKENS', 256);
const REPS = envInt('HTTP_REPS', 7);
const TTFT_RUNS = envInt('HTTP_TTFT_RUNS', 9);
const TTFT_PROMPT_TOKENS = 256;
const TTFT_MAX_TOKENS = 4;
const CONFIG = loadConfig(process.env);

// Filler for the TTFT prompts (byte-level model: one token per ASCII character).
const FILLER =
  'But soft, what light through yonder window breaks? It is the east, and Juliet is the sun. ' +
  'Arise, fair sun, and kill the envious moon, who is already sick and pale with grief, ' +
  'that thou her maid art far more fair than she. Be not her maid, since she is envious; ' +
  'her vestal livery is but sick and green, and none but fools do wear it; cast it off. ';

/** A 256-character ASCII prompt whose first characters are random: no two share a first block. */
function uniquePrompt(): string {
  const text = `${randomBytes(6).toString('hex')}: ${FILLER.repeat(2)}`.slice(0, TTFT_PROMPT_TOKENS);
  if (text.length !== TTFT_PROMPT_TOKENS) throw new Error('TTFT filler too short');
  return text;
}

// ---- the in-process engine ----

// The threads the service plans for this model (its worker does the same): at SmolLM2 size one
// two-thread session decodes, where OnnxDecoder's own default would be a one-thread one.
const PLAN = planThreads(CONFIG.model, modelWeightBytes(readModelDir(CONFIG.model.dir, CONFIG.model.file).onnxPath));
const model = await loadModel(CONFIG.model.dir, { threads: PLAN.threads, decodeThreads: PLAN.decodeThreads, onnxFile: CONFIG.model.file });
const { info, tokenizer } = model;
type Done = Extract<EngineEvent, { type: 'done' }>;
const listeners = new Map<string, (e: EngineEvent) => void>();
const engine = new Scheduler(
  model.decoder,
  tokenizer,
  {
    eosIds: info.eosIds,
    contextLength: info.contextLength,
    cache: new KvCacheManager({ layout: info.layout, ...CONFIG.kvCache }),
    admissionTimeoutMs: CONFIG.kvCache.admissionTimeoutMs,
    limits: CONFIG.scheduler,
  },
  (e) => listeners.get(e.id)?.(e),
);
let nextId = 0;

/** One in-process generation, timed from submit() to done (and to its first text). */
function engineRun(prompt: string, maxTokens: number): Promise<{ ms: number; ttftMs: number; done: Done }> {
  const id = `bench-${nextId++}`;
  const promptIds = tokenizer.encode(prompt);
  return new Promise((resolve, reject) => {
    const start = performance.now();
    let ttftMs: number | undefined;
    listeners.set(id, (e) => {
      if (e.type === 'admitted') return;
      if (e.text) ttftMs ??= performance.now() - start;
      if (e.type !== 'done') return;
      listeners.delete(id);
      const ms = performance.now() - start;
      if (e.finishReason !== 'length' || e.usage.completionTokens !== maxTokens) {
        reject(new Error(`engine finished with ${e.finishReason} after ${e.usage.completionTokens} tokens${e.error ? `: ${e.error}` : ''}`));
      } else if (ttftMs === undefined) {
        reject(new Error('engine produced no text'));
      } else {
        resolve({ ms, ttftMs, done: e });
      }
    });
    engine.submit(id, { promptIds, maxTokens, ignoreEos: true, sampling: { ...defaultSampling, temperature: 0 } });
  });
}

// ---- the service ----

const server = await startService();
log(`server ${server.url} (pid ${server.pid}); model ${info.id}, prompt ${JSON.stringify(PROMPT)}, ${MAX_TOKENS} tokens, ${REPS} reps`);

interface Run {
  side: 'engine' | 'http';
  ms: number;
  tokens: number;
  cached: number;
  ttftMs: number;
}

const engineSide = async (prompt: string, maxTokens: number): Promise<Run> => {
  const r = await engineRun(prompt, maxTokens);
  return { side: 'engine', ms: r.ms, tokens: r.done.usage.completionTokens, cached: r.done.usage.cachedTokens, ttftMs: r.ttftMs };
};
const httpSide = async (prompt: string, maxTokens: number): Promise<Run> => {
  const r = await streamCompletion(server.url, { prompt, max_tokens: maxTokens });
  if (r.finishReason !== 'length' || r.usage.completion_tokens !== maxTokens) {
    throw new Error(`HTTP finished with ${r.finishReason} after ${r.usage.completion_tokens} tokens`);
  }
  return { side: 'http', ms: r.totalMs, tokens: r.usage.completion_tokens, cached: r.usage.prompt_tokens_details.cached_tokens, ttftMs: r.ttftMs };
};

let throughput: Run[][];
let ttft: Run[][];
try {
  log('warm-up (both sides, 16 tokens; one 256-token prompt each)');
  await engineSide(PROMPT, 16);
  await httpSide(PROMPT, 16);
  await engineSide(uniquePrompt(), TTFT_MAX_TOKENS);
  await httpSide(uniquePrompt(), TTFT_MAX_TOKENS);

  const tps = (r: Run): number => (r.tokens / r.ms) * 1000;
  throughput = await interleave(REPS, [() => engineSide(PROMPT, MAX_TOKENS), () => httpSide(PROMPT, MAX_TOKENS)], ([e, h], rep) => {
    for (const r of [e!, h!]) if (r.cached !== 0) throw new Error(`${r.side} reused ${r.cached} cached prompt tokens`);
    log(`throughput rep ${rep + 1}/${REPS}: engine ${tps(e!).toFixed(1)} tok/s, http ${tps(h!).toFixed(1)} tok/s`);
  });

  ttft = await interleave(TTFT_RUNS, [() => engineSide(uniquePrompt(), TTFT_MAX_TOKENS), () => httpSide(uniquePrompt(), TTFT_MAX_TOKENS)], ([e, h], rep) => {
    for (const r of [e!, h!]) if (r.cached !== 0) throw new Error(`${r.side} TTFT prompt reused ${r.cached} cached tokens`);
    log(`ttft run ${rep + 1}/${TTFT_RUNS}: engine ${e!.ttftMs.toFixed(1)} ms, http ${h!.ttftMs.toFixed(1)} ms`);
  });
} finally {
  const code = await server.stop();
  if (code !== 0) log(`WARNING: server exited with ${code}:\n${server.output()}`);
  await model.decoder.close();
}

const [engineRuns, httpRuns] = throughput as [Run[], Run[]];
const [engineTtft, httpTtft] = ttft as [Run[], Run[]];
const engineTps = (MAX_TOKENS / median(engineRuns.map((r) => r.ms))) * 1000;
const httpTps = (MAX_TOKENS / median(httpRuns.map((r) => r.ms))) * 1000;
const ttftP50 = percentile(
  httpTtft.map((r) => r.ttftMs),
  50,
);
const engineTtftP50 = percentile(
  engineTtft.map((r) => r.ttftMs),
  50,
);

const result = {
  engine_tokens_per_s: round1(engineTps),
  http_tokens_per_s: round1(httpTps),
  ratio: round2(httpTps / engineTps),
  ttft_ms_p50: round1(ttftP50),
  engine_ttft_ms_p50: round1(engineTtftP50),
  http_ttft_ms_p90: round1(
    percentile(
      httpTtft.map((r) => r.ttftMs),
      90,
    ),
  ),
  runs: {
    engine_ms: engineRuns.map((r) => round1(r.ms)),
    http_ms: httpRuns.map((r) => round1(r.ms)),
    http_ttft_ms: httpTtft.map((r) => round1(r.ttftMs)),
    engine_ttft_ms: engineTtft.map((r) => round1(r.ttftMs)),
  },
  settings: {
    prompt: PROMPT,
    max_tokens: MAX_TOKENS,
    reps: REPS,
    ttft_prompt_tokens: TTFT_PROMPT_TOKENS,
    ttft_max_tokens: TTFT_MAX_TOKENS,
    ttft_runs: TTFT_RUNS,
  },
  ...benchMeta(),
  threads: PLAN.threads,
  decode_threads: PLAN.decodeThreads,
  model: { id: info.id, onnx: relative(info.dir, info.onnxPath) },
};
mkdirSync(dirname(OUT_FILE), { recursive: true });
writeFileSync(OUT_FILE, `${JSON.stringify(result, null, 2)}\n`);

const lines = [
  `HTTP + SSE vs in-process engine: ${MAX_TOKENS} greedy tokens from ${JSON.stringify(PROMPT)}, median of ${REPS} interleaved reps (ratio = http / engine, goal ≥ 0.95)`,
  '',
  '| engine tok/s | http tok/s | ratio |',
  '|-------------:|-----------:|------:|',
  `| ${result.engine_tokens_per_s.toFixed(1)} | ${result.http_tokens_per_s.toFixed(1)} | ${result.ratio.toFixed(2)} |`,
  '',
  `Time to first token, ${TTFT_PROMPT_TOKENS}-token prompts unique from their first token (no cache reuse), ${TTFT_RUNS} runs each`,
  '',
  '| | p50 ms | p90 ms |',
  '|:--|-----:|-----:|',
  `| http (streamed) | ${result.ttft_ms_p50.toFixed(1)} | ${result.http_ttft_ms_p90.toFixed(1)} |`,
  `| engine (in-process) | ${result.engine_ttft_ms_p50.toFixed(1)} | ${percentile(
    engineTtft.map((r) => r.ttftMs),
    90,
  ).toFixed(1)} |`,
  '',
  `${result.machine.cpu}, ${result.machine.cores} cores, Node ${result.node}, onnxruntime-node ${result.onnxruntime}; wrote ${relative(process.cwd(), OUT_FILE)}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
