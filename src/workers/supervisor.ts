// Keeps an engine running: when any of its threads fails (engine, prefill, tier or tokenizer
// thread: EngineClient.onFailure), the failed client is closed and a new one started with the
// model loaded afresh. Too many failures in a window means restarting does not help: the
// supervisor gives up, and its owner exits non-zero so Docker or Kubernetes restart the process.
//
//   running ──thread fails──▶ restarting ──model loaded──▶ running     (restarts +1)
//                                 │ start fails: counts as a failure, retried after a pause
//                                 ▼ maxRestarts failures within restartWindowMs
//                              give up (onGiveUp)
import { setTimeout as delay } from 'node:timers/promises';

/** What the supervisor needs of an engine (EngineClient). */
export interface Supervised {
  onFailure(listener: (failure: string) => void): void;
  close(timeoutMs?: number): Promise<number>;
}

export interface SupervisorOptions<E extends Supervised> {
  /** Starts one engine (loads the model); rejects if it cannot. */
  start: () => Promise<E>;
  /** This many failures within `restartWindowMs` end supervision (onGiveUp). */
  maxRestarts: number;
  restartWindowMs: number;
  /** A new engine serves (the first one, then each restart). */
  onEngine: (engine: E, restart: boolean) => void;
  /** A thread failed; the engine is being restarted (requests in flight have ended). */
  onFailure?: (failure: string) => void;
  /** Too many failures: no more restarts. */
  onGiveUp: (failure: string) => void;
  /** Pause before retrying a restart whose start failed. */
  retryDelayMs?: number;
}

export class EngineSupervisor<E extends Supervised> {
  readonly #options: SupervisorOptions<E>;
  readonly #failures: number[] = [];
  #engine: E;
  #restarts = 0;
  #closed = false;
  #gaveUp = false;
  #restarting: Promise<void> | undefined;

  private constructor(options: SupervisorOptions<E>, engine: E) {
    this.#options = options;
    this.#engine = engine;
  }

  /** Starts the first engine; rejects (nothing to supervise) if it cannot start. */
  static async start<E extends Supervised>(options: SupervisorOptions<E>): Promise<EngineSupervisor<E>> {
    if (!Number.isInteger(options.maxRestarts) || options.maxRestarts < 1) throw new RangeError('maxRestarts must be a positive integer');
    const supervisor = new EngineSupervisor(options, await options.start());
    supervisor.#serve(false);
    return supervisor;
  }

  /** The engine serving now (not alive while it restarts). */
  get engine(): E {
    return this.#engine;
  }

  /** Restarts completed so far. */
  get restarts(): number {
    return this.#restarts;
  }

  /** True once too many failures ended supervision. */
  get gaveUp(): boolean {
    return this.#gaveUp;
  }

  /** Resolves once a restart under way has finished (or at once). */
  async settled(): Promise<void> {
    while (this.#restarting) await this.#restarting;
  }

  /** Stops supervising and closes the engine; resolves with the worker's exit code. */
  async close(timeoutMs?: number): Promise<number> {
    this.#closed = true;
    await this.#restarting;
    return this.#engine.close(timeoutMs);
  }

  #serve(restart: boolean): void {
    const engine = this.#engine;
    this.#options.onEngine(engine, restart);
    engine.onFailure((failure) => {
      if (this.#closed || engine !== this.#engine) return;
      this.#options.onFailure?.(failure);
      this.#restarting = this.#restart(engine, failure).finally(() => {
        this.#restarting = undefined;
      });
    });
  }

  /** Counts a failure; false once the budget is spent (after telling the owner). */
  #count(failure: string): boolean {
    const now = performance.now();
    this.#failures.push(now);
    while (this.#failures.length > 0 && now - this.#failures[0]! > this.#options.restartWindowMs) this.#failures.shift();
    if (this.#failures.length < this.#options.maxRestarts) return true;
    this.#gaveUp = true;
    this.#options.onGiveUp(`${this.#failures.length} engine failures within ${this.#options.restartWindowMs} ms; last: ${failure}`);
    return false;
  }

  async #restart(failed: E, failure: string): Promise<void> {
    if (!this.#count(failure)) return;
    // Whatever of the failed engine still runs (the tokenizer thread when the engine worker
    // died, or the reverse) ends before the new one loads: two models at once is what OOMs.
    await failed.close().catch(() => {});
    for (;;) {
      if (this.#closed) return;
      try {
        this.#engine = await this.#options.start();
        break;
      } catch (err) {
        if (!this.#count(`restart failed: ${(err as Error).message}`)) return;
        await delay(this.#options.retryDelayMs ?? 1000);
      }
    }
    if (this.#closed) {
      await this.#engine.close();
      return;
    }
    this.#restarts++;
    this.#serve(true);
  }
}
