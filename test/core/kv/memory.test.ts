// Eviction and deletion really free memory: KV buffers are plain JS ArrayBuffers (onnxruntime
// copies its outputs), so once the pool drops its references the garbage collector returns
// them — process.memoryUsage().arrayBuffers falls back by what the pool freed.
import t from 'tap';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { KvCacheManager } from '../../../src/core/kv/cache-manager.js';
import { loadModel } from '../../../src/runtime/load-model.js';
import { EngineHarness } from '../../helpers/engine.js';
import { MODEL_DIR } from '../../helpers/model.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const settle = async (): Promise<number> => {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return process.memoryUsage().arrayBuffers;
};

t.test('deleting sessions and evicting blocks returns their bytes to the process', async (t) => {
  const model = await loadModel(MODEL_DIR);
  t.teardown(() => model.decoder.close());
  const cache = new KvCacheManager({ layout: model.info.layout, maxBytes: 256 * 2 ** 20, blockSize: 16, sessionTtlMs: 3_600_000 });
  const h = new EngineHarness(model, { cache });
  const baseline = await settle();

  const sessions = 24;
  for (let i = 0; i < sessions; i++) {
    await h.run(`${'To be, or not to be, that is the question. '.repeat(10)}#${i}\n`, { maxTokens: 4, ignoreEos: true, sessionId: `s${i}` });
  }
  const held = cache.snapshot().bytes;
  t.equal(cache.snapshot().entries.session, sessions);
  const full = await settle();
  t.ok(full - baseline >= held, `arrayBuffers grew by at least the pool's ${held} bytes (grew ${full - baseline})`);
  const rssFull = process.memoryUsage().rss;

  for (let i = 0; i < sessions; i++) t.ok(cache.deleteSession('default', `s${i}`));
  t.equal(cache.snapshot().bytes, 0, 'the pool holds nothing');
  const emptied = await settle();
  t.ok(full - emptied >= 0.9 * held, `arrayBuffers fell by ${full - emptied} of ${held} freed bytes`);
  t.comment(`rss ${(rssFull / 2 ** 20).toFixed(1)} MiB full → ${(process.memoryUsage().rss / 2 ** 20).toFixed(1)} MiB emptied`);
});
