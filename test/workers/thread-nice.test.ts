// The tier thread runs below the decode steps' priority: its nice value is its own (Linux
// threads have one each), the threads beside it keep theirs, and KV_CACHE_TIER_NICE reaches it.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { TierThread } from '../../src/workers/tier-thread.js';
import { niceThisThread, threadId } from '../../src/workers/thread-nice.js';
import { MODEL_DIR } from '../helpers/model.js';

const linux = process.platform === 'linux';

/** Nice value of each of this process's threads, by thread id (/proc/self/task/<tid>/stat, field 19). */
function niceByThread(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
    } catch {
      // The thread ended while we read.
    }
  }
  return out;
}

t.test(
  'the thread id of the main thread is the process id; a refused value changes nothing',
  { skip: !linux && 'thread priorities are per thread on Linux only' },
  async (t) => {
    t.equal(threadId(), process.pid);
    const before = niceByThread().get(process.pid);
    t.equal(niceThisThread(99), undefined, 'out of range: not applied');
    t.equal(niceByThread().get(process.pid), before);
  },
);

t.test('KV_CACHE_TIER_NICE reaches the tier thread, and only it', { skip: !linux && 'thread priorities are per thread on Linux only' }, async (t) => {
  const before = niceByThread();
  const base = before.get(threadId()!)!;
  if (base > 12) {
    t.comment(`skipped: this process already runs at nice ${base}, no room to see the tier thread go lower`);
    return;
  }
  const nice = base + 7;
  const tiers = await TierThread.start({
    layout: { layers: 4, kvHeads: 4, headDim: 32, dtype: 'float32' },
    onnxPath: join(MODEL_DIR, 'onnx/model.onnx'),
    tokenizerPath: join(MODEL_DIR, 'tokenizer.json'),
    compressed: { maxBytes: 1 << 20, codec: 'int8' },
    disk: undefined,
    remote: undefined,
    nice,
  });
  t.teardown(() => tiers.close());
  const after = niceByThread();
  const started = [...after].filter(([tid]) => !before.has(tid));
  const lowered = started.filter(([, n]) => n === nice);
  t.equal(lowered.length, 1, `one new thread at nice ${nice} (new threads: ${JSON.stringify(started)})`);
  for (const [tid, n] of before) if (after.has(tid)) t.equal(after.get(tid), n, `thread ${tid} kept its priority`);
});
