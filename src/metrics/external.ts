// Metrics whose values live elsewhere (the engine worker) and are read at scrape time. Each is
// a prom-client metric object (name, help, type, get()) registered with the registry, whose
// get() reads the latest figures: counters and histograms are exported exactly as the worker
// counted them, with no deltas kept or observations replayed on this side.
import type { Registry } from 'prom-client';
import type { BucketSnapshot } from './buckets.js';

type Labels = Record<string, string | number>;

/** One exposition line's worth: prom-client's metric value shape. */
interface Sample {
  metricName?: string;
  labels: Labels;
  value: number;
}

/** What prom-client's registry asks of a metric: its name, help, type, and values on get(). */
interface MetricObject {
  name: string;
  help: string;
  /** Its label names (besides a histogram's `le`), as prom-client's own metrics list them. */
  labelNames: readonly string[];
  type: 'counter' | 'gauge' | 'histogram';
  aggregator: 'sum';
  get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: Sample[] }>;
}

/** Reads the figures once per scrape, however many metrics ask: every get() of one scrape runs concurrently. */
export class ScrapeSource<T> {
  readonly #read: () => Promise<T | undefined>;
  #pending: Promise<T | undefined> | undefined;
  #last: T | undefined;

  constructor(read: () => Promise<T | undefined>) {
    this.#read = read;
  }

  /** The current figures, or the last ones read if the source cannot answer now (a busy or restarting worker). */
  get(): Promise<T | undefined> {
    this.#pending ??= this.#read()
      .then((value) => {
        if (value !== undefined) this.#last = value;
        return this.#last;
      })
      .catch(() => this.#last)
      .finally(() => {
        // The next scrape reads afresh (a scrape's gets all start before any settles).
        setImmediate(() => {
          this.#pending = undefined;
        });
      });
    return this.#pending;
  }
}

interface ExternalOptions<T> {
  name: string;
  help: string;
  labelNames?: readonly string[];
  source: ScrapeSource<T>;
  registry: Registry;
}

/** A counter or gauge whose samples (labels → value) are read from the source's figures. */
export function externalMetric<T>(
  options: ExternalOptions<T> & { type: 'counter' | 'gauge'; samples: (figures: T) => Array<{ labels?: Labels; value: number }> },
): void {
  const { name, help, type, source, samples, labelNames = [] } = options;
  const metric: MetricObject = {
    name,
    help,
    labelNames,
    type,
    aggregator: 'sum',
    async get() {
      const figures = await source.get();
      const values = figures === undefined ? [] : samples(figures).map((s) => ({ labels: s.labels ?? {}, value: s.value }));
      return { name, help, type, aggregator: 'sum', values };
    },
  };
  options.registry.registerMetric(metric as never);
}

/** A histogram (or one per label set) kept as BucketHistogram snapshots by the source. */
export function externalHistogram<T>(options: ExternalOptions<T> & { series: (figures: T) => Array<{ labels?: Labels; snapshot: BucketSnapshot }> }): void {
  const { name, help, source, series, labelNames = [] } = options;
  const metric: MetricObject = {
    name,
    help,
    labelNames,
    type: 'histogram',
    aggregator: 'sum',
    async get() {
      const figures = await source.get();
      const values = figures === undefined ? [] : series(figures).flatMap(({ labels, snapshot }) => histogramValues(name, labels ?? {}, snapshot));
      return { name, help, type: 'histogram', aggregator: 'sum', values };
    },
  };
  options.registry.registerMetric(metric as never);
}

/** A snapshot in the exposition's form: cumulative _bucket{le} lines, then _sum and _count. */
export function histogramValues(name: string, labels: Labels, s: BucketSnapshot): Sample[] {
  const out: Sample[] = [];
  let cumulative = 0;
  for (let i = 0; i < s.counts.length; i++) {
    cumulative += s.counts[i]!;
    const le = i < s.bounds.length ? s.bounds[i]! : '+Inf';
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative });
  }
  out.push({ metricName: `${name}_sum`, labels, value: s.sum });
  out.push({ metricName: `${name}_count`, labels, value: cumulative });
  return out;
}
