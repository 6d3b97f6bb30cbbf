// Histograms kept where the observations happen (the engine worker, which has no prom-client
// registry), shipped to /metrics as snapshots and exported there as they are (external.ts),
// and the bucket bounds every kvserve histogram uses.

export interface BucketSnapshot {
  /** Upper bounds, inclusive (Prometheus `le`); a final +Inf bucket is implied. */
  bounds: readonly number[];
  /** Observations per bucket (not cumulative), bounds.length + 1 entries. */
  counts: number[];
  /** Sum of every observed value. */
  sum: number;
}

export class BucketHistogram {
  readonly bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;

  constructor(bounds: readonly number[]) {
    for (let i = 1; i < bounds.length; i++) {
      if (!(bounds[i]! > bounds[i - 1]!)) throw new RangeError('bucket bounds must increase');
    }
    this.bounds = bounds;
    this.#counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.#counts[i]!++;
    this.#sum += value;
  }

  snapshot(): BucketSnapshot {
    return { bounds: this.bounds, counts: [...this.#counts], sum: this.#sum };
  }
}

/**
 * Latency buckets (seconds) from 100 µs — one decode step of a small model takes well under a
 * millisecond — to five minutes, the default request timeout.
 */
export const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 120, 300,
];

/** LATENCY_BUCKETS reaching at least `maxSeconds` (a request timeout configured longer than five minutes). */
export function latencyBuckets(maxSeconds: number): number[] {
  const last = LATENCY_BUCKETS[LATENCY_BUCKETS.length - 1]!;
  return maxSeconds > last ? [...LATENCY_BUCKETS, maxSeconds] : [...LATENCY_BUCKETS];
}

/** Garbage-collection pauses (seconds). */
export const GC_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** Sequences per model step. */
export const BATCH_SIZE_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64];
