// A STREAM-like probe of the machine's memory read bandwidth, for bench:peer's roofline: one
// decode step of a single stream must read every weight once, so bytes per step ÷ bandwidth is
// the least time a step can take. Each thread scans a buffer of its own, far larger than the
// caches, filled first so every page is real. Two scans per thread:
//  - native: Buffer.indexOf for a byte that is not there (Node's memchr, SIMD) — what a
//    vectorised kernel reads; this is the figure the roofline uses;
//  - js: a 4-way unrolled Float64Array sum in plain JS, for comparison.
// Like STREAM, the best of several repetitions is reported; with N threads every repetition
// starts on all of them at once and counts N buffers over the slowest thread's time.
import { Worker } from 'node:worker_threads';

export interface BandwidthResult {
  /** GB/s (10^9 bytes per second) of the native scan, by thread count. */
  native_gbs: Record<string, number>;
  /** GB/s of the JS loop, by thread count. */
  js_gbs: Record<string, number>;
  buffer_mib: number;
  repetitions: number;
}

// Plain JS, run with eval in each worker (no loader needed).
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const buf = Buffer.alloc(workerData.bytes);
buf.fill(7);
const f64 = new Float64Array(buf.buffer, buf.byteOffset, buf.length / 8);
function jsSum(a) {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (let i = 0; i < a.length; i += 4) { s0 += a[i]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3]; }
  return s0 + s1 + s2 + s3;
}
parentPort.on('message', (kind) => {
  if (kind === 'exit') return process.exit(0);
  const t = performance.now();
  const r = kind === 'native' ? buf.indexOf(1) : jsSum(f64);
  parentPort.postMessage({ ms: performance.now() - t, r });
});
parentPort.postMessage('ready');
`;

function startWorker(bytes: number): Promise<Worker> {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER, { eval: true, workerData: { bytes } });
    w.once('error', reject);
    w.once('message', () => resolve(w));
  });
}

const run = (w: Worker, kind: string): Promise<number> =>
  new Promise((resolve) => {
    w.once('message', (m: { ms: number }) => resolve(m.ms));
    w.postMessage(kind);
  });

/** Measures 1 and 2 (or `threads`) concurrent readers; takes ~1-3 s and `bytes` × threads of memory. */
export async function measureReadBandwidth(options: { bytes?: number; repetitions?: number; threads?: number[] } = {}): Promise<BandwidthResult> {
  const bytes = options.bytes ?? 512 * 2 ** 20;
  const repetitions = options.repetitions ?? 7;
  const result: BandwidthResult = { native_gbs: {}, js_gbs: {}, buffer_mib: bytes / 2 ** 20, repetitions };
  for (const n of options.threads ?? [1, 2]) {
    const workers = await Promise.all(Array.from({ length: n }, () => startWorker(bytes)));
    try {
      for (const kind of ['native', 'js'] as const) {
        let best = 0;
        for (let rep = 0; rep < repetitions; rep++) {
          const times = await Promise.all(workers.map((w) => run(w, kind)));
          best = Math.max(best, (n * bytes) / (Math.max(...times) / 1000) / 1e9);
        }
        (kind === 'native' ? result.native_gbs : result.js_gbs)[String(n)] = Math.round(best * 10) / 10;
      }
    } finally {
      for (const w of workers) w.postMessage('exit');
    }
  }
  return result;
}
