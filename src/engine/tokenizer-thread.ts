// The tokenizer thread: long texts are tokenized in a worker thread of their own, so that the
// HTTP thread keeps streaming while they are. Tokenizing is synchronous JavaScript at ~0.6 µs
// per character here (shipped tokenizer, 2026-11-29): the largest prompt the context checks
// let through (106,496 characters) took the HTTP thread 76 ms, a 1 MiB /tokenize body 0.86 s,
// and every stream stalled meanwhile. Short texts, the common case, stay on the HTTP thread
// (EngineClient.encode): a round trip to a thread costs more than they take.
//
//   HTTP thread ──{encode: text}──▶ tokenizer worker ──{ids (transferred)}──▶ HTTP thread
import { Worker } from 'node:worker_threads';
import { onGone, stopWorker, whenReady } from './worker-lifecycle.js';

const fromSource = import.meta.url.endsWith('.ts');
const workerUrl = new URL(fromSource ? './worker-from-source.mjs' : './tokenizer-worker.js', import.meta.url);

export interface TokenizerWorkerData {
  /** tokenizer.json and tokenizer_config.json, as the HTTP thread's tokenizer was built from. */
  tokenizerJson: object;
  tokenizerConfig: Record<string, unknown>;
}

/** Messages to the tokenizer worker. */
export type ToTokenizer = { type: 'encode'; id: number; text: string } | { type: 'close' };

/** Messages from the tokenizer worker. */
export type FromTokenizer =
  | { type: 'ready' }
  | { type: 'fatal'; message: string }
  | { type: 'ids'; id: number; ids: Int32Array }
  | { type: 'error'; id: number; message: string };

interface Pending {
  resolve: (ids: number[]) => void;
  reject: (err: Error) => void;
}

export class TokenizerThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #next = 0;
  #alive = true;
  #closing: Promise<void> | undefined;

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.on('message', (msg: FromTokenizer) => {
      if (msg.type !== 'ids' && msg.type !== 'error') return;
      const call = this.#pending.get(msg.id);
      if (!call) return;
      this.#pending.delete(msg.id);
      if (msg.type === 'error') call.reject(new Error(msg.message));
      else call.resolve(Array.from(msg.ids));
    });
    // A thread that fails must not take the service with it: its calls fail, and texts are
    // tokenized on the HTTP thread from then on (`alive`).
    onGone(worker, 'tokenizer thread', (failure) => {
      this.#alive = false;
      for (const call of this.#pending.values()) call.reject(new Error(failure));
      this.#pending.clear();
    });
  }

  /** Starts the thread; resolves once its tokenizer is built. */
  static async start(data: TokenizerWorkerData): Promise<TokenizerThread> {
    const worker = new Worker(workerUrl, { workerData: data satisfies TokenizerWorkerData, argv: ['./tokenizer-worker.ts'], execArgv: [] });
    await whenReady(worker, 'tokenizer thread');
    return new TokenizerThread(worker);
  }

  get alive(): boolean {
    return this.#alive && !this.#closing;
  }

  /** The text's token ids, computed on the thread; calls are answered in order. */
  encode(text: string): Promise<number[]> {
    if (!this.alive) return Promise.reject(new Error('the tokenizer thread is not running'));
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ type: 'encode', id, text } satisfies ToTokenizer);
    });
  }

  /** Ends the thread once the texts it was given are tokenized; terminated after `timeoutMs`. */
  close(timeoutMs = 10_000): Promise<void> {
    this.#closing ??= this.#alive ? stopWorker(this.#worker, timeoutMs).then(() => undefined) : Promise.resolve();
    return this.#closing;
  }
}
