// The engine worker's configuration: whether the prefill thread runs when PREFILL_THREAD is
// not set depends on how many threads onnxruntime may use.
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { workerConfigOf } from '../../src/workers/engine-client.js';

t.test('unset, the prefill thread runs with 2 or more threads, not with one', async (t) => {
  const defaults = loadConfig({});
  t.equal(workerConfigOf(defaults, 2).prefillThread, true, '2 cores');
  t.equal(workerConfigOf(defaults, 16).prefillThread, true, '16 cores');
  t.equal(workerConfigOf(defaults, 1).prefillThread, false, 'one core');
  t.equal(workerConfigOf(loadConfig({ ORT_THREADS: '1' }), 8).prefillThread, false, 'ORT_THREADS=1 on 8 cores');
  t.equal(workerConfigOf(loadConfig({ ORT_THREADS: '2' }), 1).prefillThread, true, 'ORT_THREADS=2 on one core');
});

t.test('PREFILL_THREAD, when set, is obeyed whatever the cores', async (t) => {
  t.equal(workerConfigOf(loadConfig({ PREFILL_THREAD: 'true' }), 1).prefillThread, true);
  t.equal(workerConfigOf(loadConfig({ PREFILL_THREAD: '0' }), 8).prefillThread, false);
});

t.test('the rest of the configuration passes through', async (t) => {
  const config = loadConfig({ MAX_RUNNING_SEQUENCES: '4', ORT_DECODE_THREADS: '2' });
  const worker = workerConfigOf(config, 2);
  t.equal(worker.modelDir, config.model.dir);
  t.equal(worker.decodeThreads, 2);
  t.strictSame(worker.scheduler, {
    maxRunning: 4,
    maxQueued: config.scheduler.maxQueued,
    maxPrefillTokensPerStep: config.scheduler.maxPrefillTokensPerStep,
    requestTimeoutMs: config.scheduler.requestTimeoutMs,
  });
  t.strictSame(worker.kvCache, config.kvCache);
});
