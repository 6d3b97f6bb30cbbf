// DecodeBatch against a model of what each row must hold, over random add / append / remove
// sequences: every row's tokens stay where the next step reads them, whatever moved around it.
import t from 'tap';
import fc from 'fast-check';
import { DecodeBatch, SLOT_ROUND } from '../../../src/core/scheduler/batch.js';
import { KvCache } from '../../../src/core/kv/kv-cache.js';
import type { KvLayout } from '../../../src/core/kv/layout.js';

const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 3, dtype: 'float32' };
const TENSORS = 2 * layout.layers;

/** The value a row's token holds in tensor i, head h, element d: unique per (row, token, i, h, d). */
const value = (row: number, token: number, i: number, h: number, d: number) => row * 1e5 + token * 100 + i * 10 + h * 4 + d / 8;

function cacheOf(row: number, length: number): KvCache {
  const { kvHeads, headDim } = layout;
  const tensors = Array.from({ length: TENSORS }, (_, i) => {
    const out = new Float32Array(kvHeads * length * headDim);
    for (let h = 0; h < kvHeads; h++) {
      for (let s = 0; s < length; s++) for (let d = 0; d < headDim; d++) out[(h * length + s) * headDim + d] = value(row, s, i, h, d);
    }
    return out;
  });
  return KvCache.of(layout, tensors, length);
}

const BLOCK = 4;

/** The same tokens as cacheOf(row, length) rounded down to whole blocks, as prefix blocks read in place. */
function blocksOf(row: number, length: number): KvCache {
  const { kvHeads, headDim } = layout;
  const whole = cacheOf(row, length);
  const blocks = Array.from({ length: Math.floor(length / BLOCK) }, (_, b) =>
    whole.tensors.map((x) => {
      const out = new Float32Array(kvHeads * BLOCK * headDim);
      for (let h = 0; h < kvHeads; h++) out.set(x.subarray((h * length + b * BLOCK) * headDim, (h * length + (b + 1) * BLOCK) * headDim), h * BLOCK * headDim);
      return out;
    }),
  );
  return KvCache.ofBlocks(layout, blocks, BLOCK);
}

function checkCache(kv: KvCache, row: number, length: number): string | undefined {
  if (kv.length !== length) return `length ${kv.length} != ${length}`;
  const expected = cacheOf(row, length);
  for (let i = 0; i < TENSORS; i++) {
    const a = kv.tensors[i]!;
    const b = expected.tensors[i]!;
    for (let j = 0; j < b.length; j++) if (a[j] !== b[j]) return `tensor ${i} element ${j}: ${a[j]} != ${b[j]}`;
  }
  return undefined;
}

type Op = { kind: 'add'; length: number; tail: number; blocks: boolean } | { kind: 'append' } | { kind: 'remove'; pick: number };
const op = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), length: fc.integer({ min: 0, max: 80 }), tail: fc.integer({ min: 0, max: 20 }), blocks: fc.boolean() }),
  fc.record({ kind: fc.constant('append' as const) }),
  fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }),
);

t.test('rows keep their tokens through random adds, appends and removes', async (t) => {
  // A broken invariant throws, with the shrunk operation sequence, and fails the test.
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops: Op[]) => {
      const batch = new DecodeBatch<number>(layout);
      const lengths = new Map<number, number>();
      let nextRow = 0;
      for (const o of ops) {
        if (o.kind === 'add') {
          const row = nextRow++;
          // The last `tail` tokens come as a step's new keys and values, apart from the cache;
          // the cache is contiguous or whole prefix blocks read in place.
          let head = o.length - Math.min(o.tail, o.length);
          if (o.blocks) head -= head % BLOCK;
          const tail = o.length - head;
          const whole = cacheOf(row, o.length);
          const { kvHeads, headDim } = layout;
          const tailKv = whole.tensors.map((x) => {
            const out = new Float32Array(kvHeads * tail * headDim);
            for (let h = 0; h < kvHeads; h++) out.set(x.subarray((h * o.length + head) * headDim, (h * o.length + o.length) * headDim), h * tail * headDim);
            return out;
          });
          batch.add(row, o.blocks ? blocksOf(row, head) : cacheOf(row, head), tail > 0 ? { kv: tailKv, length: tail } : undefined);
          lengths.set(row, o.length);
        } else if (o.kind === 'append') {
          if (batch.size === 0) continue;
          const { kvHeads, headDim } = layout;
          const newKv = Array.from({ length: TENSORS }, (_, i) => {
            const out = new Float32Array(batch.size * kvHeads * headDim);
            for (const [b, row] of batch.items.entries()) {
              for (let h = 0; h < kvHeads; h++) for (let d = 0; d < headDim; d++) out[(b * kvHeads + h) * headDim + d] = value(row, lengths.get(row)!, i, h, d);
            }
            return out;
          });
          batch.append(newKv);
          for (const row of batch.items) lengths.set(row, lengths.get(row)! + 1);
        } else {
          if (batch.size === 0) continue;
          const row = batch.items[o.pick % batch.size]!;
          const problem = checkCache(batch.view(row), row, lengths.get(row)!);
          if (problem) throw new Error(`removed row ${row}: ${problem}`);
          batch.remove(row);
          lengths.delete(row);
        }
        // Invariants after every operation.
        if (batch.size !== lengths.size) throw new Error('row count');
        const longest = Math.max(0, ...lengths.values());
        if (batch.size > 0 && batch.slots < longest + 1) throw new Error(`no room for the next token: ${batch.slots} slots, ${longest} tokens`);
        if (batch.slots % SLOT_ROUND !== 0) throw new Error('slots not rounded');
        if (batch.size > 0 && batch.slots > longest + 1 + 2 * SLOT_ROUND) throw new Error(`slots ${batch.slots} far above ${longest}`);
        const past = batch.past();
        const { kvHeads, headDim } = layout;
        for (const [b, row] of batch.items.entries()) {
          if (batch.lengths[b] !== lengths.get(row)) throw new Error(`row ${row} length ${batch.lengths[b]} != ${lengths.get(row)}`);
          for (let i = 0; i < TENSORS; i++) {
            if (past[i]!.length !== batch.size * kvHeads * batch.slots * headDim) throw new Error('past view size');
            for (let h = 0; h < kvHeads; h++) {
              for (let s = 0; s < batch.slots; s++) {
                for (let d = 0; d < headDim; d++) {
                  const got = past[i]![((b * kvHeads + h) * batch.slots + s) * headDim + d];
                  // Unused slots hold zeros, never another row's keys and values.
                  const want = s < lengths.get(row)! ? value(row, s, i, h, d) : 0;
                  if (got !== want) throw new Error(`row ${row} (at ${b}) tensor ${i} head ${h} slot ${s}: ${got}, expected ${want}`);
                }
              }
            }
          }
        }
      }
    }),
    { numRuns: 300 },
  );
  t.pass('300 random operation sequences kept every row intact');
});

t.test('a cache of prefix blocks is copied into its row straight from the blocks', async (t) => {
  const batch = new DecodeBatch<string>(layout);
  const kv = blocksOf(7, 3 * BLOCK);
  // Reading kv.tensors would assemble a contiguous copy first: a warm request's whole prefix
  // copied twice (it cost 1–7 ms at 1,024 tokens).
  Object.defineProperty(kv, 'tensors', { get: () => t.fail('add() assembled the block-backed cache') });
  batch.add('a', kv);
  t.same(batch.lengths, [3 * BLOCK]);
  t.equal(checkCache(batch.view('a'), 7, 3 * BLOCK), undefined, 'the row holds the blocks’ tokens');
});

t.test('a row read in place, then owned, survives the batch moving on', async (t) => {
  const batch = new DecodeBatch<number>(layout);
  for (const row of [0, 1, 2]) batch.add(row, cacheOf(row, 5 + row));
  const view = batch.view(0);
  t.ok(view.transient, 'a view of the batch');
  const owned = batch.view(1).own();
  t.notOk(owned.transient, 'own() copies it');
  // Row 2 moves into row 1's place, then into row 0's: the view's memory is overwritten.
  batch.remove(1);
  batch.remove(0);
  t.equal(checkCache(owned, 1, 6), undefined, 'the owned copy keeps its tokens');
  t.not(checkCache(view, 0, 5), undefined, 'a view kept past a change reads whatever is there now (why the pool owns what it keeps)');
});

t.test('slots grow in place while the buffers have room, every row intact', async (t) => {
  const batch = new DecodeBatch<number>(layout);
  const lengths = [200, 150, 10];
  for (const [row, n] of lengths.entries()) batch.add(row, cacheOf(row, n));
  const { kvHeads, headDim } = layout;
  const slots = batch.slots;
  const buffer = batch.past()[0]!.buffer;
  // Appends until the longest row needs more slots: the buffers were made with 25% headroom.
  while (batch.slots === slots) {
    const newKv = Array.from({ length: TENSORS }, (_, i) => {
      const out = new Float32Array(batch.size * kvHeads * headDim);
      for (const [b, row] of batch.items.entries()) {
        for (let h = 0; h < kvHeads; h++) for (let d = 0; d < headDim; d++) out[(b * kvHeads + h) * headDim + d] = value(row, lengths[row]!, i, h, d);
      }
      return out;
    });
    batch.append(newKv);
    for (const row of batch.items) lengths[row]!++;
  }
  t.equal(batch.slots, slots + SLOT_ROUND, 'one growth');
  t.equal(batch.past()[0]!.buffer, buffer, 'in the same buffers');
  for (const [row, n] of lengths.entries()) t.equal(checkCache(batch.view(row), row, n), undefined, `row ${row} holds its ${n} tokens`);
  const past = batch.past();
  let stray = 0;
  for (const [b, row] of batch.items.entries()) {
    for (let i = 0; i < TENSORS; i++) {
      for (let h = 0; h < kvHeads; h++) {
        const from = ((b * kvHeads + h) * batch.slots + lengths[row]!) * headDim;
        for (let j = from; j < (b * kvHeads + h + 1) * batch.slots * headDim; j++) if (past[i]![j] !== 0) stray++;
      }
    }
  }
  t.equal(stray, 0, 'unused slots hold zeros');
});

t.test('a row that outgrows its buffers gets room to double its slots in place', async (t) => {
  const batch = new DecodeBatch<number>(layout);
  let length = 200;
  batch.add(0, cacheOf(0, length));
  const { kvHeads, headDim } = layout;
  const buffers: ArrayBufferLike[] = [batch.past()[0]!.buffer];
  const slots: number[] = [];
  while (batch.slots < 4 * 200) {
    const newKv = Array.from({ length: TENSORS }, (_, i) => {
      const out = new Float32Array(kvHeads * headDim);
      for (let h = 0; h < kvHeads; h++) for (let d = 0; d < headDim; d++) out[h * headDim + d] = value(0, length, i, h, d);
      return out;
    });
    const before = batch.slots;
    batch.append(newKv);
    length++;
    if (batch.slots !== before) {
      slots.push(batch.slots);
      buffers.push(batch.past()[0]!.buffer);
    }
  }
  // New buffer sets at the growths that did not fit: one per doubling, not one per growth.
  const fresh = slots.filter((_, i) => buffers[i + 1] !== buffers[i]);
  t.ok(slots.length >= 18, `${slots.length} growths from 224 to ${batch.slots} slots`);
  t.ok(fresh.length <= 2, `new buffers at ${fresh.join(', ')} slots only`);
  t.equal(checkCache(batch.view(0), 0, length), undefined, `the row holds its ${length} tokens`);
});
