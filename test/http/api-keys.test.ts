// The key file: keys in clear or as SHA-256 digests, several per tenant, limits once per
// tenant; every bad file is one ConfigError line naming the problem and never the key; keys
// are kept as digests and compared in constant time.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { ConfigError } from '../../src/config.js';
import { KeyRing, bearerToken } from '../../src/http/api-keys.js';
import { digestOf, keyFile } from '../helpers/keys.js';

t.test('a good file: tenants, digests, limits, the fair default share', async (t) => {
  const f = keyFile(t, {
    keys: [
      { tenant: 'alice', key: 'sk-a1' },
      { tenant: 'alice', sha256: digestOf('sk-a2'), maxRequests: 3 },
      { tenant: 'bob', sha256: digestOf('sk-b').toUpperCase(), kvShare: 0.25 },
      { tenant: 'carol', key: 'sk-c' },
    ],
  });
  const ring = KeyRing.load({ keysFile: f.path, apiKey: 'sk-default' });
  t.ok(ring.enabled);
  t.equal(ring.keyCount, 5);
  t.strictSame(ring.tenants().sort(), ['alice', 'bob', 'carol', 'default']);
  t.equal(ring.tenantOf('sk-a1'), 'alice');
  t.equal(ring.tenantOf('sk-a2'), 'alice');
  t.equal(ring.tenantOf('sk-b'), 'bob', 'upper-case hex digests work');
  t.equal(ring.tenantOf('sk-default'), 'default', 'API_KEY is tenant default');
  for (const wrong of ['', 'sk-a', 'sk-a1 ', 'SK-A1', digestOf('sk-a1')]) t.equal(ring.tenantOf(wrong), undefined, `${JSON.stringify(wrong)} is no key`);
  t.strictSame(ring.limits('alice'), { maxRequests: 3, kvShare: 0.25 }, "alice's limit from her second key; the default share is 1/4");
  t.strictSame(ring.limits('bob'), { maxRequests: undefined, kvShare: 0.25 });
  t.strictSame(ring.limits('nobody'), { kvShare: 1 });
  t.notOk(ring.metricsProtected);
  t.ok(KeyRing.load({ metricsApiKey: 'm' }).isMetricsKey('m'));
  t.notOk(KeyRing.load({ metricsApiKey: 'm' }).isMetricsKey('n'));
  t.notOk(KeyRing.load({}).enabled, 'no keys: open, one tenant');
});

const bad: Array<[what: string, content: unknown, mentions: RegExp]> = [
  ['not JSON', '{"keys": [', /not valid JSON/],
  ['no keys field', {}, /keys/],
  ['an empty list', { keys: [] }, /keys: the list is empty/],
  ['keys not a list', { keys: { tenant: 'a' } }, /keys/],
  ['no key and no digest', { keys: [{ tenant: 'a' }] }, /keys\[0\].*exactly one of "key" or "sha256"/],
  ['both a key and a digest', { keys: [{ tenant: 'a', key: 'k', sha256: digestOf('k') }] }, /keys\[0\].*exactly one/],
  ['a short digest', { keys: [{ tenant: 'a', sha256: 'abc123' }] }, /keys\[0\]\.sha256: must be 64 hexadecimal/],
  ['no tenant', { keys: [{ key: 'sk-secret-1' }] }, /keys\[0\]\.tenant/],
  ['a tenant with spaces', { keys: [{ tenant: 'a b', key: 'k' }] }, /keys\[0\]\.tenant: letters, digits/],
  ['an unknown field', { keys: [{ tenant: 'a', key: 'k', maxRequest: 3 }] }, /keys\[0\].*maxRequest/],
  ['maxRequests 0', { keys: [{ tenant: 'a', key: 'k', maxRequests: 0 }] }, /keys\[0\]\.maxRequests/],
  ['kvShare 1.5', { keys: [{ tenant: 'a', key: 'k', kvShare: 1.5 }] }, /keys\[0\]\.kvShare/],
  [
    'the same key twice',
    {
      keys: [
        { tenant: 'a', key: 'sk-secret-1' },
        { tenant: 'b', sha256: digestOf('sk-secret-1') },
      ],
    },
    /keys\[1\]: the same key is listed twice/,
  ],
  [
    'conflicting limits for one tenant',
    {
      keys: [
        { tenant: 'a', key: 'k1', maxRequests: 2 },
        { tenant: 'a', key: 'k2', maxRequests: 3 },
      ],
    },
    /keys\[1\]: tenant 'a' already has maxRequests 2/,
  ],
];

for (const [what, content, mentions] of bad) {
  t.test(`a bad file (${what}) is one line naming the problem`, async (t) => {
    const f = keyFile(t, content);
    let caught: unknown;
    try {
      KeyRing.load({ keysFile: f.path });
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof ConfigError, 'a ConfigError');
    const message = (caught as Error).message;
    t.match(message, `API_KEYS_FILE ${f.path}`, 'names the file');
    t.match(message, mentions, message);
    t.notMatch(message, /\n/, 'one line');
    t.notMatch(message, 'sk-secret-1', 'never the key');
  });
}

t.test('a missing file names the file and the reason', async (t) => {
  t.throws(() => KeyRing.load({ keysFile: '/nonexistent/keys.json' }), { message: /API_KEYS_FILE \/nonexistent\/keys.json: cannot read it \(ENOENT\)/ });
});

t.test('Bearer header parsing', async (t) => {
  t.equal(bearerToken('Bearer abc'), 'abc');
  t.equal(bearerToken('bearer\tabc '), 'abc');
  for (const h of [undefined, '', 'Bearer', 'Bearer ', 'Basic abc', 'Bearer a b', 'abc']) t.equal(bearerToken(h), undefined, JSON.stringify(h));
});

t.test('review of the comparison: digests only, timingSafeEqual, no early exit over key bytes', async (t) => {
  const src = readFileSync(new URL('../../src/http/api-keys.ts', import.meta.url), 'utf8');
  const tenantOf = src.slice(src.indexOf('  tenantOf(presented'), src.indexOf('  /** Whether a presented key is METRICS_API_KEY'));
  t.match(tenantOf, 'const digest = sha256(presented)', 'the presented key is hashed first, whole');
  t.match(tenantOf, 'timingSafeEqual(found.digest, digest)', 'the stored digest is compared in constant time');
  t.notMatch(tenantOf, /===|startsWith|indexOf|includes/, 'no string comparison of keys');
  t.notMatch(src, /#keys[^;]*\bkey\b[^;]*presented/, 'no key in clear is stored');
  t.match(src.slice(src.indexOf('isMetricsKey(')), /timingSafeEqual\(this\.#metricsKey, sha256\(presented\)\)/, 'METRICS_API_KEY likewise');
});
