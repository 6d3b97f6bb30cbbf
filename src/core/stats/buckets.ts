// A histogram kept where the observations happen (the engine worker, which has no
// prom-client registry) and shipped to /metrics as cumulative counts. Each bucket also keeps
// the sum of its values: the HTTP thread replays a bucket's new observations at their mean,
// which lies inside the bucket, so the exported bucket counts and _sum are both exact.

export interface BucketSnapshot {
  /** Upper bounds, inclusive (Prometheus `le`); a final +Inf bucket is implied. */
  bounds: readonly number[];
  /** Observations per bucket (not cumulative), bounds.length + 1 entries. */
  counts: number[];
  /** Sum of the observed values per bucket. */
  sums: number[];
}

export class BucketHistogram {
  readonly bounds: readonly number[];
  readonly #counts: number[];
  readonly #sums: number[];

  constructor(bounds: readonly number[]) {
    for (let i = 1; i < bounds.length; i++) {
      if (!(bounds[i]! > bounds[i - 1]!)) throw new RangeError('bucket bounds must increase');
    }
    this.bounds = bounds;
    this.#counts = new Array<number>(bounds.length + 1).fill(0);
    this.#sums = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.#counts[i]!++;
    this.#sums[i]! += value;
  }

  snapshot(): BucketSnapshot {
    return { bounds: this.bounds, counts: [...this.#counts], sums: [...this.#sums] };
  }
}

/**
 * The observations in `now` that `last` (an earlier snapshot of the same histogram) did not
 * have, as (value, count) pairs: each bucket's new observations at their mean value.
 */
export function newObservations(now: BucketSnapshot, last: BucketSnapshot | undefined): Array<[value: number, count: number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < now.counts.length; i++) {
    const count = now.counts[i]! - (last?.counts[i] ?? 0);
    if (count <= 0) continue;
    let mean = (now.sums[i]! - (last?.sums[i] ?? 0)) / count;
    // Rounding must not carry the mean across a bound.
    const lo = now.bounds[i - 1] ?? -Infinity;
    const hi = now.bounds[i] ?? Infinity;
    if (mean > hi || mean <= lo) mean = hi === Infinity ? lo * (1 + 1e-12) + 1e-12 : hi;
    out.push([mean, count]);
  }
  return out;
}

/** Latency buckets that resolve single milliseconds up to a minute (seconds). */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60];

/** Sequences per model step. */
export const BATCH_SIZE_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64];
