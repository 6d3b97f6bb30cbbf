// The main thread's handle on the engine worker: starts it (and the tokenizer thread),
// tokenizes on this side so the HTTP layer can check context limits before queueing, and
// exposes each generation as an async iterable of events that an AbortSignal cancels. Any of
// its threads failing fails the whole client once: requests in flight end with
// engine_restarted and its owner (supervisor.ts) starts a new one.
import { randomUUID } from 'node:crypto';
import type { Config } from '../config.js';
import type { SessionInfo } from '../core/kv/cache-stats.js';
import type { EngineEvent } from '../core/scheduler/events.js';
import type { GenerateRequest } from '../core/scheduler/sequence.js';
import type { ModelInfo } from '../runtime/load-model.js';
import { readModelDir } from '../runtime/model-dir.js';
import { TextTokenizer } from '../runtime/tokenizer.js';
import { WorkerChannel } from './channel.js';
import type { EngineCalls, EngineReady, EngineStats, FromEngine, ToEngine, WorkerConfig } from './protocol.js';
import { TokenizerThread } from './tokenizer-thread.js';

type Listener = (event: EngineEvent) => void;

/** The threads a test may crash (WorkerConfig.faultInjection). */
export type CrashTarget = 'engine' | 'tokenizer';

/** Texts up to this many characters are tokenized on the HTTP thread (~1 ms at most), longer ones on the tokenizer thread. */
export const INLINE_TOKENIZE_CHARS = 2048;

/** How long a call for figures or sessions may wait for the worker (it answers between steps). */
const CALL_TIMEOUT_MS = 5000;

/** The worker's share of the service configuration (what it leaves unset, the worker plans: runtime/threads.ts). */
export function workerConfigOf(config: Readonly<Config>): WorkerConfig {
  const { dir, file, threads, decodeThreads, prepack } = config.model;
  const { prefillThread, ...scheduler } = config.scheduler;
  return { modelDir: dir, onnxFile: file, threads, decodeThreads, prepack, prefillThread, kvCache: { ...config.kvCache }, scheduler, faultInjection: false };
}

export class EngineClient {
  readonly info: ModelInfo;
  /** Threads and model copies the worker runs with, and the weight bytes they were chosen by. */
  readonly plan: EngineReady['plan'];
  /** What the tiers below RAM held at start. */
  readonly tiers: EngineReady['tiers'];
  readonly tokenizer: TextTokenizer;
  readonly #channel: WorkerChannel<EngineCalls, ToEngine, FromEngine>;
  readonly #tokenizerThread: TokenizerThread;
  readonly #listeners: Map<string, Listener>;
  /** Generations posted to the worker whose `done` has not come back (aborted ones too). */
  readonly #inWorker: Set<string>;
  readonly #failureListeners: Array<(failure: string) => void> = [];
  readonly #faultInjection: boolean;
  #failure: string | undefined;
  #closing: Promise<number> | undefined;

  private constructor(
    channel: WorkerChannel<EngineCalls, ToEngine, FromEngine>,
    tracking: { listeners: Map<string, Listener>; inWorker: Set<string> },
    ready: EngineReady,
    tokenizer: TextTokenizer,
    tokenizerThread: TokenizerThread,
    faultInjection: boolean,
  ) {
    this.#channel = channel;
    this.#listeners = tracking.listeners;
    this.#inWorker = tracking.inWorker;
    this.#faultInjection = faultInjection;
    this.info = ready.info;
    this.plan = ready.plan;
    this.tiers = ready.tiers;
    this.tokenizer = tokenizer;
    this.#tokenizerThread = tokenizerThread;
    channel.onExit((failure) => this.#fail(failure));
    // While closing, the tokenizer thread ends first by design: the requests still running end
    // with the engine worker's own events (aborted), or with its exit.
    tokenizerThread.onExit((failure) => {
      if (this.#closing === undefined) this.#fail(failure);
    });
  }

  /**
   * A thread ended without being asked to: every request in flight ends with engine_restarted
   * (at once: the worker that would end them is gone), the client is no longer alive
   * (readiness turns 503), and the failure listeners hear of it. Once.
   */
  #fail(failure: string): void {
    if (this.#failure !== undefined || this.#closing !== undefined) {
      this.#endAll(failure);
      return;
    }
    this.#failure = failure;
    this.#endAll(failure);
    for (const listener of this.#failureListeners) listener(failure);
  }

  #endAll(failure: string): void {
    const usage = { promptTokens: 0, completionTokens: 0, cachedTokens: 0 };
    const error = `${failure}; the engine is restarting`;
    for (const [id, listener] of this.#listeners) listener({ type: 'done', id, finishReason: 'error', text: '', usage, error, errorCode: 'engine_restarted' });
    this.#listeners.clear();
    this.#inWorker.clear();
  }

  /** Calls `listener(failure)` once if a thread of this engine fails (not when it is closed). */
  onFailure(listener: (failure: string) => void): void {
    if (this.#failure !== undefined) listener(this.#failure);
    else this.#failureListeners.push(listener);
  }

  /** Why the engine failed, once it has. */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** Generations the worker holds: running, queued, or aborted and not yet ended there. */
  get inFlight(): number {
    return this.#inWorker.size;
  }

  /**
   * Fault injection for tests (only when started with `faultInjection`): the engine worker
   * throws an uncaught exception between steps, or the tokenizer thread is terminated.
   */
  crash(target: CrashTarget): void {
    if (!this.#faultInjection) throw new Error('fault injection is off');
    if (target === 'engine') this.#channel.post({ type: 'crash' });
    else void this.#tokenizerThread.terminate();
  }

  /** Starts the worker and resolves once the model is loaded; rejects with the loader's one-line error. */
  static async start(config: WorkerConfig): Promise<EngineClient> {
    const files = readModelDir(config.modelDir, config.onnxFile);
    const tokenizer = new TextTokenizer(files.tokenizerJson, files.tokenizerConfig);
    // The prompt-size check's bound, computed at load rather than in the first request.
    void tokenizer.maxTokenChars;
    const listeners = new Map<string, Listener>();
    const inWorker = new Set<string>();
    const [engine, tokenizerThread] = await Promise.allSettled([
      WorkerChannel.start<EngineCalls, EngineReady, ToEngine, FromEngine>({
        name: 'engine worker',
        entry: 'engine-worker',
        workerData: config,
        onMessage: (msg) => {
          for (const e of msg.events) {
            if (e.type === 'done') inWorker.delete(e.id);
            listeners.get(e.id)?.(e);
          }
        },
      }),
      TokenizerThread.start({ tokenizerJson: files.tokenizerJson, tokenizerConfig: files.tokenizerConfig }),
    ]);
    if (engine.status === 'rejected' || tokenizerThread.status === 'rejected') {
      // Neither thread outlives a failed start (start() has ended the one that failed).
      if (engine.status === 'fulfilled') await engine.value.channel.close();
      if (tokenizerThread.status === 'fulfilled') await tokenizerThread.value.close();
      throw engine.status === 'rejected' ? engine.reason : (tokenizerThread as PromiseRejectedResult).reason;
    }
    return new EngineClient(
      engine.value.channel,
      { listeners, inWorker },
      engine.value.ready,
      tokenizer,
      tokenizerThread.value,
      config.faultInjection === true,
    );
  }

  /**
   * A text's token ids. Texts longer than INLINE_TOKENIZE_CHARS are tokenized on the
   * tokenizer thread, so the HTTP thread goes on streaming meanwhile; shorter ones here, at
   * once. Should the thread have stopped, here too.
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

  /** False once a thread has failed or the client is closing. */
  get alive(): boolean {
    return this.#channel.alive && this.#failure === undefined;
  }

  /** Round trip to the worker: true when it answers within `timeoutMs` (readiness probe). */
  async ping(timeoutMs = 1000): Promise<boolean> {
    return this.#channel.call('ping', [], { timeoutMs }).then(
      () => true,
      () => false,
    );
  }

  /** KV cache, scheduler and engine-thread figures, for /metrics. */
  stats(): Promise<EngineStats> {
    return this.#channel.call('stats', [], { timeoutMs: CALL_TIMEOUT_MS });
  }

  sessions(tenant: string): Promise<SessionInfo[]> {
    return this.#channel.call('sessions', [tenant], { timeoutMs: CALL_TIMEOUT_MS });
  }

  session(tenant: string, id: string): Promise<SessionInfo | null> {
    return this.#channel.call('session', [tenant, id], { timeoutMs: CALL_TIMEOUT_MS });
  }

  deleteSession(tenant: string, id: string): Promise<boolean> {
    return this.#channel.call('deleteSession', [tenant, id], { timeoutMs: CALL_TIMEOUT_MS });
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
    const onAbort = (): void => this.#channel.post({ type: 'abort', id });
    let finished = false;
    try {
      if (!this.alive) throw new Error('engine worker is not running');
      this.#inWorker.add(id);
      this.#channel.post({ type: 'generate', id, request });
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
   */
  close(timeoutMs = 10_000): Promise<number> {
    this.#closing ??= Promise.all([this.#channel.close(timeoutMs), this.#tokenizerThread.close(timeoutMs)]).then(([code]) => code);
    return this.#closing;
  }
}
