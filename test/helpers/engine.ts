// Drives the in-process Scheduler on the real model and collects each request's events.
import type { EngineEvent, SchedulerLimits } from '../../src/core/scheduler/events.js';
import { Scheduler } from '../../src/core/scheduler/scheduler.js';
import type { PrefillModel } from '../../src/core/model.js';
import type { GenerateRequest } from '../../src/core/scheduler/sequence.js';
import { defaultSampling, type SamplingParams } from '../../src/core/sampling/params.js';
import type { LoadedModel } from '../../src/runtime/load-model.js';
import { KvCacheManager } from '../../src/core/kv/cache-manager.js';

export interface Result {
  deltas: string[];
  text: string;
  done: Extract<EngineEvent, { type: 'done' }>;
}

export const greedy: SamplingParams = { ...defaultSampling, temperature: 0 };

export class EngineHarness {
  readonly engine: Scheduler;
  readonly #model: LoadedModel;
  readonly #listeners = new Map<string, (e: EngineEvent) => void>();
  #next = 0;

  constructor(
    model: LoadedModel,
    overrides: {
      eosIds?: number[];
      contextLength?: number;
      cache?: KvCacheManager;
      admissionTimeoutMs?: number;
      limits?: Partial<SchedulerLimits>;
      prefillModel?: PrefillModel;
    } = {},
  ) {
    this.#model = model;
    const cache = overrides.cache ?? new KvCacheManager({ layout: model.info.layout, maxBytes: 64 * 2 ** 20, blockSize: 16, sessionTtlMs: 60_000 });
    this.engine = new Scheduler(
      model.decoder,
      model.tokenizer,
      {
        eosIds: overrides.eosIds ?? model.info.eosIds,
        contextLength: overrides.contextLength ?? model.info.contextLength,
        cache,
        admissionTimeoutMs: overrides.admissionTimeoutMs ?? 1000,
        limits: { maxRunning: 16, maxQueued: 64, maxPrefillTokensPerStep: 256, requestTimeoutMs: 60_000, ...overrides.limits },
        prefillModel: overrides.prefillModel,
      },
      (e) => this.#listeners.get(e.id)?.(e),
    );
  }

  /** Submits a request; `onDelta` sees each delta as it is emitted. */
  start(prompt: string, req: Partial<GenerateRequest> = {}, onDelta?: (text: string, id: string) => void): { id: string; result: Promise<Result> } {
    const id = `req-${this.#next++}`;
    const deltas: string[] = [];
    const result = new Promise<Result>((resolve) => {
      this.#listeners.set(id, (e) => {
        if (e.type === 'admitted') return;
        if (e.type === 'delta') {
          deltas.push(e.text);
          onDelta?.(e.text, id);
        } else {
          if (e.text) deltas.push(e.text);
          this.#listeners.delete(id);
          resolve({ deltas, text: deltas.join(''), done: e });
        }
      });
    });
    this.engine.submit(id, {
      promptIds: this.#model.tokenizer.encode(prompt),
      maxTokens: 64,
      sampling: greedy,
      ...req,
    });
    return { id, result };
  }

  run(prompt: string, req: Partial<GenerateRequest> = {}): Promise<Result> {
    return this.start(prompt, req).result;
  }
}
