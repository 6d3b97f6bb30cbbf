// The compressed tier: its accounting and LRU order are checked against a plain reference
// model after every operation of random sequences, and what leaves it (taken back or
// evicted towards disk) is the entry that went in, within the codec's error.
import t from 'tap';
import fc from 'fast-check';
import { decodeEntry, encodeEntry, isRejected } from '../../../../src/core/kv/entry/format.js';
import type { KvData, KvLayout } from '../../../../src/core/kv/layout.js';
import { encodePayload } from '../../../../src/core/kv/tiers/codec.js';
import { CompressedStore, type EvictReason, type KvEntry, restore } from '../../../../src/core/kv/tiers/compressed-store.js';
import { float32ArrayToHalf, halfArrayToFloat32 } from '../../../../src/core/float16.js';

const FP = new Uint8Array(32).fill(3);
const layouts: KvLayout[] = [
  { layers: 2, kvHeads: 2, headDim: 8, dtype: 'float32' },
  { layers: 1, kvHeads: 3, headDim: 4, dtype: 'float16' },
];

function entry(layout: KvLayout, key: string, tokens: number, seed = key.length): KvEntry {
  const n = layout.kvHeads * tokens * layout.headDim;
  const tensors: KvData[] = Array.from({ length: 2 * layout.layers }, (_, ti) => {
    const x = Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 7 + ti * 13 + i) * (1 + (i % 5)));
    return layout.dtype === 'float32' ? x : float32ArrayToHalf(x);
  });
  return {
    kind: key.startsWith('s') ? 'session' : 'prefix',
    key,
    tenantSalt: new Uint8Array([seed & 0xff]),
    tokens: Int32Array.from({ length: tokens }, (_, i) => i + seed),
    createdMs: 1000 + seed,
    tensors,
  };
}

/** What the store will hold for an entry: its encoded size. */
function sizeOf(layout: KvLayout, codec: 'int8' | 'float16', e: KvEntry): number {
  const dims = { layers: layout.layers, kvHeads: layout.kvHeads, headDim: layout.headDim, tokens: e.tokens.length };
  return encodeEntry({ ...e, fingerprint: FP, codec, dtype: layout.dtype, dims, payload: encodePayload(codec, e.tensors, dims, layout.dtype) }).byteLength;
}

const f32 = (x: KvData) => (x instanceof Float32Array ? x : halfArrayToFloat32(x));

function close(a: readonly KvData[], b: readonly KvData[]): boolean {
  return a.every((x, i) => {
    const p = f32(x);
    const q = f32(b[i]!);
    let max = 0;
    for (const v of p) max = Math.max(max, Math.abs(v));
    return p.length === q.length && p.every((v, j) => Math.abs(v - q[j]!) <= max / 127 + max * 2 ** -9);
  });
}

type Op = { op: 'put'; key: number; tokens: number } | { op: 'take'; key: number } | { op: 'delete'; key: number } | { op: 'drain' };

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('put' as const), key: fc.nat(7), tokens: fc.integer({ min: 1, max: 12 }) }), weight: 6 },
  { arbitrary: fc.record({ op: fc.constant('take' as const), key: fc.nat(7) }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('delete' as const), key: fc.nat(7) }), weight: 1 },
  { arbitrary: fc.constant({ op: 'drain' as const }), weight: 1 },
);

t.test('random sequences keep the accounting, the budget and the LRU order of a reference model', async (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom(...layouts),
      fc.constantFrom<'int8' | 'float16'>('int8', 'float16'),
      fc.integer({ min: 200, max: 6000 }),
      fc.array(arbOp, { maxLength: 60 }),
      (layout, codec, maxBytes, ops) => {
        const evicted: { key: string; bytes: Uint8Array; reason: EvictReason }[] = [];
        const store = new CompressedStore({ maxBytes, codec, layout, fingerprint: FP, onEvict: (key, bytes, reason) => evicted.push({ key, bytes, reason }) });
        const model = new Map<string, { size: number; entry: KvEntry }>(); // least recently used first
        for (const op of ops) {
          evicted.length = 0;
          if (op.op === 'put') {
            const key = `${op.key % 2 ? 's' : 'p'}${op.key}`;
            const e = entry(layout, key, op.tokens, op.key * 31 + op.tokens);
            const size = sizeOf(layout, codec, e);
            model.delete(key);
            const expectEvicted: string[] = [];
            if (size > maxBytes) expectEvicted.push(key);
            else {
              let total = [...model.values()].reduce((a, b) => a + b.size, 0);
              for (const [k, v] of model) {
                if (total + size <= maxBytes) break;
                model.delete(k);
                total -= v.size;
                expectEvicted.push(k);
              }
              model.set(key, { size, entry: e });
            }
            store.put(e);
            if (evicted.map((x) => x.key).join() !== expectEvicted.join()) throw new Error(`evicted ${evicted.map((x) => x.key)} expected ${expectEvicted}`);
            for (const x of evicted) {
              if (x.reason !== (x.key === key ? 'oversize' : 'lru')) throw new Error(`reason ${x.reason}`);
              const d = decodeEntry(x.bytes, FP);
              if (isRejected(d) || d.key !== x.key || d.codec !== codec) throw new Error('an evicted entry does not decode as itself');
            }
          } else if (op.op === 'take') {
            const key = `${op.key % 2 ? 's' : 'p'}${op.key}`;
            const want = model.get(key);
            model.delete(key);
            const got = store.take(key);
            if (!want !== !got) throw new Error(`take ${key}: ${got ? 'found' : 'missing'}, model says ${want ? 'present' : 'absent'}`);
            if (want && got) {
              if (
                got.kind !== want.entry.kind ||
                got.createdMs !== want.entry.createdMs ||
                [...got.tokens].join() !== [...want.entry.tokens].join() ||
                [...got.tenantSalt].join() !== [...want.entry.tenantSalt].join()
              )
                throw new Error('metadata changed');
              if (!close(want.entry.tensors, got.tensors)) throw new Error('values beyond the codec error');
            }
            if (evicted.length) throw new Error('take evicted');
          } else if (op.op === 'delete') {
            const key = `${op.key % 2 ? 's' : 'p'}${op.key}`;
            if (store.delete(key) !== model.delete(key)) throw new Error('delete disagrees');
            if (evicted.length) throw new Error('delete evicted');
          } else {
            const expected = [...model.keys()];
            model.clear();
            store.drain();
            if (evicted.map((x) => x.key).join() !== expected.join() || evicted.some((x) => x.reason !== 'drain')) throw new Error('drain order');
          }
          // Invariants after every operation.
          const sizes = store.entrySizes();
          const sum = sizes.reduce((a, b) => a + b, 0);
          if (store.bytes !== sum) throw new Error(`bytes ${store.bytes} != sum ${sum}`);
          if (store.bytes > maxBytes) throw new Error(`over budget: ${store.bytes} > ${maxBytes}`);
          if (store.keys().join() !== [...model.keys()].join()) throw new Error(`LRU ${store.keys()} vs model ${[...model.keys()]}`);
          if (sizes.join() !== [...model.values()].map((v) => v.size).join()) throw new Error('sizes differ from the model');
        }
      },
    ),
    { numRuns: 300 },
  );
  t.pass('invariants held');
});

t.test('stats count puts, hits, misses and evictions by reason', async (t) => {
  const layout = layouts[0]!;
  const one = sizeOf(layout, 'int8', entry(layout, 'p1', 4));
  const store = new CompressedStore({ maxBytes: 2 * one, codec: 'int8', layout, fingerprint: FP });
  store.put(entry(layout, 'p1', 4));
  store.put(entry(layout, 'p2', 4));
  store.put(entry(layout, 'p3', 4)); // evicts p1
  store.put(entry(layout, 'p4', 400)); // oversize
  t.equal(store.take('p1'), undefined);
  t.ok(store.take('p2'));
  const s = store.stats();
  t.same(
    { puts: s.puts, hits: s.hits, misses: s.misses, lru: s.evictions.lru, oversize: s.evictions.oversize },
    { puts: 4, hits: 1, misses: 1, lru: 1, oversize: 1 },
  );
  t.equal(s.evictedBytes.lru, one);
  t.ok(one < 2 * 2 * 2 * 4 * 8 * 4, 'int8 is smaller than the float32 entry');
});

t.test('a callback that throws leaves the store consistent', async (t) => {
  const layout = layouts[0]!;
  const one = sizeOf(layout, 'float16', entry(layout, 'p1', 4));
  const store = new CompressedStore({
    maxBytes: one,
    codec: 'float16',
    layout,
    fingerprint: FP,
    onEvict: () => {
      throw new Error('disk full');
    },
  });
  store.put(entry(layout, 'p1', 4));
  t.throws(() => store.put(entry(layout, 'p2', 4)), /disk full/);
  t.same(store.keys(), ['p2']);
  t.equal(store.bytes, one);
  const back = store.take('p2');
  t.ok(back && close(entry(layout, 'p2', 4).tensors, back.tensors), 'the entry is still served');
});

t.test('evicted bytes restore, through decodeEntry and restore(), to the entry put', async (t) => {
  const layout = layouts[1]!;
  let demoted: Uint8Array | undefined;
  const store = new CompressedStore({ maxBytes: 1 << 20, codec: 'int8', layout, fingerprint: FP, onEvict: (_k, bytes) => (demoted = bytes) });
  const e = entry(layout, 's1', 9);
  store.put(e);
  store.drain();
  const d = decodeEntry(demoted!, FP);
  if (isRejected(d)) return t.fail(d.detail);
  const tensors = restore(d);
  t.ok(
    tensors.every((x) => x instanceof Uint16Array),
    'float16 cache restored as float16',
  );
  t.ok(close(e.tensors, tensors), 'within the int8 error');
});
