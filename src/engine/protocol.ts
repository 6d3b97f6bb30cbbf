// Messages between the HTTP thread and the engine worker (structured-clone plain objects).
import type { EngineEvent, SchedulerLimits } from '../core/generation/engine.js';
import type { SessionInfo } from '../core/kv/cache-manager.js';
import type { EngineStats } from '../metrics/metrics.js';
import type { GenerateRequest } from '../core/generation/sequence.js';
import type { ModelInfo } from '../runtime/load-model.js';

export interface WorkerConfig {
  modelDir: string;
  onnxFile?: string | undefined;
  threads?: number | undefined;
  decodeThreads?: number | undefined;
  kvCache: {
    maxBytes: number;
    blockSize: number;
    sessionTtlMs: number;
    admissionTimeoutMs: number;
  };
  scheduler: SchedulerLimits;
  /** Start the prefill thread (src/engine/prefill-thread.ts). */
  prefillThread: boolean;
}

/** Request/response calls to the worker: method → [arguments, result]. */
export interface Rpc {
  ping: [[], true];
  stats: [[], EngineStats];
  sessions: [[tenant: string], SessionInfo[]];
  session: [[tenant: string, id: string], SessionInfo | null];
  deleteSession: [[tenant: string, id: string], boolean];
}
export type RpcMethod = keyof Rpc;

export type ToWorker =
  | { type: 'generate'; id: string; request: GenerateRequest }
  | { type: 'abort'; id: string }
  /** Stop: abort everything, finish the step, release the model, end the thread. */
  | { type: 'close' }
  | { [M in RpcMethod]: { type: 'call'; id: string; method: M; args: Rpc[M][0] } }[RpcMethod];

export type FromWorker =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'fatal'; message: string }
  | { type: 'result'; id: string; result: unknown }
  /** Engine events in emission order (one message per scheduler step). */
  | { type: 'events'; events: EngineEvent[] };
