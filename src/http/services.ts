// What the routes share: configuration, the engine once it is ready, the chat template, and
// the set of running generations (so shutdown can end them with a final chunk).
import type { Config } from '../config.js';
import type { EngineClient } from '../engine/client.js';
import { apiError } from '../errors.js';
import { Metrics } from '../metrics/metrics.js';
import { ChatTemplate } from '../runtime/chat-template.js';

/** The isolation key of requests: one tenant until authentication names more. */
export const DEFAULT_TENANT = 'default';

export class Services {
  readonly config: Readonly<Config>;
  readonly metrics = new Metrics();
  #engine: EngineClient | undefined;
  #chat: ChatTemplate | undefined;
  #draining = false;
  readonly #active = new Set<AbortController>();

  constructor(config: Readonly<Config>) {
    this.config = config;
  }

  attach(engine: EngineClient): void {
    this.#engine = engine;
    this.#chat = new ChatTemplate(engine.info.chatTemplate, { eos_token: engine.tokenizer.eosToken });
  }

  get ready(): boolean {
    return this.#engine !== undefined && this.#engine.alive && !this.#draining;
  }

  /** The engine, or a 503 while it is loading, stopped or the service is shutting down. */
  engine(): EngineClient {
    if (!this.#engine?.alive) throw apiError('not_ready', 'the model is not loaded yet or the engine stopped; retry shortly', null, { 'Retry-After': '1' });
    if (this.#draining) throw apiError('not_ready', 'the server is shutting down', null, { 'Retry-After': '1' });
    return this.#engine;
  }

  chatTemplate(): ChatTemplate {
    this.engine();
    return this.#chat!;
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
