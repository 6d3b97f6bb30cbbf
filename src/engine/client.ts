// The main thread's handle on the engine worker: starts it, tokenizes on this side (cheap,
// and lets the HTTP layer check context limits before queueing), and exposes each
// generation as an async iterable of events that an AbortSignal cancels.
import { randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Config } from '../config.js';
import type { EngineEvent } from '../core/generation/engine.js';
import type { GenerateRequest } from '../core/generation/sequence.js';
import type { ModelInfo } from '../runtime/load-model.js';
import { readModelDir } from '../runtime/model-dir.js';
import { TextTokenizer } from '../runtime/tokenizer.js';
import type { SessionInfo } from '../core/kv/cache-manager.js';
import type { EngineStats } from '../metrics/metrics.js';
import type { FromWorker, Rpc, RpcMethod, ToWorker, WorkerConfig } from './protocol.js';
import { stopWorker, whenReady } from './worker-lifecycle.js';
import { TokenizerThread } from './tokenizer-thread.js';

// The built service runs dist/*.js; from the .ts sources (dev, tests) the worker needs a
// TypeScript loader of its own (tsx, a dev dependency), whatever loader the parent used.
const fromSource = import.meta.url.endsWith('.ts');
const workerUrl = new URL(fromSource ? './worker-from-source.mjs' : './worker.js', import.meta.url);

type Listener = (event: EngineEvent) => void;

/**
 * Texts up to this many characters are tokenized on the HTTP thread (~1 ms at most with the
 * shipped tokenizer), longer ones on the tokenizer thread.
 */
export const INLINE_TOKENIZE_CHARS = 2048;

/** The worker's share of the service configuration. */
export function workerConfigOf(config: Readonly<Config>, cores = availableParallelism()): WorkerConfig {
  const { dir, file, threads, decodeThreads } = config.model;
  const { prefillThread, ...scheduler } = config.scheduler;
  // The prefill thread is a second compute thread: with one core (or onnxruntime held to one
  // thread) it only takes turns with the decode steps. Measured on one core (taskset, 16
  // streaming clients, 2 alternated rounds, 2026-11-29): inline chunks gave 2,660-2,668 vs
  // 2,419-2,590 tokens/s, ITL p50 4.2-4.3 vs 5.1-5.3 ms, TTFT p50 38-39 vs 43 ms, and no
  // second copy of the model in memory.
  const useThread = prefillThread ?? (threads ?? cores) > 1;
  return { modelDir: dir, onnxFile: file, threads, decodeThreads, kvCache: { ...config.kvCache }, scheduler, prefillThread: useThread };
}

export class EngineClient {
  readonly info: ModelInfo;
  readonly tokenizer: TextTokenizer;
  readonly #worker: Worker;
  readonly #tokenizerThread: TokenizerThread;
  readonly #listeners = new Map<string, Listener>();
  readonly #calls = new Map<string, (result: unknown) => void>();
  #exited = false;
  #exitCode: number | undefined;
  #closing: Promise<number> | undefined;

  private constructor(worker: Worker, info: ModelInfo, tokenizer: TextTokenizer, tokenizerThread: TokenizerThread) {
    this.#worker = worker;
    this.info = info;
    this.tokenizer = tokenizer;
    this.#tokenizerThread = tokenizerThread;
    worker.on('message', (msg: FromWorker) => {
      if (msg.type === 'result') this.#calls.get(msg.id)?.(msg.result);
      else if (msg.type === 'events') for (const e of msg.events) this.#listeners.get(e.id)?.(e);
    });
    // An uncaught exception in the worker must not crash the HTTP thread (an 'error' event
    // with no listener would): running requests end with an error, readiness turns 503.
    let failure = 'engine worker exited';
    worker.on('error', (err) => {
      failure = `engine worker failed: ${err.message}`;
    });
    worker.on('exit', (code) => {
      this.#exited = true;
      this.#exitCode = code;
      const usage = { promptTokens: 0, completionTokens: 0, cachedTokens: 0 };
      for (const [id, listener] of this.#listeners) {
        listener({ type: 'done', id, finishReason: 'error', text: '', usage, error: failure, errorCode: 'internal' });
      }
    });
  }

  /** Starts the worker and resolves once the model is loaded; rejects with the loader's one-line error. */
  static async start(config: WorkerConfig): Promise<EngineClient> {
    const files = readModelDir(config.modelDir, config.onnxFile);
    const tokenizer = new TextTokenizer(files.tokenizerJson, files.tokenizerConfig);
    const worker = new Worker(workerUrl, { workerData: config, execArgv: [] });
    const [ready, tokenizerThread] = await Promise.allSettled([
      whenReady<Extract<FromWorker, { type: 'ready' }>>(worker, 'engine worker'),
      TokenizerThread.start({ tokenizerJson: files.tokenizerJson, tokenizerConfig: files.tokenizerConfig }),
    ]);
    if (ready.status === 'rejected' || tokenizerThread.status === 'rejected') {
      // Neither thread outlives a failed start (whenReady has ended the one that failed).
      if (ready.status === 'fulfilled') await stopWorker(worker, 10_000);
      if (tokenizerThread.status === 'fulfilled') await tokenizerThread.value.close();
      throw ready.status === 'rejected' ? ready.reason : (tokenizerThread as PromiseRejectedResult).reason;
    }
    return new EngineClient(worker, ready.value.info, tokenizer, tokenizerThread.value);
  }

  /**
   * A text's token ids. Texts longer than INLINE_TOKENIZE_CHARS are tokenized on the
   * tokenizer thread, so the HTTP thread goes on streaming meanwhile (tokenizer-thread.ts);
   * shorter ones here, at once (0.14 ms for 256 characters, 0.5 ms for 1,024). Should the
   * thread have stopped, here too.
   */
  async encode(text: string): Promise<number[]> {
    const thread = this.#tokenizerThread;
    if (text.length <= INLINE_TOKENIZE_CHARS || !thread.alive) return this.tokenizer.encode(text);
    try {
      return await thread.encode(text);
    } catch (err) {
      // The thread ended under the call: tokenize here. (A text the tokenizer rejects fails here too.)
      if (thread.alive) throw err;
      return this.tokenizer.encode(text);
    }
  }

  get alive(): boolean {
    return !this.#exited;
  }

  /** Round trip to the worker: true when it answers within `timeoutMs` (readiness probe). */
  async ping(timeoutMs = 1000): Promise<boolean> {
    return (await this.#call('ping', [], timeoutMs)) === true;
  }

  /** KV cache and scheduler figures, for /metrics. */
  async stats(): Promise<EngineStats> {
    return this.#required(await this.#call('stats', []));
  }

  async sessions(tenant: string): Promise<SessionInfo[]> {
    return this.#required(await this.#call('sessions', [tenant]));
  }

  async session(tenant: string, id: string): Promise<SessionInfo | null> {
    return this.#required(await this.#call('session', [tenant, id]));
  }

  async deleteSession(tenant: string, id: string): Promise<boolean> {
    return this.#required(await this.#call('deleteSession', [tenant, id]));
  }

  /** Resolves with the worker's answer, or undefined if it gives none within `timeoutMs`. */
  #call<M extends RpcMethod>(method: M, args: Rpc[M][0], timeoutMs = 5000): Promise<Rpc[M][1] | undefined> {
    if (this.#exited) return Promise.resolve(undefined);
    const id = randomUUID();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#calls.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.#calls.set(id, (result) => {
        clearTimeout(timer);
        this.#calls.delete(id);
        resolve(result as Rpc[M][1]);
      });
      this.#post({ type: 'call', id, method, args } as ToWorker);
    });
  }

  #required<T>(value: T | undefined): T {
    if (value === undefined) throw new Error('the engine worker did not answer');
    return value;
  }

  /**
   * Runs one generation. Yields `delta` events and ends with exactly one `done` event.
   * Aborting `signal`, or leaving the loop early, stops the work in the worker at its next step.
   */
  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<EngineEvent, void, undefined> {
    const id = randomUUID();
    const queue: EngineEvent[] = [];
    let wake: (() => void) | undefined;
    this.#listeners.set(id, (event) => {
      queue.push(event);
      wake?.();
    });
    const onAbort = (): void => this.#post({ type: 'abort', id });
    let finished = false;
    try {
      if (this.#exited) throw new Error('engine worker is not running');
      this.#post({ type: 'generate', id, request });
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) onAbort();
      while (!finished) {
        if (queue.length === 0) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        for (const event of queue.splice(0)) {
          finished ||= event.type === 'done';
          yield event;
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!finished) onAbort();
      this.#listeners.delete(id);
    }
  }

  /**
   * Stops the worker and resolves with its exit code: running and queued requests end as
   * aborted, the step in progress finishes, the model is released, then the thread ends.
   * Terminating it outright could land inside an onnxruntime call, which aborts the whole
   * process. Terminated anyway if it has not ended after `timeoutMs`.
   */
  close(timeoutMs = 10_000): Promise<number> {
    this.#closing ??= Promise.all([
      this.#exited ? Promise.resolve(this.#exitCode ?? 0) : stopWorker(this.#worker, timeoutMs),
      this.#tokenizerThread.close(timeoutMs),
    ]).then(([code]) => code);
    return this.#closing;
  }

  #post(msg: ToWorker): void {
    if (!this.#exited) this.#worker.postMessage(msg);
  }
}
