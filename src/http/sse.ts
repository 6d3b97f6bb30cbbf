// Server-Sent Events over a raw Node response:
//
//   HTTP/1.1 200  Content-Type: text/event-stream  Cache-Control: no-cache  X-Accel-Buffering: no
//   : ping\n\n                      (every heartbeatMs until the first event)
//   data: {"id":…,"choices":[…]}\n\n  (one per text delta)
//   data: [DONE]\n\n
//
// Writes respect backpressure: when the socket's buffer is full, send() waits for 'drain',
// so a slow reader holds the generation back instead of growing a buffer here.
import type { ServerResponse } from 'node:http';

export interface SseOptions {
  heartbeatMs: number;
  /** A reader that takes no bytes for this long is dropped. */
  writeTimeoutMs: number;
}

export class SseStream {
  readonly #res: ServerResponse;
  readonly #options: SseOptions;
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(res: ServerResponse, options: SseOptions, headers: Record<string, string> = {}) {
    this.#res = res;
    this.#options = options;
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
      ...headers,
    });
    res.flushHeaders();
    this.#heartbeat = setInterval(() => this.#write(': ping\n\n'), options.heartbeatMs);
    this.#heartbeat.unref();
  }

  /** True once the client has gone or the stream was ended. */
  get closed(): boolean {
    return this.#res.destroyed || this.#res.writableEnded;
  }

  async send(data: unknown): Promise<void> {
    this.#stopHeartbeat();
    if (!this.#write(`data: ${JSON.stringify(data)}\n\n`)) await this.#drain();
  }

  end(): void {
    this.#stopHeartbeat();
    if (!this.closed) this.#res.end('data: [DONE]\n\n');
  }

  #stopHeartbeat(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  #write(text: string): boolean {
    return this.closed ? true : this.#res.write(text);
  }

  #drain(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#res.off('drain', done).off('close', done);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#res.destroy(new Error('SSE reader stalled'));
        done();
      }, this.#options.writeTimeoutMs);
      this.#res.once('drain', done).once('close', done);
    });
  }
}
