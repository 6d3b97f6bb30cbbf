// The worker side of a WorkerChannel (channel.ts): answers calls in arrival order, hands other
// messages to the worker's own handler, posts the start-up handshake, and ends the thread
// gracefully on {type: 'close'} once the calls already received are answered.
import { parentPort } from 'node:worker_threads';
import type { CallMessage, Calls, ReplyMessage } from './protocol.js';

/** A call's result with the buffers to hand over rather than copy. */
export class Transfer<T> {
  constructor(
    readonly value: T,
    readonly list: ArrayBuffer[],
  ) {}
}

export type Handlers<C extends Calls> = {
  [M in keyof C]: (...args: C[M][0]) => C[M][1] | Transfer<C[M][1]> | Promise<C[M][1] | Transfer<C[M][1]>>;
};

export interface ServeOptions<In> {
  /** Messages other than calls and close. */
  onMessage?: (msg: In) => void;
  /** Runs on close, after the calls already received: release what the worker holds. */
  onClose?: () => void | Promise<void>;
}

export interface WorkerPort<Out> {
  /** Posts a message to the main thread (events), handing `transfer` over. */
  post(msg: Out | ReplyMessage, transfer?: ArrayBuffer[]): void;
}

const port = () => {
  if (!parentPort) throw new Error('serve() runs in a worker thread');
  return parentPort;
};

/**
 * Starts serving: calls are answered one at a time in arrival order (a prefill call is
 * async, and its caller expects its results in order).
 */
export function serve<C extends Calls, In = never, Out = never>(handlers: Handlers<C>, options: ServeOptions<In> = {}): WorkerPort<Out> {
  const p = port();
  const post = (msg: Out | ReplyMessage, transfer: ArrayBuffer[] = []): void => p.postMessage(msg, transfer);
  let queue: Promise<void> = Promise.resolve();
  let closing = false;
  p.on('message', (msg: CallMessage | { type: 'close' } | In) => {
    const m = msg as CallMessage | { type: 'close' };
    if (m.type === 'call') {
      queue = queue.then(() => answer(handlers, m, post));
    } else if (m.type === 'close') {
      if (closing) return;
      closing = true;
      // Once the port is closed and nothing else holds the loop, the thread ends by itself.
      queue = queue.then(async () => {
        try {
          await options.onClose?.();
        } finally {
          p.close();
        }
      });
    } else {
      options.onMessage?.(msg as In);
    }
  });
  return { post };
}

async function answer<C extends Calls>(handlers: Handlers<C>, msg: CallMessage, post: (msg: ReplyMessage, transfer?: ArrayBuffer[]) => void): Promise<void> {
  try {
    const handler = handlers[msg.method as keyof C];
    if (!handler) throw new Error(`unknown method ${msg.method}`);
    const out = await (handler as (...args: unknown[]) => unknown)(...msg.args);
    if (out instanceof Transfer) post({ type: 'result', id: msg.id, value: out.value }, out.list);
    else post({ type: 'result', id: msg.id, value: out });
  } catch (err) {
    post({ type: 'error', id: msg.id, message: (err as Error).message });
  }
}

/** The start-up handshake: the worker is loaded (`ready`) or cannot start (`fatal`). */
export function ready<R extends object>(info: R): void {
  port().postMessage({ type: 'ready', ...info });
}

export function fatal(err: unknown): void {
  port().postMessage({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
}
