// The disk tier's read reserve: buffers of the size last asked for, refilled in idle turns up
// to its byte bound, each handed out once; 0 bytes turns it off without changing what take() gives.
import t from 'tap';
import { PrefaultedBuffers } from '../../../../src/core/kv/tiers/prefaulted.js';

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

t.test('fills up to its bound in idle turns and hands each buffer out once', async (t) => {
  const reserve = new PrefaultedBuffers(10_000);
  reserve.prime(3000);
  t.equal(reserve.bytes, 0, 'nothing is touched before a turn of the event loop');
  await turns(2);
  t.equal(reserve.bytes, 9000, 'three buffers of 3,000 fit in 10,000 bytes');
  const a = reserve.take(3000);
  const b = reserve.take(3000);
  t.equal(a.byteLength, 3000);
  t.not(a.buffer, b.buffer, 'two takes, two buffers');
  t.same(reserve.stats, { taken: 2, missed: 0 });
  t.equal(reserve.bytes, 3000);
  await turns(2);
  t.equal(reserve.bytes, 9000, 'refilled after the takes');
});

t.test('another size replaces the kept one; sizes over the bound and a bound of 0 keep nothing', async (t) => {
  const reserve = new PrefaultedBuffers(10_000);
  reserve.prime(3000);
  await turns(2);
  const other = reserve.take(4000);
  t.equal(other.byteLength, 4000, 'a buffer of the size asked for');
  t.same(reserve.stats, { taken: 0, missed: 1 }, 'none was kept in that size');
  await turns(2);
  t.equal(reserve.bytes, 8000, 'now kept in 4,000-byte buffers');

  const huge = new PrefaultedBuffers(1000);
  t.equal(huge.take(5000).byteLength, 5000);
  await turns(2);
  t.equal(huge.bytes, 0, 'a size above the bound is never kept');

  const off = new PrefaultedBuffers(0);
  t.equal(off.take(64).byteLength, 64);
  await turns(2);
  t.equal(off.bytes, 0);
  t.throws(() => new PrefaultedBuffers(-1), RangeError);
});
