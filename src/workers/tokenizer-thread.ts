// The tokenizer thread: long texts are tokenized in a worker thread of their own, so that the
// HTTP thread keeps streaming while they are (tokenizing is synchronous JavaScript; a
// megabyte of text holds a thread for most of a second). Short texts, the common case, stay
// on the HTTP thread (EngineClient.encode): a round trip costs more than they take.
//
//   HTTP thread ──{encode: text}──▶ tokenizer worker ──{ids (transferred)}──▶ HTTP thread
import { WorkerChannel } from './channel.js';
import type { TokenizerCalls, TokenizerWorkerData } from './protocol.js';

export class TokenizerThread {
  readonly #channel: WorkerChannel<TokenizerCalls>;

  private constructor(channel: WorkerChannel<TokenizerCalls>) {
    this.#channel = channel;
  }

  /** Starts the thread; resolves once its tokenizer is built. */
  static async start(data: TokenizerWorkerData): Promise<TokenizerThread> {
    const { channel } = await WorkerChannel.start<TokenizerCalls, { type: 'ready' }>({ name: 'tokenizer thread', entry: 'tokenizer-worker', workerData: data });
    return new TokenizerThread(channel);
  }

  /** False once the thread has gone or is closing: texts are then tokenized on the HTTP thread. */
  get alive(): boolean {
    return this.#channel.alive;
  }

  /** Calls `listener(failure)` once the thread has ended, whether asked to or not. */
  onExit(listener: (failure: string) => void): void {
    this.#channel.onExit(listener);
  }

  /** Ends the thread at once (a test's crash; it holds no native call that this could cut). */
  terminate(): Promise<number> {
    return this.#channel.terminate();
  }

  /** The text's token ids, computed on the thread; calls are answered in order. */
  async encode(text: string): Promise<number[]> {
    return Array.from(await this.#channel.call('encode', [text]));
  }

  /** Ends the thread once the texts it was given are tokenized; terminated after `timeoutMs`. */
  async close(timeoutMs = 10_000): Promise<void> {
    await this.#channel.close(timeoutMs);
  }
}
