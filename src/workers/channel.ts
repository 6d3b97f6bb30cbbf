// The main side of one worker thread: start-up handshake, request/response calls with ids,
// timeouts and transfer lists, fire-and-forget posts, streamed messages, exit handling and a
// graceful stop. The engine, prefill and tokenizer threads all talk through it.
//
//   channel ──{call id method args}──▶ worker ──{result id value} | {error id message}──▶ channel
//           ──{any other message}────▶        ──{any other message}──▶ onMessage
//           ──{close}────────────────▶        (finishes its work, releases, ends by itself)
import { Worker } from 'node:worker_threads';
import type { CallMessage, Calls, ReplyMessage } from './protocol.js';

/** The worker ended (exited, threw, or was stopped) before answering. */
export class WorkerGoneError extends Error {
  override name = 'WorkerGoneError';
}

/** The worker gave no answer within the call's timeout. */
export class WorkerTimeoutError extends Error {
  override name = 'WorkerTimeoutError';
}

// The built service runs dist/*.js; from the .ts sources (dev, tests) a worker needs a
// TypeScript loader of its own (tsx, a dev dependency), whatever loader the parent used.
const fromSource = import.meta.url.endsWith('.ts');

export interface StartOptions<In = unknown> {
  /** Names the thread in errors and logs ("engine worker"). */
  name: string;
  /** The worker's entry module in this directory, without extension ("engine-worker"). */
  entry: string;
  workerData: unknown;
  /** Messages that are neither replies nor the handshake (engine events). */
  onMessage?: (msg: In) => void;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

export class WorkerChannel<C extends Calls, Out = never, In = never> {
  readonly name: string;
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  readonly #exitListeners: Array<(failure: string) => void> = [];
  #next = 0;
  #exited = false;
  #exitCode: number | undefined;
  #failure: string;
  #closing: Promise<number> | undefined;

  private constructor(worker: Worker, name: string, onMessage: ((msg: In) => void) | undefined) {
    this.#worker = worker;
    this.name = name;
    this.#failure = `the ${name} exited`;
    worker.on('message', (msg: ReplyMessage | In) => {
      const reply = msg as ReplyMessage;
      if (reply.type === 'result' || reply.type === 'error') this.#settle(reply);
      else if (reply.type !== 'ready' && reply.type !== 'fatal') onMessage?.(msg as In);
    });
    // An uncaught exception in the worker must not crash this thread (an 'error' event with
    // no listener would): the calls waiting on it fail, and the owner hears of it.
    worker.on('error', (err) => {
      this.#failure = `the ${name} failed: ${err.message}`;
    });
    worker.on('exit', (code) => {
      this.#exited = true;
      this.#exitCode = code;
      for (const [id, call] of this.#pending) {
        clearTimeout(call.timer);
        this.#pending.delete(id);
        call.reject(new WorkerGoneError(this.#failure));
      }
      for (const listener of this.#exitListeners) listener(this.#failure);
    });
  }

  /**
   * Starts the worker and resolves once it posts {type: 'ready', …} (returned with it). A
   * {type: 'fatal', message}, an error or an exit before that rejects with the reason, and
   * the worker is ended.
   */
  static async start<C extends Calls, Ready extends { type: 'ready' }, Out = never, In = never>(
    options: StartOptions<In>,
  ): Promise<{ channel: WorkerChannel<C, Out, In>; ready: Ready }> {
    const url = new URL(fromSource ? './from-source.mjs' : `./${options.entry}.js`, import.meta.url);
    const worker = new Worker(url, { workerData: options.workerData, argv: [`./${options.entry}.ts`], execArgv: [] });
    // Listening from the start: replies and events sent right after 'ready' are not lost.
    const channel = new WorkerChannel<C, Out, In>(worker, options.name, options.onMessage);
    const cleanup: Array<() => void> = [];
    try {
      const ready = await new Promise<Ready>((resolve, reject) => {
        const onMessage = (msg: { type: string; message?: string }): void => {
          if (msg.type === 'ready') resolve(msg as Ready);
          else if (msg.type === 'fatal') reject(new Error(msg.message));
        };
        const onExit = (code: number): void => reject(new Error(`${options.name} exited with code ${code} during start-up`));
        worker.on('message', onMessage).once('error', reject).once('exit', onExit);
        cleanup.push(() => worker.off('message', onMessage).off('error', reject).off('exit', onExit));
      }).finally(() => {
        for (const fn of cleanup) fn();
      });
      return { channel, ready };
    } catch (err) {
      await worker.terminate();
      throw err;
    }
  }

  /** False once the worker has exited (or is being stopped). */
  get alive(): boolean {
    return !this.#exited && this.#closing === undefined;
  }

  /** Why the worker ended, once it has. */
  get failure(): string {
    return this.#failure;
  }

  /** Calls `listener(failure)` once the worker has exited. */
  onExit(listener: (failure: string) => void): void {
    if (this.#exited) listener(this.#failure);
    else this.#exitListeners.push(listener);
  }

  /**
   * Calls `method` in the worker. Rejects with WorkerTimeoutError after `timeoutMs`, with
   * WorkerGoneError if the worker ends first, with an Error carrying the worker's message if
   * the method threw there. `transfer` hands buffers over instead of copying them.
   */
  call<M extends keyof C & string>(method: M, args: C[M][0], options: { timeoutMs?: number; transfer?: ArrayBuffer[] } = {}): Promise<C[M][1]> {
    if (!this.alive) return Promise.reject(new WorkerGoneError(`the ${this.name} is not running (${this.#exited ? this.#failure : 'stopping'})`));
    const id = this.#next++;
    return new Promise<C[M][1]>((resolve, reject) => {
      const { timeoutMs } = options;
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.#pending.delete(id);
              reject(new WorkerTimeoutError(`the ${this.name} did not answer ${method} within ${timeoutMs} ms`));
            }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      this.#worker.postMessage({ type: 'call', id, method, args } satisfies CallMessage, options.transfer ?? []);
    });
  }

  /** Posts a message that expects no reply (a generation, an abort); dropped once the worker is gone. */
  post(msg: Out, transfer: ArrayBuffer[] = []): void {
    if (!this.#exited) this.#worker.postMessage(msg, transfer);
  }

  /**
   * Asks the worker to finish what it is doing, release its resources and end; resolves with
   * its exit code. Terminating it outright could land inside an onnxruntime call, which
   * aborts the whole process: it is terminated only if it has not ended after `timeoutMs`.
   */
  close(timeoutMs = 10_000): Promise<number> {
    this.#closing ??= this.#exited
      ? Promise.resolve(this.#exitCode ?? 0)
      : new Promise<number>((resolve) => {
          const timer = setTimeout(() => void this.#worker.terminate(), timeoutMs);
          this.#worker.once('exit', (code) => {
            clearTimeout(timer);
            resolve(code);
          });
          this.#worker.postMessage({ type: 'close' });
        });
    return this.#closing;
  }

  /** Ends the worker at once, whatever it is doing (a test's crash, a worker that hangs). */
  terminate(): Promise<number> {
    return this.#worker.terminate();
  }

  #settle(reply: Extract<ReplyMessage, { type: 'result' | 'error' }>): void {
    const call = this.#pending.get(reply.id);
    if (!call) return; // timed out meanwhile
    this.#pending.delete(reply.id);
    clearTimeout(call.timer);
    if (reply.type === 'error') call.reject(new Error(reply.message));
    else call.resolve(reply.value);
  }
}
