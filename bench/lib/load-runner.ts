// The bench's side of the load generator: what it is told (LoadParams), what it answers
// (LoadResult), and runLoadProcess(), which runs bench/lib/load.ts as a separate process —
// the clients' fetch and SSE parsing then share neither an event loop with the server nor
// with the bench that starts and stops it.
import { spawn } from 'node:child_process';
import { ROOT } from './server.js';

export interface LoadParams {
  /** http://127.0.0.1:<port> */
  url: string;
  /** Concurrent streaming clients, each a closed loop: send, read the stream to its end, send again. */
  clients: number;
  /** Request k (in the order requests are sent, over all clients) uses prompts[k % length]. */
  prompts: string[];
  maxTokens: number;
  /** The warm-up lasts at least this long and until every client has finished one request. */
  warmupMs: number;
  /** A warm-up not over after this long fails the run (a server that never answers). */
  warmupTimeoutMs: number;
  /** The measured window, starting when the warm-up ends. */
  windowMs: number;
  /** After the window no request is sent; those running get this long to finish, then are aborted. */
  drainTimeoutMs: number;
}

export interface Percentiles {
  p50: number;
  p99: number;
  /** Number of samples. */
  n: number;
}

export interface LoadResult {
  clients: number;
  warmup_ms: number;
  window_ms: number;
  drain_ms: number;
  /** Completion tokens whose text arrived inside the window (usage counts, spread over each request's chunks). */
  window_tokens: number;
  tokens_per_s: number;
  /** The load process's CPU time over the window ÷ the window (1 = one core busy throughout). */
  load_cpu: number;
  /** Requests sent inside the window: send → first chunk with text. */
  ttft_ms: Percentiles;
  /** Gaps between successive text chunks of one stream, for chunks that arrived inside the window. */
  itl_ms: Percentiles;
  requests: {
    warmup: number;
    sent_in_window: number;
    finished_in_window: number;
    total: number;
    failed: number;
    aborted_at_drain_timeout: number;
  };
  /** Σ usage.prompt_tokens and Σ usage.prompt_tokens_details.cached_tokens over finished requests. */
  prompt_tokens: number;
  cached_prompt_tokens: number;
  /** Requests whose count of text chunks differs from usage.completion_tokens. */
  chunk_token_mismatches: number;
  /** True when more requests were sent than there are prompts (prompts then repeat). */
  prompts_wrapped: boolean;
  /** The first few failures, verbatim. */
  errors: string[];
}

/** Runs bench/lib/load.ts with `params` on its stdin; resolves with the LoadResult it prints. */
export function runLoadProcess(params: LoadParams): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/lib/load.ts'], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-8000)));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code !== 0) return reject(new Error(`load generator exited with ${code ?? signal}:\n${stderr}`));
      try {
        resolve(JSON.parse(stdout) as LoadResult);
      } catch (err) {
        reject(new Error(`load generator printed no JSON (${(err as Error).message}):\n${stdout.slice(0, 2000)}\n${stderr}`));
      }
    });
    child.stdin.end(JSON.stringify(params));
  });
}
