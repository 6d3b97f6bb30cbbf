// The KV pool is the one byte budget over every cache the service holds. Unit tests pin each
// operation's contract; a model-based property drives random operation sequences against a
// plain reference model and checks the accounting and LRU invariants after every operation.
import t from 'tap';
import fc from 'fast-check';
import { KvPool, type EntryKind, type PoolEntry, type RemovalReason } from '../../../src/core/kv/pool.js';

type Removal = { payload: string; reason: RemovalReason; refs: number; stillInPool: boolean };

function setup(maxBytes: number) {
  let now = 1_000;
  const removed: Removal[] = [];
  const pool: KvPool<string> = new KvPool<string>({
    maxBytes,
    now: () => now,
    onRemove: (e, reason) => removed.push({ payload: e.payload, reason, refs: e.refs, stillInPool: pool.has(e) }),
  });
  return {
    pool,
    removed,
    clock: {
      get now() {
        return now;
      },
      set(ms: number) {
        now = ms;
      },
      advance(ms: number) {
        now += ms;
      },
    },
  };
}

const sum = (xs: Iterable<{ bytes: number }>) => {
  let s = 0;
  for (const x of xs) s += x.bytes;
  return s;
};
const names = (entries: Iterable<PoolEntry<string>>) => [...entries].map((e) => e.payload);
const removals = (rs: Removal[]) => rs.map((r) => `${r.payload}:${r.reason}`);

t.test('constructor', async (t) => {
  for (const bad of [0, -1, 1.5, Infinity, -Infinity, NaN, Number.MAX_SAFE_INTEGER + 1]) {
    t.throws(() => new KvPool<string>({ maxBytes: bad }), RangeError, `maxBytes ${bad} is refused (an unbounded pool is a bug)`);
  }
  t.equal(new KvPool<string>({ maxBytes: 1 }).maxBytes, 1, 'maxBytes 1 is accepted');
  const p = new KvPool<string>({ maxBytes: Number.MAX_SAFE_INTEGER });
  t.equal(p.maxBytes, Number.MAX_SAFE_INTEGER, 'the largest safe integer is accepted');
  t.equal(p.bytesInUse, 0);
  t.equal(p.evictableBytes, 0);
  t.equal(p.size, 0);
  t.same(p.lruOrder(), []);
});

t.test('add', async (t) => {
  const { pool, removed, clock } = setup(100);
  const a = pool.add('session', 'a', 60);
  t.ok(a, 'fits');
  t.match(a, { kind: 'session', payload: 'a', bytes: 60, refs: 0, lastUsedMs: 1_000, createdMs: 1_000 });
  t.equal(pool.add('prefix', 'b', 41), undefined, 'returns undefined when it does not fit (even with evictable room)');
  t.equal(pool.size, 1, 'a refused add changes nothing');
  t.equal(pool.bytesInUse, 60);
  t.same(removed, [], 'add never evicts');
  clock.advance(5);
  const b = pool.add('active', 'b', 40, 2)!;
  t.ok(b, 'exactly filling the budget fits');
  t.match(b, { refs: 2, lastUsedMs: 1_005, createdMs: 1_005 });
  t.equal(pool.bytesInUse, 100);
  t.equal(pool.evictableBytes, 60, 'a pinned entry is not evictable');
  t.same(names(pool.lruOrder()), ['a'], 'only unpinned entries are in the LRU list');
  t.ok(pool.add('prefix', 'zero', 0), 'a zero-byte entry fits a full pool');
  t.equal(pool.add('prefix', 'c', 1), undefined, 'a full pool takes no more bytes');
  for (const bad of [-1, 1.5, NaN, Infinity]) t.throws(() => pool.add('prefix', 'bad', bad), RangeError, `bytes ${bad} is refused`);
  t.equal(pool.bytesInUse, 100);
});

t.test('pin, unpin, touch and LRU order', async (t) => {
  const { pool, clock } = setup(1_000);
  const a = pool.add('session', 'a', 10)!;
  const b = pool.add('session', 'b', 20)!;
  const c = pool.add('prefix', 'c', 30)!;
  t.same(names(pool.lruOrder()), ['a', 'b', 'c'], 'insertion order');
  clock.advance(1);
  pool.touch(a);
  t.same(names(pool.lruOrder()), ['b', 'c', 'a'], 'touch moves to most recently used');
  t.equal(a.lastUsedMs, 1_001);
  clock.advance(1);
  pool.pin(b);
  t.equal(b.refs, 1);
  t.equal(b.lastUsedMs, 1_002, 'pin marks use');
  t.same(names(pool.lruOrder()), ['c', 'a'], 'a pinned entry leaves the LRU list');
  t.equal(pool.evictableBytes, 40);
  pool.pin(b);
  t.equal(b.refs, 2);
  pool.touch(b);
  t.same(names(pool.lruOrder()), ['c', 'a'], 'touching a pinned entry does not put it in the LRU list');
  clock.advance(1);
  pool.unpin(b);
  t.equal(b.refs, 1);
  t.equal(b.lastUsedMs, 1_003, 'unpin marks use');
  t.same(names(pool.lruOrder()), ['c', 'a'], 'still pinned once');
  pool.unpin(b);
  t.same(names(pool.lruOrder()), ['c', 'a', 'b'], 'the last unpin appends it as most recently used');
  t.equal(pool.evictableBytes, 60);
  t.throws(() => pool.unpin(b), /no pins/, 'unpin below zero throws');
  t.equal(b.refs, 0, 'and changes nothing');
  t.same(names(pool.lruOrder()), ['c', 'a', 'b']);
  t.throws(() => pool.unpin(c), /no pins/, 'unpin of a never-pinned entry throws');
  t.equal(pool.evictableBytes, 60);

  pool.remove(c, 'deleted');
  t.throws(() => pool.pin(c), /not in the pool/, 'pin of a removed entry throws');
  t.throws(() => pool.unpin(c), /not in the pool/);
  t.throws(() => pool.touch(c), /not in the pool/);
  t.throws(() => pool.resize(c, 1), /not in the pool/);
  t.notOk(pool.has(c));
});

t.test('makeRoom', async (t) => {
  const { pool, removed } = setup(100);
  pool.add('session', 'a', 30);
  const b = pool.add('session', 'b', 30)!;
  pool.add('prefix', 'c', 20);
  pool.add('active', 'p', 10, 1);
  t.equal(pool.bytesInUse, 90);
  t.ok(pool.makeRoom(10), 'fits already');
  t.same(removed, [], 'nothing evicted when it already fits');
  t.ok(pool.makeRoom(0));
  pool.touch(pool.lruOrder()[0]!); // a → newest: b, c, a
  t.same(names(pool.lruOrder()), ['b', 'c', 'a']);
  t.notOk(pool.makeRoom(91), 'false when evicting everything unpinned is not enough (10 pinned + 91 > 100)');
  t.same(removed, [], 'a failed makeRoom evicts nothing');
  t.equal(pool.bytesInUse, 90);
  t.ok(pool.makeRoom(40), 'room for 40 needs 30 freed');
  t.same(removals(removed), ['b:lru'], 'the least recently used entry goes first, and only as many as needed');
  t.equal(pool.bytesInUse, 60);
  t.notOk(pool.has(b));
  t.ok(pool.makeRoom(90), 'exactly everything unpinned');
  t.same(removals(removed), ['b:lru', 'c:lru', 'a:lru']);
  t.equal(pool.bytesInUse, 10);
  t.equal(pool.evictableBytes, 0);
  t.ok(
    removed.every((r) => r.refs === 0 && !r.stillInPool),
    'onRemove sees an unpinned entry already gone from the pool',
  );
});

t.test('resize', async (t) => {
  const { pool, removed, clock } = setup(100);
  const old = pool.add('session', 'old', 30)!;
  pool.add('session', 'mid', 30);
  const run = pool.add('active', 'run', 10, 1)!;
  t.ok(pool.resize(run, 40), 'growth by 30 fits (70 + 30 = 100) without eviction');
  t.same(removed, []);
  t.ok(pool.resize(run, 60), 'growth evicts least recently used entries');
  t.same(removals(removed), ['old:lru']);
  t.equal(run.bytes, 60);
  t.equal(pool.bytesInUse, 90);
  t.notOk(pool.resize(run, 101), 'growth beyond what eviction can free fails');
  t.same(removals(removed), ['old:lru'], '... evicting nothing');
  t.equal(run.bytes, 60, '... and leaving the size');
  t.equal(pool.bytesInUse, 90);
  t.ok(pool.resize(run, 100), 'growth to the whole budget needs every unpinned byte');
  t.same(removals(removed), ['old:lru', 'mid:lru']);
  t.equal(pool.bytesInUse, 100);
  t.ok(pool.resize(run, 5), 'shrinking always succeeds');
  t.equal(pool.bytesInUse, 5);
  t.equal(pool.evictableBytes, 0);
  t.ok(pool.has(run));
  t.notOk(pool.has(old));

  pool.unpin(run);
  pool.add('session', 'other', 1);
  const lastUsed = run.lastUsedMs;
  clock.advance(7);
  t.ok(pool.resize(run, 8), 'an unpinned entry can shrink or grow in place');
  t.equal(pool.evictableBytes, 9, 'an unpinned entry’s growth is evictable');
  t.same(names(pool.lruOrder()), ['run', 'other'], 'resize does not count as use: the LRU position stays');
  t.equal(run.lastUsedMs, lastUsed, 'nor does it change lastUsedMs');
});

// Regression (found by this suite): growing an unpinned entry must never evict the entry itself.
t.test('resize of an unpinned entry never evicts the entry itself', async (t) => {
  {
    const { pool, removed } = setup(100);
    const a = pool.add('session', 'a', 60)!; // the oldest unpinned entry
    pool.add('session', 'b', 10);
    // 70 + 35 > 100: 5 bytes must go, and b (10) is the only other entry that may.
    t.ok(pool.resize(a, 95), 'growth that evicting another entry makes room for succeeds');
    t.same(removals(removed), ['b:lru'], 'the other entry is evicted, not the resized one');
    t.ok(pool.has(a) && a.bytes === 95, 'the entry stays in the pool at its new size');
    t.equal(pool.bytesInUse, sum(pool.entries()), 'bytesInUse equals the sum of the entries’ bytes');
    t.equal(pool.evictableBytes, sum([...pool.entries()].filter((e) => e.refs === 0)), 'evictableBytes equals the unpinned bytes');
    t.ok(!pool.makeRoom(90) || pool.bytesInUse + 90 <= pool.maxBytes, 'makeRoom true still means the bytes fit');
  }
  {
    const { pool, removed } = setup(100);
    const a = pool.add('session', 'a', 60)!;
    pool.add('active', 'pinned', 10, 1);
    // pinned 10 + a's 95 > 100: impossible without evicting a itself.
    t.notOk(pool.resize(a, 95), 'growth only evicting the entry itself could make room for fails');
    t.same(removed, [], '... evicting nothing');
    t.equal(a.bytes, 60, '... and leaving the size');
  }
});

t.test('resize and makeRoom reject non-integer sizes', async (t) => {
  {
    const { pool } = setup(100);
    const a = pool.add('active', 'a', 10, 1)!;
    t.throws(() => pool.resize(a, NaN), RangeError, 'resize(NaN) is refused like add(NaN)');
    t.equal(pool.bytesInUse, 10, 'and the accounting stays a number');
  }
  {
    const { pool } = setup(100);
    const a = pool.add('active', 'a', 10, 1)!;
    t.throws(() => pool.resize(a, -1), RangeError, 'resize to a negative size is refused');
  }
  {
    const { pool } = setup(100);
    pool.add('session', 'b', 10);
    t.throws(() => pool.makeRoom(NaN), RangeError, 'makeRoom(NaN) is refused');
    t.equal(pool.size, 1, 'rather than evicting every unpinned entry');
  }
});

t.test('expire', async (t) => {
  const { pool, removed, clock } = setup(1_000);
  clock.set(0);
  pool.add('session', 'old-session', 1);
  pool.add('prefix', 'old-prefix', 1);
  pool.add('session', 'old-pinned', 1, 1);
  clock.set(49);
  pool.add('session', 'just-before', 1);
  clock.set(50);
  pool.add('session', 'cutoff-exact', 1);
  clock.set(60);
  pool.add('session', 'young', 1);
  clock.set(1_000);
  t.equal(pool.expire('session', 50), 2, 'evicts unpinned sessions idle since before the cutoff');
  t.same(removals(removed).sort(), ['just-before:ttl', 'old-session:ttl'].sort());
  t.same(
    names(pool.entries()).sort(),
    ['cutoff-exact', 'old-pinned', 'old-prefix', 'young'].sort(),
    'pinned, other kinds and entries used at or after the cutoff stay',
  );
  t.ok(removed.every((r) => r.refs === 0));
  t.equal(pool.expire('session', 50), 0, 'nothing more to expire');
  t.equal(pool.expire('prefix', 1), 1, 'another kind has its own expiry');
  t.same(removals(removed).at(-1), 'old-prefix:ttl');
  t.equal(pool.expire('active', Infinity), 0, 'no unpinned active entries');
  t.equal(pool.bytesInUse, 3);
});

t.test('remove and onRemove reasons', async (t) => {
  const { pool, removed } = setup(100);
  const pinned = pool.add('active', 'pinned', 10, 1)!;
  const free = pool.add('session', 'free', 10)!;
  const pinned2 = pool.add('prefix', 'pinned2', 10, 2)!;
  t.throws(() => pool.remove(pinned, 'lru'), /pinned/, "a pinned entry cannot be 'lru'-evicted");
  t.throws(() => pool.remove(pinned, 'ttl'), /pinned/, "a pinned entry cannot be 'ttl'-evicted");
  t.ok(pool.has(pinned), 'it stays');
  t.equal(pool.bytesInUse, 30);
  pool.remove(pinned, 'released');
  pool.remove(pinned2, 'deleted');
  t.same(removals(removed), ['pinned:released', 'pinned2:deleted'], "'released' and 'deleted' remove pinned entries");
  t.same(
    removed.map((r) => r.refs),
    [1, 2],
    'onRemove sees the entry as it was',
  );
  pool.remove(free, 'lru');
  t.same(removals(removed).at(-1), 'free:lru');
  pool.remove(free, 'deleted');
  pool.remove(pinned, 'released');
  t.equal(removed.length, 3, 'removing an entry no longer in the pool is a no-op without a callback');
  t.equal(pool.bytesInUse, 0);
  t.equal(pool.evictableBytes, 0);
  t.equal(pool.size, 0);
  t.same(pool.lruOrder(), []);
  t.ok(
    removed.every((r) => !r.stillInPool),
    'onRemove is called after the entry left the pool',
  );

  const noCallback = new KvPool<string>({ maxBytes: 10 });
  const e = noCallback.add('session', 'x', 5)!;
  noCallback.remove(e, 'ttl');
  t.equal(noCallback.size, 0, 'onRemove is optional');
});

// ─── Model-based property ──────────────────────────────────────────────────────────────

type Op =
  | { op: 'add'; kind: EntryKind; bytes: number; refs: number }
  | { op: 'makeRoom'; bytes: number }
  | { op: 'resize'; pick: number; bytes: number }
  | { op: 'pin' | 'unpin' | 'touch'; pick: number }
  | { op: 'remove'; pick: number; reason: RemovalReason }
  | { op: 'removeStale'; pick: number; reason: RemovalReason }
  | { op: 'expire'; kind: EntryKind; age: number }
  | { op: 'tick'; ms: number };

const kindArb = fc.constantFrom<EntryKind>('session', 'prefix', 'active');
const reasonArb = fc.constantFrom<RemovalReason>('lru', 'ttl', 'deleted', 'released');
const pickArb = fc.nat(1_000);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({
      op: fc.constant('add' as const),
      kind: kindArb,
      bytes: fc.nat(60),
      refs: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 1, max: 2 })),
    }),
    weight: 5,
  },
  { arbitrary: fc.record({ op: fc.constant('makeRoom' as const), bytes: fc.nat(120) }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('resize' as const), pick: pickArb, bytes: fc.nat(80) }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constantFrom('pin' as const, 'unpin' as const, 'touch' as const), pick: pickArb }), weight: 5 },
  { arbitrary: fc.record({ op: fc.constant('remove' as const), pick: pickArb, reason: reasonArb }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('removeStale' as const), pick: pickArb, reason: reasonArb }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('expire' as const), kind: kindArb, age: fc.nat(30) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.nat(10) }), weight: 2 },
);

interface ModelEntry {
  id: string;
  kind: EntryKind;
  bytes: number;
  refs: number;
  lastUsedMs: number;
  createdMs: number;
  handle: PoolEntry<string>;
}

class Failure extends Error {}
function check(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Failure(what);
}

/**
 * Runs `ops` against a pool and a reference model; throws naming the first operation after
 * which they disagree or an invariant breaks. Counts into `stats` what was exercised.
 */
function runModel(maxBytes: number, ops: readonly Op[], stats: { ran: number; evictions: number; refused: number }): void {
  let now = 0;
  const calls: { id: string; reason: RemovalReason; refs: number; inPool: boolean; bytesOk: boolean }[] = [];
  const pool: KvPool<string> = new KvPool<string>({
    maxBytes,
    now: () => now,
    onRemove: (e, reason) => calls.push({ id: e.payload, reason, refs: e.refs, inPool: pool.has(e), bytesOk: pool.bytesInUse === sum(pool.entries()) }),
  });
  const live: ModelEntry[] = []; // insertion order
  const dead: PoolEntry<string>[] = [];
  let lru: ModelEntry[] = []; // oldest first
  let nextId = 0;

  const pinnedBytes = () => sum(live.filter((e) => e.refs > 0));
  const used = () => sum(live);
  const drop = (e: ModelEntry) => {
    live.splice(live.indexOf(e), 1);
    lru = lru.filter((x) => x !== e);
    dead.push(e.handle);
  };
  /** The LRU prefix a correct makeRoom(need) evicts (never `except`), or undefined when it must fail. */
  const plan = (need: number, except?: ModelEntry): ModelEntry[] | undefined => {
    const pinned = pinnedBytes() + (except && except.refs === 0 ? except.bytes : 0);
    if (pinned + need > maxBytes) return undefined;
    const out: ModelEntry[] = [];
    let u = used();
    for (const e of lru) {
      if (u + need <= maxBytes) break;
      if (e === except) continue;
      out.push(e);
      u -= e.bytes;
    }
    return out;
  };
  const expectRemovals = (before: number, expected: { id: string; reason: RemovalReason }[], what: string) => {
    const got = calls.slice(before).map((c) => `${c.id}:${c.reason}`);
    const want = expected.map((c) => `${c.id}:${c.reason}`);
    check(JSON.stringify(got) === JSON.stringify(want), `${what}: removed [${got}] expected [${want}]`);
  };

  const invariants = (what: string) => {
    const entries = [...pool.entries()];
    check(pool.size === live.length && entries.length === live.length, `${what}: size ${pool.size}, model ${live.length}`);
    for (const m of live) {
      const h = m.handle;
      check(pool.has(h), `${what}: ${m.id} missing from the pool`);
      check(h.bytes === m.bytes && h.refs === m.refs && h.kind === m.kind, `${what}: ${m.id} is ${h.bytes}B/${h.refs} refs, model ${m.bytes}B/${m.refs}`);
      check(
        h.lastUsedMs === m.lastUsedMs && h.createdMs === m.createdMs,
        `${what}: ${m.id} times ${h.lastUsedMs}/${h.createdMs}, model ${m.lastUsedMs}/${m.createdMs}`,
      );
    }
    for (const h of dead) check(!pool.has(h), `${what}: removed entry ${h.payload} still in the pool`);
    const total = sum(entries);
    check(pool.bytesInUse === total, `${what}: bytesInUse ${pool.bytesInUse} ≠ Σ entry bytes ${total}`);
    check(pool.bytesInUse <= maxBytes, `${what}: bytesInUse ${pool.bytesInUse} > maxBytes ${maxBytes}`);
    const unpinned = entries.filter((e) => e.refs === 0);
    check(pool.evictableBytes === sum(unpinned), `${what}: evictableBytes ${pool.evictableBytes} ≠ Σ unpinned bytes ${sum(unpinned)}`);
    const order = pool.lruOrder().map((e) => e.payload);
    const want = lru.map((e) => e.id);
    check(JSON.stringify(order) === JSON.stringify(want), `${what}: lruOrder [${order}] expected [${want}]`);
    check(order.length === unpinned.length, `${what}: lruOrder holds ${order.length} entries, ${unpinned.length} are unpinned`);
    for (const c of calls) {
      check(!((c.reason === 'lru' || c.reason === 'ttl') && c.refs > 0), `${what}: pinned ${c.id} removed with reason ${c.reason}`);
      check(!c.inPool && c.bytesOk, `${what}: onRemove(${c.id}) called before the pool finished removing it`);
    }
  };

  ops.forEach((o, i) => {
    const what = `op ${i} ${JSON.stringify(o)}`;
    const before = calls.length;
    switch (o.op) {
      case 'add': {
        const id = `e${nextId++}`;
        const h = pool.add(o.kind, id, o.bytes, o.refs);
        if (used() + o.bytes > maxBytes) {
          check(h === undefined, `${what}: add beyond the budget returned an entry`);
          stats.refused++;
        } else {
          check(h !== undefined, `${what}: add that fits returned undefined`);
          const m: ModelEntry = { id, kind: o.kind, bytes: o.bytes, refs: o.refs, lastUsedMs: now, createdMs: now, handle: h };
          live.push(m);
          if (o.refs === 0) lru.push(m);
        }
        expectRemovals(before, [], what);
        break;
      }
      case 'makeRoom': {
        const evict = plan(o.bytes);
        const ok = pool.makeRoom(o.bytes);
        check(ok === (evict !== undefined), `${what}: makeRoom returned ${ok}`);
        if (evict) {
          for (const e of evict) drop(e);
          check(pool.bytesInUse + o.bytes <= maxBytes, `${what}: makeRoom true but ${pool.bytesInUse} + ${o.bytes} > ${maxBytes}`);
          stats.evictions += evict.length;
        }
        expectRemovals(
          before,
          (evict ?? []).map((e) => ({ id: e.id, reason: 'lru' })),
          what,
        );
        break;
      }
      case 'resize': {
        const m = live[o.pick % Math.max(1, live.length)];
        if (!m) return;
        const delta = o.bytes - m.bytes;
        const evict = delta > 0 ? plan(delta, m) : [];
        const ok = pool.resize(m.handle, o.bytes);
        check(ok === (evict !== undefined), `${what}: resize returned ${ok}`);
        if (evict) {
          for (const e of evict) drop(e);
          m.bytes = o.bytes;
          stats.evictions += evict.length;
        }
        expectRemovals(
          before,
          (evict ?? []).map((e) => ({ id: e.id, reason: 'lru' })),
          what,
        );
        break;
      }
      case 'pin': {
        const m = live[o.pick % Math.max(1, live.length)];
        if (!m) return;
        pool.pin(m.handle);
        if (m.refs++ === 0) lru = lru.filter((x) => x !== m);
        m.lastUsedMs = now;
        break;
      }
      case 'unpin': {
        const m = live[o.pick % Math.max(1, live.length)];
        if (!m) return;
        if (m.refs === 0) {
          let threw = false;
          try {
            pool.unpin(m.handle);
          } catch {
            threw = true;
          }
          check(threw, `${what}: unpin below zero did not throw`);
        } else {
          pool.unpin(m.handle);
          m.lastUsedMs = now;
          if (--m.refs === 0) lru.push(m);
        }
        break;
      }
      case 'touch': {
        const m = live[o.pick % Math.max(1, live.length)];
        if (!m) return;
        pool.touch(m.handle);
        m.lastUsedMs = now;
        if (m.refs === 0) lru = [...lru.filter((x) => x !== m), m];
        break;
      }
      case 'remove': {
        const m = live[o.pick % Math.max(1, live.length)];
        if (!m) return;
        if ((o.reason === 'lru' || o.reason === 'ttl') && m.refs > 0) {
          let threw = false;
          try {
            pool.remove(m.handle, o.reason);
          } catch {
            threw = true;
          }
          check(threw, `${what}: ${o.reason}-removal of a pinned entry did not throw`);
          expectRemovals(before, [], what);
        } else {
          pool.remove(m.handle, o.reason);
          drop(m);
          expectRemovals(before, [{ id: m.id, reason: o.reason }], what);
        }
        break;
      }
      case 'removeStale': {
        const h = dead[o.pick % Math.max(1, dead.length)];
        if (!h) return;
        pool.remove(h, o.reason);
        expectRemovals(before, [], what);
        break;
      }
      case 'expire': {
        const cutoff = now - o.age;
        const expired = lru.filter((e) => e.kind === o.kind && e.lastUsedMs < cutoff);
        const n = pool.expire(o.kind, cutoff);
        check(n === expired.length, `${what}: expire returned ${n}, expected ${expired.length}`);
        for (const e of expired) drop(e);
        stats.evictions += n;
        expectRemovals(
          before,
          expired.map((e) => ({ id: e.id, reason: 'ttl' })),
          what,
        );
        break;
      }
      case 'tick':
        now += o.ms;
        break;
    }
    stats.ran++;
    invariants(what);
  });
}

t.test('random operation sequences keep the pool and a reference model in agreement', async (t) => {
  const stats = { ran: 0, evictions: 0, refused: 0 };
  let runs = 0;
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 200 }), fc.array(opArb, { minLength: 20, maxLength: 80, size: 'max' }), (maxBytes, ops) => {
      runs++;
      runModel(maxBytes, ops, stats);
    }),
    { numRuns: 400 },
  );
  t.ok(runs >= 400, `${runs} sequences`);
  t.ok(stats.ran > 10_000, `${stats.ran} operations ran, each followed by the invariant check`);
  t.ok(stats.evictions > 300, `${stats.evictions} evictions exercised`);
  t.ok(stats.refused > 50, `${stats.refused} adds refused for lack of room`);
});
