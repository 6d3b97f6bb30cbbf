// Start-up and stop of kvserve's worker threads (the engine, prefill and tokenizer workers),
// which share one protocol for both: the worker posts {type: 'ready', …} once it is loaded
// (its model, its tokenizer) or {type: 'fatal', message}; it ends by itself when sent
// {type: 'close'}.
import type { Worker } from 'node:worker_threads';

/**
 * Resolves with the worker's 'ready' message. A 'fatal' message, an error or an exit before
 * it rejects, after terminating the worker; `name` names it in the exit's message.
 */
export async function whenReady<Ready extends { type: 'ready' }>(worker: Worker, name: string): Promise<Ready> {
  const cleanup: Array<() => void> = [];
  try {
    return await new Promise<Ready>((resolve, reject) => {
      const onMessage = (msg: { type: string; message?: string }): void => {
        if (msg.type === 'ready') resolve(msg as Ready);
        else if (msg.type === 'fatal') reject(new Error(msg.message));
      };
      const onExit = (code: number): void => reject(new Error(`${name} exited with code ${code} during start-up`));
      // Only these listeners go: Worker.removeAllListeners() would stop message delivery.
      worker.on('message', onMessage).once('error', reject).once('exit', onExit);
      cleanup.push(() => worker.off('message', onMessage).off('error', reject).off('exit', onExit));
    }).finally(() => cleanup.forEach((fn) => fn()));
  } catch (err) {
    await worker.terminate();
    throw err;
  }
}

/**
 * Calls `gone` once the worker has exited, with why (its uncaught error, if any), for its
 * owner to fail the calls it was waiting on.
 */
export function onGone(worker: Worker, name: string, gone: (failure: string) => void): void {
  let failure = `the ${name} exited`;
  worker.on('error', (err) => {
    failure = `the ${name} failed: ${err.message}`;
  });
  worker.on('exit', () => gone(failure));
}

/**
 * Asks a running worker to stop and resolves with its exit code. Terminating it outright
 * could land inside an onnxruntime call, which aborts the whole process; it is terminated
 * only if it has not ended after `timeoutMs`.
 */
export function stopWorker(worker: Worker, timeoutMs: number): Promise<number> {
  return new Promise<number>((resolve) => {
    const timer = setTimeout(() => void worker.terminate(), timeoutMs);
    worker.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    worker.postMessage({ type: 'close' });
  });
}
