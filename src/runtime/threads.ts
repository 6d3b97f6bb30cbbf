// How many threads and copies of the model kvserve runs with when the configuration leaves it
// open: the CPUs this process may really use (a container's CPU quota, not the host's cores),
// and, by the model's weight bytes, whether decode steps get a session of their own and
// prompts a prefill thread — each is another copy of the weights in memory.
import { readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { scanOnnxFile } from './onnx/file-scan.js';

/**
 * Models up to this many weight bytes get a one-thread decode session beside the all-cores
 * one, and a prefill thread: on the shipped 13 MB model both measured faster on 2 cores and
 * their copies cost a few tens of MB. Above it one session on all cores serves everything: at
 * SmolLM2-135M size (540 MB) two threads decode a token 1.36× faster than one, and each extra
 * copy of the weights would cost ~800 MB (docs/benchmarks.md).
 */
export const SMALL_MODEL_BYTES = 64 * 2 ** 20;

/** The CPU quota of this process's cgroup, in CPUs (rounded up), or undefined when unlimited or unknown. */
export function cgroupCpuLimit(read: (path: string) => string | undefined = readText): number | undefined {
  // cgroup v2: "<quota> <period>" or "max <period>".
  const v2 = read('/sys/fs/cgroup/cpu.max')?.trim().split(/\s+/);
  if (v2 && v2[0] !== undefined && v2[1] !== undefined) {
    return v2[0] === 'max' ? undefined : cpus(Number(v2[0]), Number(v2[1]));
  }
  // cgroup v1: quota -1 means unlimited.
  const quota = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us') ?? read('/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us'));
  const period = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us') ?? read('/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us'));
  return cpus(quota, period);
}

function cpus(quota: number, period: number): number | undefined {
  if (!(quota > 0) || !(period > 0)) return undefined;
  return Math.max(1, Math.ceil(quota / period));
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The CPUs kvserve may use: the cores Node.js sees, capped by the cgroup quota. */
export function usableCpus(quota = cgroupCpuLimit(), cores = availableParallelism()): number {
  return Math.max(1, Math.min(cores, quota ?? cores));
}

/** Bytes of the model's weights on disk: the graph file and its external data files. */
export function modelWeightBytes(onnxPath: string): number {
  const dir = dirname(onnxPath);
  const scan = scanOnnxFile(onnxPath);
  return scan.externalData.reduce((sum, location) => sum + statSync(resolve(dir, location)).size, scan.bytes);
}

export interface ThreadPlan {
  /** Intra-op threads of the main session (prefill, large batches). */
  threads: number;
  /** Threads of the decode session: equal to `threads` means one session serves both. */
  decodeThreads: number;
  /** Whether a prefill thread (another copy of the model) computes prompts beside the decode steps. */
  prefillThread: boolean;
}

/** Fills in what the configuration left unset. */
export function planThreads(
  configured: { threads?: number | undefined; decodeThreads?: number | undefined; prefillThread?: boolean | undefined },
  weightBytes: number,
  cpuCount = usableCpus(),
): ThreadPlan {
  const threads = configured.threads ?? cpuCount;
  const small = weightBytes <= SMALL_MODEL_BYTES;
  return {
    threads,
    decodeThreads: configured.decodeThreads ?? (small ? 1 : threads),
    // A second compute thread only takes turns with the first on one core.
    prefillThread: configured.prefillThread ?? (small && threads > 1),
  };
}
