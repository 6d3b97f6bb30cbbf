// A thread's CPU priority. On Linux each thread has its own nice value, set through
// setpriority() on its thread id, so background work (the KV tiers' compressing, encoding and
// file writes) can yield the cores to the decode steps without touching the rest of the process.
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/** The calling thread's id (Linux), or undefined where /proc/thread-self does not exist. */
export function threadId(): number | undefined {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    return Number.isSafeInteger(tid) && tid > 0 ? tid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Sets the calling thread's nice value (0–19; raising it needs no privilege). Returns the value
 * in effect, or undefined where threads have no priority of their own (not Linux) or it failed.
 */
export function niceThisThread(nice: number): number | undefined {
  const tid = threadId();
  if (tid === undefined) return undefined;
  try {
    setPriority(tid, nice);
    return getPriority(tid);
  } catch {
    return undefined;
  }
}
