// Summary statistics shared by the benches. Benches report medians (and percentiles) rather
// than means: one run disturbed by GC, a page fault or another process would drag a mean
// around, while the median of interleaved repetitions stays put.

/**
 * The p-th percentile (0 ≤ p ≤ 100) of `values`, linearly interpolated between the two
 * nearest ranks (the "R-7" / NumPy default), so percentile(v, 50) is the usual median.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new RangeError('percentile of an empty list');
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} outside 0..100`);
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
}

/** The middle value (the mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  return percentile(values, 50);
}
