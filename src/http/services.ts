// What the routes share, as the `services` decorator: configuration, metrics, the engine once
// it is ready (liveness answers while the model loads), the chat template, and the set of
// running generations (so shutdown can end them with a final chunk), and admission.
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { apiError } from '../errors.js';
import { type BuildInfo, Metrics } from '../metrics/metrics.js';
import { Admission, type TenantLimits } from './admission.js';
import { ChatTemplate } from '../runtime/chat-template.js';
import type { EngineClient } from '../workers/engine-client.js';

export class Services {
  readonly config: Readonly<Config>;
  readonly build: BuildInfo;
  readonly metrics: Metrics;
  readonly admission: Admission;
  #engine: EngineClient | undefined;
  #chat: ChatTemplate | undefined;
  #draining = false;
  readonly #active = new Set<AbortController>();

  constructor(config: Readonly<Config>, build: BuildInfo) {
    this.config = config;
    this.build = build;
    this.admission = new Admission(config.scheduler.maxRunning + config.scheduler.maxQueued);
    this.metrics = new Metrics({
      build,
      requestTimeoutMs: config.scheduler.requestTimeoutMs,
      engineStats: async () => (this.#engine?.alive ? this.#engine.stats() : undefined),
      ready: () => this.ready,
    });
  }

  /** The engine (re)started: this one serves from now on (readiness follows its liveness). */
  attach(engine: EngineClient): void {
    this.#engine = engine;
    this.#chat = new ChatTemplate(engine.info.chatTemplate, { eos_token: engine.tokenizer.eosToken });
    this.metrics.setModel(engine.info);
  }

  get ready(): boolean {
    return this.#engine?.alive === true && !this.#draining;
  }

  /** The engine, or a 503 while it is loading, stopped or the service is shutting down. */
  engine(): EngineClient {
    if (!this.#engine?.alive) throw apiError('not_ready', 'the model is not loaded yet or the engine stopped; retry shortly');
    if (this.#draining) throw apiError('not_ready', 'the server is shutting down');
    return this.#engine;
  }

  chatTemplate(): ChatTemplate {
    this.engine();
    return this.#chat!;
  }

  /**
   * Admits a generation of `tenant` now, on this thread, or throws 429 queue_full (counted as
   * a rejection); returns its release.
   */
  admit(tenant: string, limits?: TenantLimits): () => void {
    try {
      return this.admission.admit(tenant, this.engine().inFlight, limits);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'queue_full') this.metrics.rejected.inc({ reason: 'queue_full' });
      throw err;
    }
  }

  get running(): number {
    return this.#active.size;
  }

  track(controller: AbortController): () => void {
    this.#active.add(controller);
    return () => this.#active.delete(controller);
  }

  /** Refuse new generations from now on. */
  drain(): void {
    this.#draining = true;
  }

  /** Ends every running generation at its next step; its stream gets a final chunk. */
  abortAll(): void {
    for (const c of this.#active) c.abort();
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

export default fp(
  async (app: FastifyInstance, opts: { config: Readonly<Config>; build: BuildInfo }) => {
    app.decorate('services', new Services(opts.config, opts.build));
  },
  { name: 'kvserve-services', fastify: '5.x' },
);
