// Engine worker entry: onnxruntime's run() blocks its calling thread (~6 ms per step at a
// 1024-token past, design §2), so the model and the generation loop live here, off the
// HTTP thread. It loads the model, then serves generate/abort/ping messages.
import { parentPort, workerData } from 'node:worker_threads';
import { Engine, type EngineEvent } from '../core/generation/engine.js';
import { KvCacheManager } from '../core/kv/cache-manager.js';
import { loadModel } from '../runtime/load-model.js';
import { PrefillThread } from './prefill-thread.js';
import type { FromWorker, Rpc, RpcMethod, ToWorker, WorkerConfig } from './protocol.js';

const port = parentPort!;
const post = (msg: FromWorker): void => port.postMessage(msg);
const config = workerData as WorkerConfig;

// A batched step emits one event per running sequence: they leave together, in one message,
// once the step's synchronous work is done (the next model call is then already running).
let pending: EngineEvent[] = [];
const flush = (): void => {
  const events = pending;
  pending = [];
  post({ type: 'events', events });
};
const emit = (event: EngineEvent): void => {
  if (pending.length === 0) setImmediate(flush);
  pending.push(event);
};

try {
  const { decoder, tokenizer, info } = await loadModel(config.modelDir, config);
  const prefill = config.prefillThread ? await PrefillThread.start(info.onnxPath, info.vocabSize) : undefined;
  const { kvCache } = config;
  const cache = new KvCacheManager({ layout: info.layout, ...kvCache });
  const engine = new Engine(
    decoder,
    tokenizer,
    {
      eosIds: info.eosIds,
      contextLength: info.contextLength,
      cache,
      admissionTimeoutMs: kvCache.admissionTimeoutMs,
      limits: config.scheduler,
      prefillModel: prefill,
    },
    emit,
  );
  // Idle sessions expire even when no request arrives to trigger the sweep.
  setInterval(() => cache.expireSessions(), Math.min(kvCache.sessionTtlMs, 1000)).unref();
  const methods: { [M in RpcMethod]: (...args: Rpc[M][0]) => Rpc[M][1] } = {
    ping: () => true,
    stats: () => ({ cache: cache.snapshot(), running: engine.running, waiting: engine.waiting, steps: engine.stepStats() }),
    sessions: (tenant) => cache.sessions(tenant),
    session: (tenant, id) => cache.session(tenant, id) ?? null,
    deleteSession: (tenant, id) => cache.deleteSession(tenant, id),
  };
  let closing = false;
  port.on('message', (msg: ToWorker) => {
    switch (msg.type) {
      case 'generate': {
        const fail = (error: string): void => {
          const usage = { promptTokens: msg.request.promptIds.length, completionTokens: 0, cachedTokens: 0 };
          emit({ type: 'done', id: msg.id, finishReason: 'error', text: '', usage, error, errorCode: 'internal' });
        };
        if (closing) {
          fail('the engine is shutting down');
          break;
        }
        try {
          engine.submit(msg.id, msg.request);
        } catch (err) {
          fail((err as Error).message);
        }
        break;
      }
      case 'abort':
        engine.abort(msg.id);
        break;
      case 'close':
        // The thread must not be terminated inside an onnxruntime call (that aborts the whole
        // process): the running step finishes, the model is released, and with nothing left
        // to do the thread ends by itself once the port is closed.
        if (closing) break;
        closing = true;
        engine.abortAll();
        void engine
          .idle()
          .then(() => Promise.all([decoder.close(), prefill?.close()]))
          .finally(() => {
            if (pending.length > 0) flush();
            port.close();
          });
        break;
      case 'call': {
        const call = methods[msg.method] as (...args: unknown[]) => unknown;
        post({ type: 'result', id: msg.id, result: call(...msg.args) });
        break;
      }
    }
  });
  post({ type: 'ready', info });
} catch (err) {
  post({ type: 'fatal', message: (err as Error).message });
}
