// Tenants' shares of the KV pool: bytes are accounted per tenant, and making room evicts the
// unpinned entries of tenants above their share before anyone else's (LRU within that), so a
// tenant flooding the cache recycles its own entries. A property drives random operations and
// checks, at every eviction, that no entry of a tenant within its share went while an
// over-share tenant still had an evictable one.
import fc from 'fast-check';
import t from 'tap';
import { KvPool, type PoolEntry } from '../../../src/core/kv/pool.js';

type P = { tenant: string; id: string };

function pool(maxBytes: number, onLru?: (e: PoolEntry<P>, p: KvPool<P>) => void) {
  const evicted: string[] = [];
  const p: KvPool<P> = new KvPool<P>({
    maxBytes,
    tenantOf: (payload) => payload.tenant,
    onRemove: (e, reason) => {
      if (reason !== 'lru') return;
      evicted.push(e.payload.id);
      onLru?.(e, p);
    },
  });
  return { p, evicted };
}

t.test('an over-share tenant pays for room with its own entries first', async (t) => {
  const { p, evicted } = pool(100);
  p.setShare('a', 0.3);
  p.setShare('b', 0.5);
  p.add('session', { tenant: 'b', id: 'b1' }, 20);
  p.add('session', { tenant: 'b', id: 'b2' }, 20);
  for (let i = 1; i <= 5; i++) p.add('prefix', { tenant: 'a', id: `a${i}` }, 10);
  t.strictSame(p.tenantBytes(), { a: 50, b: 40 });
  t.ok(p.makeRoom(20), 'room made');
  t.strictSame(evicted, ['a1'], "a (50 > 30) loses its oldest, although b's are older");
  t.ok(p.makeRoom(50));
  t.strictSame(evicted, ['a1', 'a2', 'b1'], "a's next until a is within its share (30), then plain LRU: b's oldest");
  t.strictSame(p.tenantBytes(), { a: 30, b: 20 });
});

t.test('a pinned over-share tenant does not shield itself: then plain LRU', async (t) => {
  const { p, evicted } = pool(100);
  p.setShare('a', 0.25);
  p.add('session', { tenant: 'b', id: 'b1' }, 30);
  const running = p.add('active', { tenant: 'a', id: 'run' }, 60, 1)!;
  t.ok(p.makeRoom(20), 'room from b, since a has nothing evictable');
  t.strictSame(evicted, ['b1']);
  p.remove(running, 'released');
  t.strictSame(p.tenantBytes(), {});
});

t.test('shares: (0, 1] only; a tenant never given one has the whole budget', async (t) => {
  const { p, evicted } = pool(100);
  for (const bad of [0, -0.1, 1.5, Number.NaN]) t.throws(() => p.setShare('a', bad), RangeError, `share ${bad} refused`);
  p.add('prefix', { tenant: 'x', id: 'x1' }, 60);
  p.add('prefix', { tenant: 'y', id: 'y1' }, 30);
  t.ok(p.makeRoom(20));
  t.strictSame(evicted, ['x1'], 'plain LRU without shares');
});

const op = fc.oneof(
  fc.record({
    kind: fc.constant('add' as const),
    tenant: fc.constantFrom('a', 'b', 'c'),
    bytes: fc.integer({ min: 1, max: 40 }),
    pinned: fc.nat(9).map((n) => n < 2),
  }),
  fc.record({ kind: fc.constant('room' as const), bytes: fc.integer({ min: 0, max: 80 }) }),
  fc.record({ kind: fc.constant('unpin' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('touch' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('share' as const), tenant: fc.constantFrom('a', 'b', 'c'), share: fc.double({ min: 0.05, max: 1, noNaN: true }) }),
);

t.test('property: per-tenant bytes add up, and no within-share entry is evicted while an over-share tenant has an evictable one', async (t) => {
  let evictions = 0;
  let violations: string[] = [];
  fc.assert(
    fc.property(fc.array(op, { minLength: 20, maxLength: 200 }), (ops) => {
      violations = [];
      const shares = new Map<string, number>();
      const shareOf = (tenant: string) => shares.get(tenant) ?? 1;
      const { p } = pool(100, (e, p) => {
        evictions++;
        // The pool has already taken the entry out: its tenant's bytes before were these.
        const before = (p.tenantBytes()[e.payload.tenant] ?? 0) + e.bytes;
        if (before > shareOf(e.payload.tenant) * p.maxBytes) return;
        const bytes = p.tenantBytes();
        for (const other of p.lruOrder()) {
          if ((bytes[other.payload.tenant] ?? 0) > shareOf(other.payload.tenant) * p.maxBytes) {
            violations.push(`${e.payload.id} (within share) evicted while ${other.payload.id} of over-share ${other.payload.tenant} was evictable`);
          }
        }
      });
      const handles: PoolEntry<P>[] = [];
      let n = 0;
      for (const o of ops) {
        if (o.kind === 'add') {
          if (p.makeRoom(o.bytes)) handles.push(p.add('prefix', { tenant: o.tenant, id: `${o.tenant}${n++}` }, o.bytes, o.pinned ? 1 : 0)!);
        } else if (o.kind === 'room') p.makeRoom(o.bytes);
        else if (o.kind === 'share') {
          shares.set(o.tenant, o.share);
          p.setShare(o.tenant, o.share);
        } else {
          const live = handles.filter((h) => p.has(h));
          const h = live[o.pick % Math.max(1, live.length)];
          if (!h) continue;
          if (o.kind === 'unpin' && h.refs > 0) p.unpin(h);
          if (o.kind === 'touch') p.touch(h);
        }
        const byTenant: Record<string, number> = {};
        for (const e of p.entries()) byTenant[e.payload.tenant] = (byTenant[e.payload.tenant] ?? 0) + e.bytes;
        if (JSON.stringify(Object.entries(byTenant).sort()) !== JSON.stringify(Object.entries(p.tenantBytes()).sort())) return false;
        if (p.bytesInUse > p.maxBytes) return false;
      }
      return violations.length === 0;
    }),
    { seed: 15, numRuns: 400 },
  );
  t.same(violations, []);
  t.ok(evictions > 100, `${evictions} evictions checked`);
});
