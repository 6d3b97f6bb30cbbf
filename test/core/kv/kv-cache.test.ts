// KvCache: a cache standing for prefix blocks read in place, or for a batch row read in place,
// holds the same keys and values as the contiguous cache, assembled or copied run by run.
import t from 'tap';
import { KvCache } from '../../../src/core/kv/kv-cache.js';
import type { KvLayout } from '../../../src/core/kv/layout.js';
import { cutBlock } from '../../../src/core/kv/prefix-index.js';

const layout: KvLayout = { layers: 2, kvHeads: 3, headDim: 4, dtype: 'float32' };
const LENGTH = 24;
const BLOCK = 8;
const contiguous = KvCache.of(
  layout,
  Array.from({ length: 4 }, (_, i) => Float32Array.from({ length: 3 * LENGTH * 4 }, (_, j) => i * 1000 + j)),
  LENGTH,
);
const blocks = Array.from({ length: LENGTH / BLOCK }, (_, b) => cutBlock(contiguous, b * BLOCK, BLOCK));

t.test('assembling prefix blocks gives the contiguous cache back', async (t) => {
  const cache = KvCache.ofBlocks(layout, blocks, BLOCK);
  t.equal(cache.length, LENGTH);
  t.equal(cache.byteLength, contiguous.byteLength, 'counts the bytes it stands for before assembling');
  t.same(
    cache.tensors.map((x) => Array.from(x)),
    contiguous.tensors.map((x) => Array.from(x)),
  );
  t.equal(cache.byteLength, contiguous.byteLength);
});

t.test('runs cover every token of every head once, block by block', async (t) => {
  const cache = KvCache.ofBlocks(layout, blocks, BLOCK);
  const seen = new Map<string, number>();
  for (const r of cache.runs()) {
    t.equal(r.count, BLOCK);
    const expected = contiguous.tensors[r.tensor]!.subarray((r.head * LENGTH + r.token) * 4, (r.head * LENGTH + r.token + r.count) * 4);
    if (Array.from(r.src.subarray(r.from, r.from + r.count * 4)).join() !== Array.from(expected).join())
      t.fail(`run ${JSON.stringify({ ...r, src: undefined })}`);
    const key = `${r.tensor}/${r.head}/${r.token}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  t.equal(seen.size, 4 * 3 * (LENGTH / BLOCK));
  t.ok([...seen.values()].every((n) => n === 1));
});

t.test('appending to a block-backed cache leaves the blocks untouched', async (t) => {
  const before = blocks.map((b) => b.map((x) => Array.from(x)));
  const cache = KvCache.ofBlocks(layout, blocks, BLOCK);
  cache.append(
    Array.from({ length: 4 }, () => new Float32Array(3 * 2 * 4).fill(-1)),
    2,
  );
  t.equal(cache.length, LENGTH + 2);
  t.same(
    blocks.map((b) => b.map((x) => Array.from(x))),
    before,
  );
});

t.test('a view of a batch row reads in place; own() copies it once; blocks cut from it match', async (t) => {
  // Two rows of a batch with 32 slots; the cache is row 1, its first LENGTH slots.
  const SLOTS = 32;
  const heads = layout.kvHeads;
  const buffers = contiguous.tensors.map((src) => {
    const out = new Float32Array(2 * heads * SLOTS * 4).fill(-1);
    for (let h = 0; h < heads; h++) out.set(src.subarray(h * LENGTH * 4, (h + 1) * LENGTH * 4), (heads + h) * SLOTS * 4);
    return out;
  });
  const view = KvCache.view(layout, buffers, heads * SLOTS * 4, SLOTS, LENGTH);
  t.ok(view.transient);
  t.equal(view.byteLength, contiguous.byteLength, 'counts the bytes it stands for');
  for (let b = 0; b < LENGTH / BLOCK; b++) {
    t.same(
      cutBlock(view, b * BLOCK, BLOCK).map((x) => Array.from(x)),
      blocks[b]!.map((x) => Array.from(x)),
      `block ${b} cut from the view`,
    );
  }
  t.equal(view.own(), view, 'own() returns the cache itself');
  t.notOk(view.transient, 'now holding its own memory');
  for (const b of buffers) b.fill(7);
  t.same(
    view.tensors.map((x) => Array.from(x)),
    contiguous.tensors.map((x) => Array.from(x)),
    'unaffected by later writes to the batch',
  );
  t.throws(() => view.headSlice(0, 0, LENGTH - 1, 2), RangeError, 'slices stay inside the cache');
});
