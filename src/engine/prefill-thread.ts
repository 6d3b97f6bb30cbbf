// The prefill thread: the same model opened a second time, in a worker thread of its own,
// so that newcomers' prompts are computed beside the decode steps instead of between them
// (Engine #offload). Started by the engine worker; one call at a time.
//
//   engine worker ──{forward: ids, positions, past (copied, transferred)}──▶ prefill worker
//                 ◀──{logits, new keys and values (transferred)}──────────  (one-thread session)
import { Worker } from 'node:worker_threads';
import type { ForwardInput, ForwardOutput, PrefillModel } from '../core/generation/model.js';
import type { KvData, KvLayout } from '../core/kv/layout.js';
import { onGone, stopWorker, whenReady } from './worker-lifecycle.js';

const fromSource = import.meta.url.endsWith('.ts');
const workerUrl = new URL(fromSource ? './worker-from-source.mjs' : './prefill-worker.js', import.meta.url);

export interface PrefillWorkerData {
  onnxPath: string;
  /** Used when the graph's logits shape does not give it. */
  vocabSize: number;
}

/** Messages to the prefill worker. */
export type ToPrefill = { type: 'forward'; id: number; input: Omit<ForwardInput, 'singleThread'> } | { type: 'close' };

/** Messages from the prefill worker. */
export type FromPrefill =
  | { type: 'ready'; layout: KvLayout; vocabSize: number }
  | { type: 'fatal'; message: string }
  /** logits: batch × seqLen rows, or batch rows (each row's last position) with lastLogitsOnly. */
  | { type: 'result'; id: number; logits: Float32Array; newKv: KvData[] }
  | { type: 'error'; id: number; message: string };

interface Pending {
  resolve: (out: ForwardOutput) => void;
  reject: (err: Error) => void;
  seqLen: number;
  lastOnly: boolean;
}

export class PrefillThread implements PrefillModel {
  readonly layout: KvLayout;
  readonly vocabSize: number;
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #next = 0;
  #alive = true;
  #closing: Promise<void> | undefined;

  private constructor(worker: Worker, layout: KvLayout, vocabSize: number) {
    this.#worker = worker;
    this.layout = layout;
    this.vocabSize = vocabSize;
    worker.on('message', (msg: FromPrefill) => {
      if (msg.type !== 'result' && msg.type !== 'error') return;
      const call = this.#pending.get(msg.id);
      if (!call) return;
      this.#pending.delete(msg.id);
      if (msg.type === 'error') return call.reject(new Error(msg.message));
      const { logits, newKv } = msg;
      const { seqLen, lastOnly } = call;
      const vocab = this.vocabSize;
      call.resolve({
        newKv,
        logits: (b, s) => {
          if (lastOnly && s !== seqLen - 1) throw new RangeError(`only the last position's logits were kept (asked for ${s} of ${seqLen})`);
          const row = lastOnly ? b : b * seqLen + s;
          return logits.subarray(row * vocab, (row + 1) * vocab);
        },
      });
    });
    // A thread that fails must not take the engine with it: its calls fail, and the engine
    // prefills inline from then on (`alive`).
    onGone(worker, 'prefill thread', (failure) => {
      this.#alive = false;
      for (const call of this.#pending.values()) call.reject(new Error(failure));
      this.#pending.clear();
    });
  }

  /** Starts the thread; resolves once its model is loaded. */
  static async start(onnxPath: string, vocabSize: number): Promise<PrefillThread> {
    const worker = new Worker(workerUrl, {
      workerData: { onnxPath, vocabSize } satisfies PrefillWorkerData,
      argv: ['./prefill-worker.ts'],
      execArgv: [],
    });
    const ready = await whenReady<Extract<FromPrefill, { type: 'ready' }>>(worker, 'prefill thread');
    return new PrefillThread(worker, ready.layout, ready.vocabSize);
  }

  get alive(): boolean {
    return this.#alive;
  }

  forward(input: ForwardInput): Promise<ForwardOutput> {
    if (!this.#alive || this.#closing) return Promise.reject(new Error('the prefill thread is not running'));
    const id = this.#next++;
    // Exact-size copies, handed over without a second copy: a view's whole buffer would
    // otherwise be cloned, and the caller's cache must not be detached.
    const past = input.past.map((t) => t.slice());
    const msg: ToPrefill = {
      type: 'forward',
      id,
      input: {
        batch: input.batch,
        seqLen: input.seqLen,
        pastLength: input.pastLength,
        inputIds: Array.from(input.inputIds),
        positionIds: Array.from(input.positionIds),
        ...(input.pastValid ? { pastValid: Array.from(input.pastValid) } : {}),
        past,
        ...(input.lastLogitsOnly ? { lastLogitsOnly: true } : {}),
      },
    };
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, seqLen: input.seqLen, lastOnly: input.lastLogitsOnly === true });
      this.#worker.postMessage(
        msg,
        past.map((t) => t.buffer as ArrayBuffer),
      );
    });
  }

  /**
   * Ends the thread once its call in progress is done (terminating it inside an onnxruntime
   * call would abort the process); terminated anyway after `timeoutMs`.
   */
  close(timeoutMs = 10_000): Promise<void> {
    this.#closing ??= this.#alive ? stopWorker(this.#worker, timeoutMs).then(() => undefined) : Promise.resolve();
    return this.#closing;
  }
}
