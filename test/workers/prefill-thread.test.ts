// The prefill thread (a second copy of the model in a worker thread of its own) computes what
// the same graph computes in-process, leaves the caller's cache intact, and stops cleanly.
import t from 'tap';
import { loadModel } from '../../src/runtime/load-model.js';
import { PrefillThread } from '../../src/workers/prefill-thread.js';
import { KvCache } from '../../src/core/kv/kv-cache.js';
import { MODEL_DIR } from '../helpers/model.js';

const model = await loadModel(MODEL_DIR);
t.teardown(() => model.decoder.close());
const thread = await PrefillThread.start(model.info.onnxPath, model.info.vocabSize);

t.test('a chunk over a past: the same logits and keys/values as in-process', async (t) => {
  t.ok(thread.alive);
  t.same(thread.layout, model.info.layout);
  const ids = Array.from('ROMEO:\nBut soft, what light through yonder window breaks?', (c) => c.charCodeAt(0));
  const head = ids.slice(0, 24);
  const chunk = ids.slice(24);
  const first = await model.decoder.forward({
    batch: 1,
    seqLen: head.length,
    pastLength: 0,
    inputIds: head,
    positionIds: head.map((_, i) => i),
    past: KvCache.empty(model.info.layout).tensors,
  });
  const cache = KvCache.empty(model.info.layout);
  cache.append(first.newKv, head.length);
  const past = cache.tensors;
  const before = past.map((p) => p.slice());
  const input = { batch: 1, seqLen: chunk.length, pastLength: head.length, inputIds: chunk, positionIds: chunk.map((_, i) => head.length + i), past };
  const local = await model.decoder.forward(input);
  const remote = await thread.forward(input);
  for (let s = 0; s < chunk.length; s++) {
    if (!t.same(remote.logits(0, s), local.logits(0, s), `logits at ${s}`)) break;
  }
  t.same(remote.newKv, local.newKv, 'new keys and values');
  t.same(past, before, "the caller's past is untouched (copied, not transferred)");
});

t.test('calls made together are answered in order, each with its own result', async (t) => {
  const one = (c: number) =>
    thread.forward({ batch: 1, seqLen: 1, pastLength: 0, inputIds: [c], positionIds: [0], past: KvCache.empty(model.info.layout).tensors });
  const [a, b] = await Promise.all([one(65), one(66)]);
  const [la, lb] = await Promise.all([one(65), one(66)].map(async (p) => (await p).logits(0, 0)));
  t.same(a!.logits(0, 0), la);
  t.same(b!.logits(0, 0), lb);
  t.notSame(a!.logits(0, 0), b!.logits(0, 0));
});

t.test("a prompt chunk's call brings back its last position's logits only", async (t) => {
  const ids = Array.from('JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?', (c) => c.charCodeAt(0));
  const input = {
    batch: 1,
    seqLen: ids.length,
    pastLength: 0,
    inputIds: ids,
    positionIds: ids.map((_, i) => i),
    past: KvCache.empty(model.info.layout).tensors,
  };
  const local = await model.decoder.forward(input);
  const last = local.logits(0, ids.length - 1).slice();
  const remote = await thread.forward({ ...input, lastLogitsOnly: true });
  const row = remote.logits(0, ids.length - 1);
  t.same(row, last, 'the same last-position logits');
  t.equal(row.buffer.byteLength, model.info.vocabSize * 4, 'and only those came back');
  t.same(remote.newKv, local.newKv, 'keys and values for every position');
  t.throws(() => remote.logits(0, 0), RangeError, 'an earlier position is not there to read');
});

t.test('close() ends the thread; later calls are refused', async (t) => {
  await thread.close();
  t.notOk(thread.alive);
  await t.rejects(
    thread.forward({ batch: 1, seqLen: 1, pastLength: 0, inputIds: [65], positionIds: [0], past: KvCache.empty(model.info.layout).tensors }),
    /not running/,
  );
});
