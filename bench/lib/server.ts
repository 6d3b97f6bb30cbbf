// The service as a bench meets it: a separate process, started on a free loopback port with
// environment overrides, polled until /health/ready answers 200, and stopped with SIGTERM.
// Benchmarks run what `npm start` runs, the compiled dist/src/main.js (startService); tests run
// src/main.ts through tsx, which needs no build but holds ~60-120 MiB more (its loader and the
// transpiled sources sit in each of the service's threads), so no memory figure comes from it.
// (Another server script that honours PORT/HOST and answers /health/ready starts the same way:
// bench/concurrency.ts starts its Transformers.js baseline so.)
// Plus the two request shapes the benches send: a non-streamed completion and a streamed one
// timed chunk by chunk (time to the first chunk carrying text, and to the end of the stream).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../test/helpers/net.js';
import { postStream } from './http-stream.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface ServerProcess {
  /** http://127.0.0.1:<port> */
  url: string;
  /** The server process itself (node, not a wrapper): /proc/<pid> is the service. */
  pid: number;
  /** The process's last lines of stderr/stdout (warnings and errors at LOG_LEVEL=warn). */
  output(): string;
  /** False once the process has exited. */
  alive(): boolean;
  /** SIGTERM, then waits for the exit; SIGKILL after `timeoutMs`. Resolves with the exit code (or the signal that ended it). */
  stop(timeoutMs?: number): Promise<number | NodeJS.Signals | null>;
}

/**
 * Starts the service (or `script`, relative to the project root) with `env` on top of this
 * process's environment (PORT, HOST and LOG_LEVEL=warn set here unless `env` names them) and
 * resolves once it is ready.
 */
export async function startServerProcess(env: Record<string, string> = {}, readyTimeoutMs = 120_000, script = 'src/main.ts'): Promise<ServerProcess> {
  const port = env.PORT ? Number(env.PORT) : await freePort();
  // kvserve with the V8 flag `npm start` gives it (src/main.ts says why); other scripts as they are.
  const flags = script === 'src/main.ts' || script === BUILT_SERVICE ? ['--no-concurrent-marking'] : [];
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const child: ChildProcess = spawn(process.execPath, [...flags, ...loader, script], {
    cwd: ROOT,
    env: { ...process.env, HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-8000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exitCode: number | NodeJS.Signals | null | undefined;
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) =>
    child.once('exit', (code, signal) => {
      exitCode = code ?? signal;
      resolve(exitCode);
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const server: ServerProcess = {
    url,
    pid: child.pid!,
    output: () => tail,
    alive: () => exitCode === undefined,
    async stop(timeoutMs = 20_000) {
      if (exitCode !== undefined) return exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
  const deadline = performance.now() + readyTimeoutMs;
  for (;;) {
    if (exitCode !== undefined) throw new Error(`server exited with ${exitCode} before it was ready:\n${tail}`);
    try {
      const res = await fetch(`${url}/health/ready`);
      await res.arrayBuffer();
      if (res.status === 200) return server;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadline) {
      await server.stop();
      throw new Error(`server not ready after ${readyTimeoutMs} ms:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const BUILT_SERVICE = 'dist/src/main.js';
let built = false;

/** The malloc setting `npm start` gives the service (package.json's start script; src/main.ts says why). */
export function startScriptMmapThreshold(): string | undefined {
  const scripts = (JSON.parse(readFileSync(`${ROOT}/package.json`, 'utf8')) as { scripts: Record<string, string> }).scripts;
  return /MALLOC_MMAP_THRESHOLD_:-(\d+)/.exec(scripts.start ?? '')?.[1];
}

/** Starts kvserve as `npm start` does: `npm run build` once per bench process, then dist/src/main.js with its environment. */
export function startService(env: Record<string, string> = {}, readyTimeoutMs = 120_000): Promise<ServerProcess> {
  if (!built) {
    const r = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) throw new Error(`npm run build failed (${r.status ?? r.signal})`);
    built = true;
  }
  const threshold = process.env.MALLOC_MMAP_THRESHOLD_ ?? startScriptMmapThreshold();
  return startServerProcess({ ...(threshold ? { MALLOC_MMAP_THRESHOLD_: threshold } : {}), ...env }, readyTimeoutMs, BUILT_SERVICE);
}

/** Resident set size of a process in bytes, from /proc/<pid>/status (VmRSS); undefined where unavailable. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export interface CompletionResult {
  status: number;
  text: string;
  usage: Usage | undefined;
  finishReason: string | null | undefined;
  /** The error body's code (e.g. kv_cache_full) for a non-200 answer. */
  errorCode: string | null | undefined;
  ms: number;
}

/**
 * POST /v1/completions, non-streamed. Always greedy with EOS ignored, so a 200 answer has
 * exactly max_tokens completion tokens. Rejects on a network error or after `timeoutMs`.
 */
export async function complete(url: string, body: Record<string, unknown>, timeoutMs?: number): Promise<CompletionResult> {
  const start = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ temperature: 0, ignore_eos: true, ...body, stream: false }),
    ...(timeoutMs !== undefined ? { signal: AbortSignal.timeout(timeoutMs) } : {}),
  });
  const json = (await res.json()) as {
    choices?: { text: string; finish_reason: string | null }[];
    usage?: Usage;
    error?: { code: string | null };
  };
  return {
    status: res.status,
    text: json.choices?.[0]?.text ?? '',
    usage: json.usage,
    finishReason: json.choices?.[0]?.finish_reason,
    errorCode: json.error?.code,
    ms: performance.now() - start,
  };
}

export interface StreamResult {
  text: string;
  /** From sending the request to the first data chunk carrying text. */
  ttftMs: number;
  /** From sending the request to the end of the stream ([DONE] and the socket's end). */
  totalMs: number;
  /** The final usage chunk (stream_options.include_usage). */
  usage: Usage;
  finishReason: string | null;
}

/**
 * POST /v1/completions with stream: true and the usage chunk requested; parses the SSE
 * stream as it arrives. Throws on a non-200 status, an error event or a missing usage chunk.
 */
export async function streamCompletion(url: string, body: Record<string, unknown>): Promise<StreamResult> {
  const start = performance.now();
  let ttftMs: number | undefined;
  let text = '';
  let usage: Usage | undefined;
  let finishReason: string | null = null;
  const request = { temperature: 0, ignore_eos: true, ...body, stream: true, stream_options: { include_usage: true } };
  await postStream(`${url}/v1/completions`, request, (chunks, at) => {
    for (const chunk of chunks) {
      const choice = chunk.choices?.[0];
      if (choice?.text) {
        ttftMs ??= at - start;
        text += choice.text;
      }
      if (choice?.finish_reason) finishReason = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
  });
  const totalMs = performance.now() - start;
  if (!usage) throw new Error('stream ended without a usage chunk');
  if (ttftMs === undefined) throw new Error('stream carried no text');
  return { text, ttftMs, totalMs, usage, finishReason };
}
