// What the service runs with when the configuration leaves threads and model copies open: the
// CPUs of the cgroup quota, and by the model's size one session or two and a prefill thread.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { SMALL_MODEL_BYTES, cgroupCpuLimit, modelWeightBytes, planThreads, usableCpus } from '../../src/runtime/threads.js';
import { workerConfigOf } from '../../src/workers/engine-client.js';
import { externalizeOnnx } from '../helpers/onnx-external-data.js';
import { MODEL_DIR } from '../helpers/model.js';

const SMALL = 13 * 2 ** 20;
const LARGE = 540 * 2 ** 20;

t.test('a small model: a one-thread decode session and, with 2+ threads, the prefill thread', async (t) => {
  t.strictSame(planThreads({}, SMALL, 2), { threads: 2, decodeThreads: 1, prefillThread: true });
  t.strictSame(planThreads({}, SMALL, 16), { threads: 16, decodeThreads: 1, prefillThread: true });
  t.strictSame(planThreads({}, SMALL, 1), { threads: 1, decodeThreads: 1, prefillThread: false }, 'one core: no second compute thread');
  t.equal(planThreads({ threads: 1 }, SMALL, 8).prefillThread, false, 'ORT_THREADS=1 on 8 cores');
  t.equal(planThreads({ threads: 2 }, SMALL, 1).prefillThread, true, 'ORT_THREADS=2 on one core');
  t.equal(planThreads({}, SMALL_MODEL_BYTES, 2).decodeThreads, 1, 'the threshold itself is small');
});

t.test('a large model: one session on every thread, no second or third copy of the weights', async (t) => {
  t.strictSame(planThreads({}, LARGE, 2), { threads: 2, decodeThreads: 2, prefillThread: false });
  t.strictSame(planThreads({}, SMALL_MODEL_BYTES + 1, 4), { threads: 4, decodeThreads: 4, prefillThread: false });
});

t.test('what the configuration sets is obeyed whatever the model or the cores', async (t) => {
  t.strictSame(planThreads({ threads: 3, decodeThreads: 1, prefillThread: true }, LARGE, 2), { threads: 3, decodeThreads: 1, prefillThread: true });
  t.equal(planThreads({ prefillThread: false }, SMALL, 8).prefillThread, false);
  const worker = workerConfigOf(loadConfig({ PREFILL_THREAD: 'true', ORT_DECODE_THREADS: '2', MAX_RUNNING_SEQUENCES: '4' }));
  t.equal(worker.prefillThread, true, 'PREFILL_THREAD reaches the worker');
  t.equal(worker.decodeThreads, 2);
  t.equal(worker.scheduler.maxRunning, 4);
  t.equal(workerConfigOf(loadConfig({})).prefillThread, undefined, 'unset stays unset: the worker plans it');
});

t.test('the cgroup CPU quota caps the threads: 2 CPUs on a 32-core host start 2, not 32', async (t) => {
  const files = (map: Record<string, string>) => (path: string) => map[path];
  t.equal(cgroupCpuLimit(files({ '/sys/fs/cgroup/cpu.max': '200000 100000\n' })), 2, 'cgroup v2');
  t.equal(cgroupCpuLimit(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' })), 2, 'a fractional quota rounds up');
  t.equal(cgroupCpuLimit(files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' })), undefined, 'v2 unlimited');
  t.equal(cgroupCpuLimit(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '400000\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' })), 4, 'cgroup v1');
  t.equal(
    cgroupCpuLimit(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' })),
    undefined,
    'v1 unlimited',
  );
  t.equal(cgroupCpuLimit(files({})), undefined, 'no cgroup files');
  t.equal(usableCpus(2, 32), 2);
  t.equal(usableCpus(undefined, 32), 32);
  t.equal(usableCpus(64, 8), 8, 'never more than the cores');
  t.equal(planThreads({}, LARGE, usableCpus(2, 32)).threads, 2);
});

t.test('weight bytes count the graph file and its external data', async (t) => {
  const inline = modelWeightBytes(join(MODEL_DIR, 'onnx/model.onnx'));
  t.ok(inline > 12e6 && inline < 15e6, `the shipped graph: ${inline} bytes`);
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-weights-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { modelPath } = await externalizeOnnx(join(MODEL_DIR, 'onnx/model.onnx'), dir);
  const external = modelWeightBytes(modelPath);
  t.ok(Math.abs(external - inline) < inline * 0.05, `graph + .data: ${external} bytes`);
  writeFileSync(join(dir, 'unrelated.bin'), Buffer.alloc(1000));
  t.equal(modelWeightBytes(modelPath), external, 'other files of the directory do not count');
});
