// The prefill thread: the same model opened a second time, in a worker thread of its own,
// so that newcomers' prompts are computed beside the decode steps instead of between them
// (StepLoop's offload). Started by the engine worker; one call at a time.
//
//   engine worker ──{forward: ids, positions, past (copied, transferred)}──▶ prefill worker
//                 ◀──{logits, new keys and values (transferred)}──────────  (one-thread session)
import type { ForwardInput, ForwardOutput, PrefillModel } from '../core/model.js';
import type { KvLayout } from '../core/kv/layout.js';
import { WorkerChannel } from './channel.js';
import type { PrefillCalls, PrefillReady, PrefillWorkerData } from './protocol.js';

export class PrefillThread implements PrefillModel {
  readonly layout: KvLayout;
  readonly vocabSize: number;
  readonly #channel: WorkerChannel<PrefillCalls>;

  private constructor(channel: WorkerChannel<PrefillCalls>, ready: PrefillReady) {
    this.#channel = channel;
    this.layout = ready.layout;
    this.vocabSize = ready.vocabSize;
  }

  /** Starts the thread; resolves once its model is loaded. */
  static async start(onnxPath: string, vocabSize: number, prepack?: boolean): Promise<PrefillThread> {
    const { channel, ready } = await WorkerChannel.start<PrefillCalls, PrefillReady>({
      name: 'prefill thread',
      entry: 'prefill-worker',
      workerData: { onnxPath, vocabSize, prepack } satisfies PrefillWorkerData,
    });
    return new PrefillThread(channel, ready);
  }

  /** False once the thread has gone (its calls fail, and the engine prefills inline from then on). */
  get alive(): boolean {
    return this.#channel.alive;
  }

  /** Calls `listener(failure)` once the thread has ended, whether asked to or not. */
  onExit(listener: (failure: string) => void): void {
    this.#channel.onExit(listener);
  }

  async forward(input: ForwardInput): Promise<ForwardOutput> {
    // Exact-size copies, handed over without a second copy: a view's whole buffer would
    // otherwise be cloned, and the caller's cache must not be detached.
    const past = input.past.map((t) => t.slice());
    const { logits, newKv } = await this.#channel.call(
      'forward',
      [
        {
          batch: input.batch,
          seqLen: input.seqLen,
          pastLength: input.pastLength,
          inputIds: Array.from(input.inputIds),
          positionIds: Array.from(input.positionIds),
          ...(input.pastValid ? { pastValid: Array.from(input.pastValid) } : {}),
          past,
          ...(input.lastLogitsOnly ? { lastLogitsOnly: true } : {}),
        },
      ],
      { transfer: past.map((t) => t.buffer as ArrayBuffer) },
    );
    const { seqLen } = input;
    const lastOnly = input.lastLogitsOnly === true;
    const vocab = this.vocabSize;
    return {
      newKv,
      logits: (b, s) => {
        if (lastOnly && s !== seqLen - 1) throw new RangeError(`only the last position's logits were kept (asked for ${s} of ${seqLen})`);
        const row = lastOnly ? b : b * seqLen + s;
        return logits.subarray(row * vocab, (row + 1) * vocab);
      },
    };
  }

  /** Ends the thread once its call in progress is done; terminated anyway after `timeoutMs`. */
  async close(timeoutMs = 10_000): Promise<void> {
    await this.#channel.close(timeoutMs);
  }
}
