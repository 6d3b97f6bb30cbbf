// Bounded polling for tests: wait until a condition holds, or fail naming what never happened.
import { setTimeout as sleep } from 'node:timers/promises';

export interface PollOptions {
  /** Give up after this long (a deadline, not an assertion about speed). */
  timeoutMs?: number;
  intervalMs?: number;
}

/** Resolves with the first truthy value `probe` returns; rejects once `timeoutMs` has passed. */
export async function waitFor<T>(
  what: string,
  probe: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  { timeoutMs = 15_000, intervalMs = 10 }: PollOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`gave up after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
