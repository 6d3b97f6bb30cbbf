// Every metric kvserve exports, defined once: name, help, labels, buckets. Names are an
// interface (dashboards and alerts depend on them): kvserve's own carry the kvserve_ prefix,
// units in names, counters end in _total; Node's process metrics keep prom-client's standard
// names. Each app instance has its own Registry, so two in one process never collide.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineErrorCode, FinishReason } from '../core/scheduler/events.js';
import type { ModelInfo } from '../runtime/load-model.js';
import type { EngineStats } from '../workers/protocol.js';
import { latencyBuckets } from './buckets.js';
import { registerEngineMetrics } from './engine-metrics.js';
import { ScrapeSource } from './external.js';

/** Why the engine refuses a request before it runs (kvserve_requests_rejected_total{reason}). */
export const REJECT_REASONS = [
  'queue_full',
  'kv_cache_full',
  'kv_budget_exceeded',
  'invalid_request',
  'request_timeout',
  'not_ready',
] as const satisfies readonly EngineErrorCode[];

export interface BuildInfo {
  version: string;
  /** The source revision (git commit), or 'unknown'. */
  revision: string;
  node: string;
  onnxruntime: string;
}

export interface MetricsOptions {
  build: BuildInfo;
  /** The engine's figures at scrape time (undefined while it is not running). */
  engineStats: () => Promise<EngineStats | undefined>;
  /** Whether the service is ready (the readiness probe's answer), read at scrape time. */
  ready: () => boolean;
  /** The latency histograms reach this far. */
  requestTimeoutMs: number;
}

export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'status'>;
  readonly tenantRequests: Counter<'tenant' | 'status'>;
  readonly aborted: Counter;
  readonly finished: Counter<'reason'>;
  readonly rejected: Counter<'reason'>;
  readonly timeToFirstToken: Histogram;
  readonly interTokenLatency: Histogram;
  readonly requestDuration: Histogram;
  readonly queueTime: Histogram;
  readonly promptTokens: Counter;
  readonly generatedTokens: Counter;
  readonly engineRestarts: Counter;
  readonly #modelInfo: Gauge<'model' | 'dtype' | 'layers' | 'kv_heads' | 'head_dim' | 'context_length'>;

  constructor(options: MetricsOptions) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // prom-client names these gauges *_total, which Prometheus reserves for counters
    // (promtool check metrics rejects them); the other process metrics remain.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      this.registry.removeSingleMetric(name);
    }
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Counter<L>({ name, help, labelNames, registers });
    const buckets = latencyBuckets(options.requestTimeoutMs / 1000);
    const histogram = (name: string, help: string) => new Histogram({ name, help, buckets, registers });

    this.requests = counter('kvserve_requests_total', 'HTTP requests by route and status code.', ['route', 'status']);
    this.tenantRequests = counter('kvserve_tenant_requests_total', "Requests to the API's tenant routes, by tenant (from the key file) and status code.", [
      'tenant',
      'status',
    ]);
    this.aborted = counter('kvserve_requests_aborted_total', 'Generations aborted (client gone or shutdown).');
    this.finished = counter('kvserve_request_finish_total', 'Generations finished, by finish reason.', ['reason']);
    this.rejected = counter('kvserve_requests_rejected_total', 'Generations refused before running, by reason.', ['reason']);
    this.timeToFirstToken = histogram('kvserve_time_to_first_token_seconds', 'From request arrival to the first generated text.');
    this.interTokenLatency = histogram('kvserve_inter_token_latency_seconds', 'Between successive streamed text deltas of one request.');
    this.requestDuration = histogram('kvserve_request_duration_seconds', 'From request arrival to the end of the response, generation requests only.');
    this.queueTime = histogram('kvserve_queue_time_seconds', 'Time a generation waited for admission (KV room) before it ran.');
    this.promptTokens = counter('kvserve_prompt_tokens_total', 'Prompt tokens of generation requests.');
    this.generatedTokens = counter('kvserve_generated_tokens_total', 'Tokens generated.');
    this.engineRestarts = counter('kvserve_engine_restarts_total', 'Engine restarts after a worker thread failed (the model reloaded).');

    const build = new Gauge({
      name: 'kvserve_build_info',
      help: 'The running build (value 1): kvserve version, source revision, Node.js and onnxruntime versions.',
      labelNames: ['version', 'revision', 'node', 'onnxruntime'],
      registers,
    });
    build.set({ ...options.build }, 1);
    this.#modelInfo = new Gauge({
      name: 'kvserve_model_info',
      help: 'The served model (value 1): its id, KV dtype, layers, KV heads, head size and context length.',
      labelNames: ['model', 'dtype', 'layers', 'kv_heads', 'head_dim', 'context_length'],
      registers,
    });

    new Gauge({
      name: 'kvserve_ready',
      help: 'Whether the service is ready to generate (1) or not (0: the model is loading, the engine stopped, or it is shutting down).',
      registers,
      collect() {
        this.set(options.ready() ? 1 : 0);
      },
    });

    for (const reason of ['stop', 'length', 'abort', 'error'] satisfies FinishReason[]) this.finished.inc({ reason }, 0);
    for (const reason of REJECT_REASONS) this.rejected.inc({ reason }, 0);
    registerEngineMetrics(this.registry, new ScrapeSource(options.engineStats));
  }

  /** Describes the model once it is loaded (kvserve_model_info). */
  setModel(info: ModelInfo): void {
    const { layout } = info;
    this.#modelInfo.reset();
    this.#modelInfo.set(
      { model: info.id, dtype: layout.dtype, layers: layout.layers, kv_heads: layout.kvHeads, head_dim: layout.headDim, context_length: info.contextLength },
      1,
    );
  }
}
