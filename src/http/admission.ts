// Admission of generations on the HTTP thread, synchronously, before anything is sent: a
// request the engine could not queue is refused here with 429 + Retry-After, a status an
// OpenAI SDK retries — never as an error event inside a 200 stream (the engine answers
// asynchronously, after the stream may have opened).
//
//   in flight = generations this thread has handed to the engine and not yet seen end
//   refuse when  in flight ≥ maxRunning + maxQueued       (the engine's own queue limit)
//           or   the tenant's in flight ≥ its maxRequests  (when its limits name one)
import { apiError } from '../errors.js';

/** Per-tenant limits (from the API key file once authentication names tenants). */
export interface TenantLimits {
  /** Running + queued generations of this tenant at once. */
  maxRequests?: number | undefined;
}

export class Admission {
  readonly #capacity: number;
  readonly #byTenant = new Map<string, number>();
  #inFlight = 0;

  /** `capacity`: generations running or queued at once (scheduler.maxRunning + maxQueued). */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`admission capacity must be a positive integer, got ${capacity}`);
    this.#capacity = capacity;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Admits one generation of `tenant` or throws the 429 refusal. `engineInFlight` is what the
   * engine still holds (aborted requests stay there until its next step), so both counts must
   * have room. Returns the release, to call exactly once when the generation has ended.
   */
  admit(tenant: string, engineInFlight: number, limits: TenantLimits = {}): () => void {
    const held = Math.max(this.#inFlight, engineInFlight);
    if (held >= this.#capacity) {
      throw apiError('queue_full', `the server is at capacity: ${held} requests running or queued (limit ${this.#capacity}); retry shortly`);
    }
    const mine = this.#byTenant.get(tenant) ?? 0;
    if (limits.maxRequests !== undefined && mine >= limits.maxRequests) {
      // Same status and Retry-After as the global limit: a client retries both alike.
      throw apiError('queue_full', `tenant ${tenant} has ${mine} requests running or queued, its limit; retry shortly`);
    }
    this.#inFlight++;
    this.#byTenant.set(tenant, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inFlight--;
      const left = (this.#byTenant.get(tenant) ?? 1) - 1;
      if (left === 0) this.#byTenant.delete(tenant);
      else this.#byTenant.set(tenant, left);
    };
  }
}
