// Interleaved repetitions, as bench/kv-cache.ts runs them: the sides of a comparison take
// turns repetition by repetition, in alternating order, so a disturbance on the shared machine
// (another process, thermal drift, GC) hits every side alike instead of one side's block.

/** Runs `sides` in order on even repetitions and reversed on odd ones; returns each side's results. */
export async function interleave<T>(reps: number, sides: readonly (() => Promise<T>)[], onRep: (results: T[], rep: number) => void = () => {}): Promise<T[][]> {
  const all: T[][] = sides.map(() => []);
  for (let rep = 0; rep < reps; rep++) {
    const order = sides.map((_, i) => i);
    if (rep % 2 === 1) order.reverse();
    const results: T[] = [];
    for (const i of order) results[i] = await sides[i]!();
    for (const [i, r] of results.entries()) all[i]!.push(r);
    onRep(results, rep);
  }
  return all;
}

/** A positive integer from the environment, or `fallback` when unset. */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}=${JSON.stringify(raw)} is not a positive integer`);
  return n;
}

export const log = (line: string): void => void process.stderr.write(`${line}\n`);
export const round1 = (x: number): number => Math.round(x * 10) / 10;
export const round2 = (x: number): number => Math.round(x * 100) / 100;
