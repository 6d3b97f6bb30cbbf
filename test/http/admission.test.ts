// Admission on the HTTP thread: the global limit (running + queued), the engine's own count
// (aborted requests it still holds), per-tenant limits, and releases that count once.
import t from 'tap';
import { Admission } from '../../src/http/admission.js';

t.test('refuses the one over capacity with 429 queue_full and Retry-After', async (t) => {
  const a = new Admission(2);
  const r1 = a.admit('x', 0);
  a.admit('y', 0);
  t.throws(() => a.admit('x', 0), { status: 429, code: 'queue_full', headers: { 'Retry-After': '1' } });
  r1();
  r1();
  t.equal(a.inFlight, 1, 'a release counts once');
  t.doesNotThrow(() => a.admit('x', 0));
});

t.test('what the engine still holds counts too', async (t) => {
  const a = new Admission(3);
  t.throws(() => a.admit('x', 3), { name: 'ApiError', status: 429 }, 'three aborted requests not yet ended in the engine');
  t.doesNotThrow(() => a.admit('x', 2));
});

t.test('a tenant limit refuses that tenant only', async (t) => {
  const a = new Admission(10);
  const limits = { maxRequests: 1 };
  const r = a.admit('alice', 0, limits);
  t.throws(() => a.admit('alice', 0, limits), { status: 429, message: /tenant alice/ });
  t.doesNotThrow(() => a.admit('bob', 0, limits));
  r();
  t.doesNotThrow(() => a.admit('alice', 0, limits));
});

t.test('refuses an unbounded capacity', async (t) => {
  t.throws(() => new Admission(0), RangeError);
  t.throws(() => new Admission(Number.POSITIVE_INFINITY), RangeError);
});
