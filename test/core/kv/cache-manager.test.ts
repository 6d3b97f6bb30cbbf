// The cache manager decides where a request's KV cache comes from (a session, prefix blocks,
// nothing) and what is kept afterwards, under one byte budget. No model is needed: synthetic
// K/V values encode the tenant, the whole token prefix, the position and the element's lane
// (test/helpers/synthetic-kv.ts), so any reuse of the wrong data is a value mismatch.
import t from 'tap';
import fc from 'fast-check';
import { KvCacheManager, type Lease } from '../../../src/core/kv/cache-manager.js';
import type { CacheSnapshot } from '../../../src/core/kv/cache-stats.js';
import type { KvCache } from '../../../src/core/kv/kv-cache.js';
import { type KvLayout, kvBytesPerToken } from '../../../src/core/kv/layout.js';
import { SimulatedRun, buildKv, kvMismatch, positionOf } from '../../helpers/synthetic-kv.js';

const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 4, dtype: 'float32' };
const BS = 4;
const BPT = 2 * 2 * 2 * 4 * 4; // 2 × layers × kvHeads × headDim × 4 bytes = 128
const BLOCK = BS * BPT; // 512
const TTL = 60_000;

function setup(budgetTokens: number, options: { layout?: KvLayout; blockSize?: number } = {}) {
  let now = 1_700_000_000_000;
  const manager = new KvCacheManager({
    layout: options.layout ?? layout,
    maxBytes: budgetTokens * kvBytesPerToken(options.layout ?? layout),
    blockSize: options.blockSize ?? BS,
    sessionTtlMs: TTL,
    now: () => now,
  });
  return {
    manager,
    clock: {
      advance(ms: number) {
        now += ms;
      },
      get now() {
        return now;
      },
    },
  };
}

interface Req {
  tenant?: string;
  sessionId?: string;
  prompt: readonly number[];
  maxTokens?: number;
  /** Tokens the run samples (default one: the cache ends at exactly the prompt). */
  generated?: readonly number[];
  keep?: boolean;
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
/** Unix seconds, as SessionInfo reports times. */
const sec = (ms: number) => Math.floor(ms / 1000);

/** acquire → steps (grow) → release, as the engine does; undefined when not admitted. */
function serve(manager: KvCacheManager, req: Req) {
  const tenant = req.tenant ?? 'alice';
  const generated = req.generated ?? [900];
  const lease = manager.acquire({ tenant, sessionId: req.sessionId, promptIds: req.prompt, maxTokens: req.maxTokens ?? generated.length });
  if (!lease) return undefined;
  const mismatch = kvMismatch(lease.kv, tenant, req.prompt, lease.cachedTokens);
  const run = new SimulatedRun(lease, tenant, req.prompt, generated);
  const final = run.finish(manager, req.keep ?? true);
  return { lease, mismatch, final };
}

/** Every position an element claims to hold, per token, must be its own (blocks joined in order). */
function positionsInOrder(kv: KvCache): boolean {
  const { kvHeads, headDim } = kv.layout;
  for (const data of kv.tensors) {
    for (let h = 0; h < kvHeads; h++) {
      for (let p = 0; p < kv.length; p++) {
        for (let d = 0; d < headDim; d++) if (positionOf(data[(h * kv.length + p) * headDim + d]!) !== p) return false;
      }
    }
  }
  return true;
}

t.test('constructor', async (t) => {
  const base = { layout, maxBytes: 1024, blockSize: 4, sessionTtlMs: 1000 };
  t.throws(() => new KvCacheManager({ ...base, blockSize: 0 }), RangeError);
  t.throws(() => new KvCacheManager({ ...base, blockSize: 1.5 }), RangeError);
  t.throws(() => new KvCacheManager({ ...base, sessionTtlMs: 0 }), RangeError);
  t.throws(() => new KvCacheManager({ ...base, sessionTtlMs: NaN }), RangeError);
  for (const maxBytes of [0, -1, Infinity, NaN]) t.throws(() => new KvCacheManager({ ...base, maxBytes }), RangeError, `maxBytes ${maxBytes}`);
  const m = new KvCacheManager(base);
  t.equal(m.bytesPerToken, BPT, '2 × layers × kvHeads × headDim × 4');
  t.equal(m.worstCaseBytes(10, 6), 16 * BPT);
  t.ok(m.canEverFit(4, 4));
  t.notOk(m.canEverFit(4, 5));
});

t.test('a miss, then the same prompt hits every full block but the last token', async (t) => {
  for (let len = 1; len <= 17; len++) {
    const { manager } = setup(100);
    const prompt = range(1, len);
    const first = serve(manager, { prompt })!;
    t.equal(first.lease.result, 'miss', `len ${len}: first is a miss`);
    t.equal(first.lease.cachedTokens, 0);
    t.equal(first.lease.kv.length, 0);
    t.equal(manager.snapshot().entries.prefix, Math.floor(len / BS), `len ${len}: the cache is kept as its full blocks`);
    const second = serve(manager, { prompt })!;
    const expected = Math.floor((len - 1) / BS) * BS;
    t.equal(second.lease.cachedTokens, expected, `len ${len}: reuses floor((len-1)/${BS})×${BS} = ${expected} tokens`);
    t.equal(second.lease.result, expected === 0 ? 'miss' : 'hit', `len ${len}: ${expected === 0 ? 'nothing reusable' : "result 'hit'"}`);
    t.equal(second.mismatch, undefined, `len ${len}: reused K/V equal what was computed`);
    t.ok(positionsInOrder(second.lease.kv), `len ${len}: blocks joined in order`);
  }
});

t.test('reused values are the originals, joined in order', async (t) => {
  const { manager } = setup(100);
  const prompt = range(1, 13);
  const first = serve(manager, { prompt })!;
  const second = serve(manager, { prompt })!;
  t.equal(second.lease.cachedTokens, 12);
  // Compare element by element with the cache the first run computed (not only the formula).
  const original = first.final.kv;
  const reused = second.lease.kv;
  let equal = true;
  for (let i = 0; i < original.tensors.length; i++) {
    for (let h = 0; h < layout.kvHeads; h++) {
      const a = original.tensors[i]!.subarray(h * original.length * layout.headDim, (h * original.length + 12) * layout.headDim);
      const b = reused.tensors[i]!.subarray(h * 12 * layout.headDim, (h + 1) * 12 * layout.headDim);
      if (a.length !== b.length || a.some((x, k) => x !== b[k])) equal = false;
    }
  }
  t.ok(equal, 'every reused element equals the element computed for that position by the first request');
  t.not(reused.tensors[0], original.tensors[0], 'blocks are copies: the kept cache is not aliased');
  t.ok(positionsInOrder(reused));
});

t.test('a prompt sharing only the first block is a partial hit', async (t) => {
  const { manager } = setup(100);
  serve(manager, { prompt: range(1, 13) }); // blocks [1..4] [5..8] [9..12]
  const other = [1, 2, 3, 4, 50, 51, 52, 53, 9, 10, 11, 12, 60];
  const r = serve(manager, { prompt: other })!;
  t.equal(r.lease.result, 'partial');
  t.equal(r.lease.cachedTokens, BS, 'only the first block: a later block with equal tokens but another parent is not reused');
  t.equal(r.mismatch, undefined);
  const shorter = serve(manager, { prompt: [1, 2, 3, 4, 5, 6, 7] })!;
  t.equal(shorter.lease.cachedTokens, 4, 'a prompt whose second block is incomplete');
  t.equal(shorter.lease.result, 'hit', 'every full block it has was reused');
  const noShare = serve(manager, { prompt: [2, 1, 3, 4, 5, 6, 7, 8, 9] })!;
  t.equal(noShare.lease.result, 'miss', 'the first block differs');
});

t.test('tenant isolation', async (t) => {
  const { manager } = setup(200);
  const prompt = range(1, 13);
  serve(manager, { tenant: 'alice', prompt });
  const bob = serve(manager, { tenant: 'bob', prompt })!;
  t.equal(bob.lease.result, 'miss', "another tenant never reuses alice's blocks");
  t.equal(bob.lease.cachedTokens, 0);
  const alice = serve(manager, { tenant: 'alice', prompt })!;
  t.equal(alice.lease.result, 'hit');
  t.equal(alice.mismatch, undefined, "alice gets alice's values");
  const bob2 = serve(manager, { tenant: 'bob', prompt })!;
  t.equal(bob2.lease.result, 'hit', "bob's own blocks, kept by his first request");
  t.equal(bob2.mismatch, undefined, "bob gets bob's values, not alice's");

  serve(manager, { tenant: 'alice', sessionId: 'chat', prompt: range(100, 10) });
  t.ok(manager.session('alice', 'chat'));
  t.equal(manager.session('bob', 'chat'), undefined, "bob does not see alice's session");
  t.same(manager.sessions('bob'), []);
  t.equal(manager.deleteSession('bob', 'chat'), false, "bob cannot delete alice's session");
  // While alice's next turn runs, her session lives in her request: still hers alone.
  const aliceTurn = manager.acquire({ tenant: 'alice', sessionId: 'chat', promptIds: range(100, 11), maxTokens: 1 })!;
  t.equal(aliceTurn.cachedTokens, 10, "alice's request takes her session over");
  t.match(manager.session('alice', 'chat'), { pinned: true, tokens: 10 });
  t.equal(manager.session('bob', 'chat'), undefined, "bob does not see alice's session in use either");
  t.same(manager.sessions('bob'), []);
  t.equal(manager.deleteSession('bob', 'chat'), false, 'nor can he delete it');
  t.match(manager.session('alice', 'chat'), { pinned: true, tokens: 10 }, 'still in use by alice');
  const bobChat = serve(manager, { tenant: 'bob', sessionId: 'chat', prompt: range(100, 12) })!;
  t.equal(bobChat.lease.result, 'miss', 'the same session id under bob starts from nothing');
  t.equal(bobChat.mismatch, undefined);
  new SimulatedRun(aliceTurn, 'alice', range(100, 11), [900]).finish(manager);
  t.same(
    manager.sessions('alice').map((s) => s.tokens),
    [11],
    "alice's session holds her own conversation",
  );
  t.same(
    manager.sessions('bob').map((s) => s.tokens),
    [12],
  );
});

t.test('sessions', async (t) => {
  const { manager, clock } = setup(200);
  const created = sec(clock.now);
  const first = serve(manager, { sessionId: 's', prompt: range(1, 10), generated: [500, 501, 502], maxTokens: 5 })!;
  t.equal(first.lease.result, 'miss');
  t.equal(first.final.kv.length, 12, 'prompt + every sampled token but the last');
  t.same(first.final.tokens, [...range(1, 10), 500, 501]);
  t.same(manager.session('alice', 's'), { id: 's', tokens: 12, bytes: 12 * BPT, created, last_used: created, pinned: false, tier: 'ram' });
  t.equal(manager.snapshot().entries.prefix, 0, 'a session request keeps a session, not blocks');

  // The next turn extends the conversation: every session token is reused, and the request
  // takes the session over — its cache becomes the request's own.
  clock.advance(5_000);
  const turn2 = [...first.final.tokens, 502, 7, 8];
  const lease = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: turn2, maxTokens: 2 })!;
  t.equal(lease.cachedTokens, 12, "all of the session's tokens");
  t.equal(lease.result, 'partial', 'the prompt goes on past the session (possible = prompt − 1 = 14)');
  t.equal(kvMismatch(lease.kv, 'alice', turn2, 12), undefined);
  t.equal(lease.kv, first.final.kv, 'all of the session reused: its very cache is handed over, not copied');
  let s = manager.snapshot();
  t.same(s.entries, { session: 0, prefix: 0, active: 1 }, "the session's pool entry became the request's active entry");
  t.equal(s.bytes, 12 * BPT, 'its bytes are counted once');
  t.equal(s.pinnedEntries, 1, 'only the running request is pinned');
  t.same(s.evictions, { lru: 0, ttl: 0, deleted: 0 }, 'a take-over is not an eviction');
  t.same(s.evictedBytes, { lru: 0, ttl: 0, deleted: 0 });
  const inUse = { id: 's', tokens: 12, bytes: 12 * BPT, created, last_used: created + 5, pinned: true, tier: 'ram' };
  t.same(manager.session('alice', 's'), inUse, 'in use: listed as pinned, with its original creation time');
  t.same(manager.sessions('alice'), [inUse]);
  const run = new SimulatedRun(lease, 'alice', turn2, [600, 601]);
  clock.advance(1_000);
  run.step(manager); // the cache now covers the 15-token prompt
  t.same(
    manager.session('alice', 's'),
    { id: 's', tokens: 15, bytes: 15 * BPT, created, last_used: created + 6, pinned: true, tier: 'ram' },
    'a session in use grows with its request, and each step (grow) touches it',
  );
  t.equal(manager.snapshot().bytes, 15 * BPT);
  clock.advance(1_000);
  run.finish(manager);
  t.same(
    manager.session('alice', 's'),
    { id: 's', tokens: 16, bytes: 16 * BPT, created, last_used: created + 7, pinned: false, tier: 'ram' },
    'kept again from the final cache, keeping its original creation time',
  );
  s = manager.snapshot();
  t.same(s.entries, { session: 1, prefix: 0, active: 0 }, 'one entry per session id');
  t.equal(s.bytes, 16 * BPT);
  t.equal(s.pinnedEntries, 0);

  const tokens = [...turn2, 600];
  const exact = serve(manager, { sessionId: 's', prompt: tokens })!;
  t.equal(exact.lease.cachedTokens, 15, 'a prompt equal to the session reuses all but its last token');
  t.equal(exact.lease.result, 'hit');
  t.equal(exact.mismatch, undefined);
  const plusOne = serve(manager, { sessionId: 's', prompt: [...tokens, 9] })!;
  t.equal(plusOne.lease.cachedTokens, 16, 'one new token: every session token reused');
  t.equal(plusOne.lease.result, 'hit');

  const session = manager.session('alice', 's')!;
  t.equal(session.tokens, 17);
  t.equal(session.created, created, 'still the conversation that began first');
  const kept = plusOne.final.kv;
  const diverging = [...tokens.slice(0, 7), 77, 78, 79, 80, 81];
  const d = serve(manager, { sessionId: 's', prompt: diverging })!;
  t.equal(d.lease.cachedTokens, 7, 'a diverging prompt reuses only the common prefix');
  t.equal(d.lease.result, 'partial');
  t.equal(d.mismatch, undefined, 'the common part is copied out correctly');
  t.not(d.lease.kv.tensors[0], kept.tensors[0], 'part of the session reused: a copy, not the same buffers');
  t.equal(kvMismatch(kept, 'alice', [...tokens, 9], 17), undefined, 'the old session cache is left intact');
  t.match(manager.session('alice', 's'), { tokens: 12, created }, 'and the session follows the new conversation');

  clock.advance(1_000);
  const other = serve(manager, { sessionId: 's', prompt: [99, ...diverging] })!;
  t.equal(other.lease.result, 'miss', 'nothing in common');
  t.same(
    manager.session('alice', 's'),
    { id: 's', tokens: 13, bytes: 13 * BPT, created: sec(clock.now), last_used: sec(clock.now), pinned: false, tier: 'ram' },
    'not taken over: replaced at release, as a new session',
  );
  s = manager.snapshot();
  t.same(s.evictions, { lru: 0, ttl: 0, deleted: 0 }, 'no eviction along the way');
  t.same(s.entries, { session: 1, prefix: 0, active: 0 });
  t.equal(s.bytes, 13 * BPT);
});

t.test('blocks win over a shorter session match', async (t) => {
  const { manager, clock } = setup(200);
  const prompt = range(1, 13);
  serve(manager, { prompt }); // 3 blocks
  serve(manager, { sessionId: 's', prompt: [1, 2, 99] }); // session [1, 2, 99]
  const info = manager.session('alice', 's')!;
  clock.advance(2_000);
  const lease = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: prompt, maxTokens: 1 })!;
  t.equal(lease.cachedTokens, 12, 'the 12 tokens of the blocks beat the 2 of the session');
  t.equal(lease.result, 'hit');
  t.equal(kvMismatch(lease.kv, 'alice', prompt, 12), undefined);
  t.same(manager.session('alice', 's'), info, 'the session is not taken over: still kept, unpinned and untouched');
  t.same(manager.snapshot().entries, { session: 1, prefix: 3, active: 1 });
  t.equal(manager.snapshot().pinnedEntries, 1, 'the blocks read are not pinned either');
  new SimulatedRun(lease, 'alice', prompt, [900]).finish(manager);
  t.same(
    manager.session('alice', 's'),
    { id: 's', tokens: 13, bytes: 13 * BPT, created: sec(clock.now), last_used: sec(clock.now), pinned: false, tier: 'ram' },
    'replaced at release',
  );
  t.same(manager.snapshot().entries, { session: 1, prefix: 3, active: 0 });
  t.equal(manager.snapshot().bytes, 13 * BPT + 3 * BLOCK);
});

t.test('session TTL', async (t) => {
  const { manager, clock } = setup(200);
  serve(manager, { sessionId: 's', prompt: range(1, 10) });
  const bytes = manager.session('alice', 's')!.bytes;
  t.equal(bytes, 10 * BPT);
  clock.advance(TTL);
  t.equal(manager.expireSessions(), 0, 'idle exactly the TTL: kept');
  clock.advance(1);
  t.equal(manager.expireSessions(), 1, 'idle past the TTL: evicted');
  t.equal(manager.session('alice', 's'), undefined);
  let s = manager.snapshot();
  t.equal(s.evictions.ttl, 1);
  t.equal(s.evictedBytes.ttl, bytes);
  t.equal(s.bytes, 0);

  // acquire expires on its own; a session in use (taken over by its request) is never expired.
  serve(manager, { sessionId: 'a', prompt: range(1, 6) });
  const bCreated = sec(clock.now);
  serve(manager, { sessionId: 'b', prompt: range(1, 8) });
  const lease = manager.acquire({ tenant: 'alice', sessionId: 'b', promptIds: range(1, 9), maxTokens: 1 })!;
  t.equal(lease.cachedTokens, 8);
  t.same(manager.snapshot().entries, { session: 1, prefix: 0, active: 1 }, 'b now lives in the running request');
  clock.advance(TTL + 1);
  const miss = manager.acquire({ tenant: 'alice', sessionId: 'a', promptIds: range(1, 7), maxTokens: 1 })!;
  t.equal(miss.result, 'miss', 'the idle session expired before the lookup');
  s = manager.snapshot();
  t.equal(s.evictions.ttl, 2, 'acquire expired session a, not session b, in use');
  t.equal(s.evictedBytes.ttl, bytes + 6 * BPT);
  t.match(manager.session('alice', 'b'), { pinned: true, tokens: 8, created: bCreated }, 'b is in use and kept');
  manager.release(miss);
  t.equal(manager.session('alice', 'a'), undefined, 'released without a final cache: nothing kept');
  new SimulatedRun(lease, 'alice', range(1, 9), [900]).finish(manager);
  t.same(
    manager.session('alice', 'b'),
    { id: 'b', tokens: 9, bytes: 9 * BPT, created: bCreated, last_used: sec(clock.now), pinned: false, tier: 'ram' },
    'kept again at release, its age intact',
  );
  t.equal(manager.expireSessions(), 0, 'releasing counts as use');
  clock.advance(TTL + 1);
  t.equal(manager.expireSessions(), 1);
  t.equal(manager.snapshot().evictedBytes.ttl, bytes + 15 * BPT);
  t.equal(manager.snapshot().evictions.ttl, 3);
  t.equal(manager.snapshot().bytes, 0);
});

t.test('a request that took its session over and ends without a final cache keeps nothing', async (t) => {
  // The engine releases without a final cache when a step failed: the cache may be half
  // updated, and the session's own cache was handed to the request, so nothing is left to keep.
  const { manager } = setup(100);
  serve(manager, { sessionId: 's', prompt: range(1, 8) });
  const lease = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 9), maxTokens: 1 })!;
  t.equal(lease.cachedTokens, 8, 'taken over');
  manager.release(lease);
  t.equal(manager.session('alice', 's'), undefined);
  const s = manager.snapshot();
  t.same(s.entries, { session: 0, prefix: 0, active: 0 });
  t.equal(s.bytes, 0);
  t.same(s.evictions, { lru: 0, ttl: 0, deleted: 0 }, 'not counted as an eviction');
});

t.test('deleteSession', async (t) => {
  const { manager } = setup(200);
  serve(manager, { sessionId: 's', prompt: range(1, 10), generated: [1, 2] });
  t.equal(manager.deleteSession('alice', 's'), true);
  t.equal(manager.deleteSession('alice', 's'), false, 'already gone');
  t.equal(manager.deleteSession('alice', 'never'), false);
  let s = manager.snapshot();
  t.equal(s.evictions.deleted, 1);
  t.equal(s.evictedBytes.deleted, 11 * BPT);
  t.equal(s.bytes, 0);
  t.same(manager.sessions('alice'), []);
  const again = serve(manager, { sessionId: 's', prompt: range(1, 10) })!;
  t.equal(again.lease.result, 'miss', 'a deleted session is not reused');

  // In use: marked deleted — gone from listings at once — and counted when its request ends.
  const lease = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 11), maxTokens: 2 })!;
  t.equal(lease.cachedTokens, 10, 'taken over');
  t.equal(manager.deleteSession('alice', 's'), true, 'a session in use can be deleted');
  t.equal(manager.session('alice', 's'), undefined, 'gone from listings at once');
  t.same(manager.sessions('alice'), []);
  t.equal(manager.deleteSession('alice', 's'), false, 'already deleted');
  s = manager.snapshot();
  t.equal(s.evictions.deleted, 1, 'counted only once its request ends');
  t.equal(s.evictedBytes.deleted, 11 * BPT);
  t.same(s.entries, { session: 0, prefix: 0, active: 1 }, 'the running request still holds its cache');
  const final = new SimulatedRun(lease, 'alice', range(1, 11), [1, 2]).finish(manager);
  t.equal(final.kv.length, 12);
  t.equal(manager.session('alice', 's'), undefined, 'nothing kept at release');
  s = manager.snapshot();
  t.equal(s.evictions.deleted, 2);
  t.equal(s.evictedBytes.deleted, 11 * BPT + 12 * BPT, 'the final cache it would have kept');
  t.same(s.entries, { session: 0, prefix: 0, active: 0 });
  t.equal(s.bytes, 0);

  // Deleted in use and released without a final cache: counted, with no bytes.
  serve(manager, { sessionId: 's', prompt: range(1, 6) });
  const l2 = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 7), maxTokens: 1 })!;
  t.equal(l2.cachedTokens, 6);
  t.equal(manager.deleteSession('alice', 's'), true);
  manager.release(l2);
  s = manager.snapshot();
  t.equal(s.evictions.deleted, 3);
  t.equal(s.evictedBytes.deleted, 23 * BPT);
  t.equal(s.bytes, 0);
  t.equal(manager.session('alice', 's'), undefined);
  const fresh = serve(manager, { sessionId: 's', prompt: range(1, 7) })!;
  t.equal(fresh.lease.result, 'miss', 'a session deleted in use is not reused either');
});

t.test('LRU eviction under a small budget', async (t) => {
  const { manager } = setup(24); // 3072 bytes = 6 blocks
  const A = range(1, 13);
  const B = range(101, 13);
  serve(manager, { prompt: A }); // blocks A0 A1 A2, LRU: A2 A1 A0 (tail unpinned first)
  t.equal(manager.bytesInUse, 3 * BLOCK);
  // B runs: its cache grows to 13 tokens (1664 B) beside A's 1536 B: 3200 > 3072, so the
  // least recently used block (A's tail, A2) goes. B's 3 blocks then fit once it released.
  serve(manager, { prompt: B });
  let s = manager.snapshot();
  t.equal(s.evictions.lru, 1, 'one block evicted');
  t.equal(s.evictedBytes.lru, BLOCK, 'exactly one block of bytes');
  t.equal(s.entries.prefix, 5);
  t.equal(s.bytes, 5 * BLOCK);
  const a = serve(manager, { prompt: A, keep: false })!;
  t.equal(a.lease.cachedTokens, 8, "A's chain lost its tail, not its head: 2 blocks still reusable");
  t.equal(a.lease.result, 'partial');
  t.equal(a.mismatch, undefined);

  // A session bigger than what is free evicts as many LRU entries as it needs.
  serve(manager, { sessionId: 's', prompt: range(200, 20) });
  s = manager.snapshot();
  t.equal(manager.session('alice', 's')?.tokens, 20);
  t.equal(s.bytes, 20 * BPT + s.entries.prefix * BLOCK);
  t.ok(s.bytes <= s.capacityBytes);
  t.equal(s.evictedBytes.lru, s.evictions.lru * BLOCK, 'only blocks were evicted, each exactly a block of bytes');
  t.equal(s.evictions.lru, 5, 'A2; then B2 B1 B0 to hold the partial hit’s copy; then one more block for the session');
  t.equal(s.entries.prefix, 1, '20 tokens (2560 B) + one block (512 B) fill 3072 B');
});

t.test('admission by committed worst-case bytes', async (t) => {
  const { manager } = setup(40); // 5120 bytes
  const l1 = manager.acquire({ tenant: 'alice', promptIds: range(1, 10), maxTokens: 10 })!; // 20 tokens
  const l2 = manager.acquire({ tenant: 'alice', promptIds: range(101, 10), maxTokens: 9 })!; // 19 tokens
  t.ok(l1 && l2, 'two requests committing 39 of 40 tokens');
  const before = manager.snapshot();
  t.equal(manager.acquire({ tenant: 'alice', promptIds: [1, 2], maxTokens: 1 }), undefined, 'a third needing 3 tokens does not fit');
  t.equal(manager.acquire({ tenant: 'bob', sessionId: 'x', promptIds: [7], maxTokens: 1 }), undefined, 'nor one needing 2');
  t.same(manager.snapshot(), before, 'a refused acquire changes nothing (no lookup counted)');
  const l3 = manager.acquire({ tenant: 'alice', promptIds: [1], maxTokens: 0 });
  t.ok(l3, 'exactly the remaining token fits');
  manager.release(l3!);
  t.equal(manager.bytesInUse, 0, 'nothing grown yet: no bytes in use, only committed');

  const r1 = new SimulatedRun(l1, 'alice', range(1, 10), range(900, 10));
  r1.finish(manager); // keeps 19 tokens → 4 blocks
  t.equal(manager.snapshot().entries.prefix, 4);
  const l4 = manager.acquire({ tenant: 'alice', promptIds: [1, 2], maxTokens: 1 });
  t.ok(l4, 'fits after a release');
  manager.release(l4!);

  // A cache hit commits only its own worst case: the blocks it reuses are copied into its
  // cache (counted in its worst case) and stay evictable, so they are not committed again.
  const hitPrompt = range(1, 10); // reuses 8 tokens = 2 blocks
  t.equal(manager.acquire({ tenant: 'alice', promptIds: hitPrompt, maxTokens: 12 }), undefined, '19 + 22 > 40 tokens');
  const hit = manager.acquire({ tenant: 'alice', promptIds: hitPrompt, maxTokens: 11 });
  t.ok(hit, '19 + 21 = 40 tokens: fits exactly, the 2 reused blocks not counted on top');
  t.equal(hit!.cachedTokens, 8);
  t.equal(hit!.result, 'hit');
  let s = manager.snapshot();
  t.same(s.entries, { session: 0, prefix: 4, active: 2 });
  t.equal(s.pinnedEntries, 2, 'only the running requests are pinned, not the blocks the hit read');
  t.equal(s.bytes, 4 * BLOCK + 8 * BPT, "the blocks and the hit's copy of two of them");
  t.equal(manager.acquire({ tenant: 'alice', promptIds: [5], maxTokens: 0 }), undefined, 'the budget is fully committed');
  manager.release(hit!);
  manager.release(l2);
  t.equal(manager.snapshot().entries.active, 0);
  const big = manager.acquire({ tenant: 'alice', promptIds: range(300, 20), maxTokens: 20 });
  t.ok(big, 'an idle server admits a request of the whole budget (cached blocks are evictable)');
  const run = new SimulatedRun(big!, 'alice', range(300, 20), range(900, 20));
  while (!run.done) run.step(manager);
  t.equal(manager.bytesInUse, 39 * BPT, 'every block was evicted to make room');
  s = manager.snapshot();
  t.equal(s.entries.prefix, 0);
  t.equal(s.evictions.lru, 4);
  t.equal(s.evictedBytes.lru, 4 * BLOCK);
  manager.release(big!);
});

t.test('a refused acquire has no side effect: no session taken over, no block touched', async (t) => {
  const { manager, clock } = setup(24); // 3072 bytes
  serve(manager, { prompt: range(101, 9) }); // blocks B0 B1; LRU: B1 B0
  serve(manager, { sessionId: 's', prompt: range(1, 8) }); // session s (8 tokens); LRU: B1 B0 s
  const info = manager.session('alice', 's')!;
  clock.advance(1_000);
  const holder = manager.acquire({ tenant: 'alice', promptIds: range(200, 10), maxTokens: 10 })!; // commits 20 of 24 tokens
  t.ok(holder);
  const before = manager.snapshot();
  t.equal(manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 9), maxTokens: 2 }), undefined, 'the next turn needs 11 tokens: refused');
  t.equal(manager.acquire({ tenant: 'alice', promptIds: range(101, 9), maxTokens: 1 }), undefined, 'a block hit needing 10 tokens: refused');
  t.same(manager.snapshot(), before, 'nothing counted, nothing moved');
  t.same(manager.session('alice', 's'), info, 'the session was not taken over, nor touched');
  // Had the refused block lookup touched B0 B1, the session would now be the LRU entry.
  new SimulatedRun(holder, 'alice', range(200, 10), [900]).step(manager); // 16 + 10 tokens > 24: one entry must go
  const s = manager.snapshot();
  t.equal(s.evictions.lru, 1);
  t.equal(s.evictedBytes.lru, BLOCK, 'the least recently used entry, B1, was evicted');
  t.same(manager.session('alice', 's'), info, 'not the session');
  manager.release(holder);
  const b = serve(manager, { prompt: range(101, 9), keep: false })!;
  t.equal(b.lease.cachedTokens, 4, 'B0 still serves its block');
  t.equal(b.mismatch, undefined);
});

t.test('byte accounting', async (t) => {
  {
    const { manager } = setup(200);
    const r = serve(manager, { sessionId: 's', prompt: range(1, 9), generated: [1, 2, 3, 4] })!;
    const s = manager.snapshot();
    t.equal(s.bytes, 2 * layout.layers * layout.kvHeads * layout.headDim * 4 * 12, 'one session: 2 × layers × kvHeads × headDim × 4 × tokens');
    t.equal(s.bytes, r.final.kv.byteLength);
    t.same(s.entries, { session: 1, prefix: 0, active: 0 });
    t.equal(s.capacityBytes, 200 * BPT);
  }
  {
    const { manager } = setup(200);
    const aliceSession = serve(manager, { sessionId: 'a', prompt: range(1, 7) })!.final.kv;
    const bobSession = serve(manager, { tenant: 'bob', sessionId: 'a', prompt: range(1, 5), generated: [1, 2] })!.final.kv;
    t.equal(aliceSession.length, 7);
    t.equal(bobSession.length, 6);
    serve(manager, { prompt: range(1, 11) }); // 2 blocks
    serve(manager, { prompt: range(1, 9) }); // same 2 blocks, nothing new
    serve(manager, { tenant: 'bob', prompt: range(1, 9) }); // bob's own 2 blocks
    const running: SimulatedRun<Lease>[] = [];
    for (const [tenant, sessionId, prompt] of [
      ['alice', 'a', range(1, 8)],
      ['alice', undefined, range(1, 10)],
      ['bob', undefined, range(50, 3)],
    ] as const) {
      const lease = manager.acquire({ tenant, sessionId, promptIds: prompt, maxTokens: 4 })!;
      const run = new SimulatedRun(lease, tenant, prompt, [1, 2, 3]);
      run.step(manager);
      running.push(run);
    }
    t.same(
      running.map((r) => r.lease.cachedTokens),
      [7, 8, 0],
      "alice's session (taken over), two of her blocks (copied), nothing",
    );
    const s = manager.snapshot();
    const independent = bobSession.byteLength + s.entries.prefix * BLOCK + running.reduce((n, r) => n + r.kv.byteLength, 0);
    t.same(s.entries, { session: 1, prefix: 4, active: 3 }, "alice's session now lives in the request continuing it");
    t.equal(s.bytes, independent, "bob's session + blocks + running caches (alice's session among them, counted once)");
    t.equal(s.bytes, (6 + 16 + 8 + 10 + 3) * BPT);
    t.equal(s.pinnedEntries, 3, 'only the three running requests: blocks read and sessions taken over are not pinned');
    t.match(manager.session('alice', 'a'), { tokens: 8, bytes: 8 * BPT, pinned: true, tier: 'ram' });
    t.match(manager.session('bob', 'a'), { tokens: 6, bytes: 6 * BPT, pinned: false, tier: 'ram' });
    for (const r of running) r.finish(manager, false);
    t.equal(manager.snapshot().bytes, (6 + 16) * BPT, 'releasing without a final cache keeps nothing new (nor the session taken over)');
    t.same(manager.snapshot().entries, { session: 1, prefix: 4, active: 0 });
    t.equal(manager.snapshot().pinnedEntries, 0);
  }
});

t.test('snapshot counters after a known sequence', async (t) => {
  const { manager } = setup(200);
  serve(manager, { prompt: range(1, 11) }); // miss: 0 reused, 11 computed → 2 blocks
  serve(manager, { prompt: range(1, 11) }); // hit: 8 reused, 3 computed
  serve(manager, { prompt: [1, 2, 3, 4, 40, 41, 42, 43, 44, 45] }); // partial: 4 reused, 6 computed
  serve(manager, { sessionId: 's', prompt: range(60, 3) }); // no session yet, no block: miss, 3 computed
  serve(manager, { sessionId: 's', prompt: range(60, 6) }); // session: 3 reused of 5 possible → partial, 3 computed
  serve(manager, { sessionId: 's', prompt: range(60, 7) }); // session holds 6: 6 reused of 6 → hit, 1 computed
  serve(manager, { tenant: 'bob', prompt: range(1, 11) }); // miss, 11 computed
  const s = manager.snapshot();
  t.same(s.lookups, { hit: 2, partial: 2, miss: 3 });
  t.equal(s.reusedTokens, 8 + 4 + 3 + 6);
  t.equal(s.computedTokens, 11 + 3 + 6 + 3 + 3 + 1 + 11);
  t.same(s.evictions, { lru: 0, ttl: 0, deleted: 0 });
  t.same(s.evictedBytes, { lru: 0, ttl: 0, deleted: 0 });
  t.same(s.entries, { session: 1, prefix: 2 + 1 + 2, active: 0 });
  t.equal(s.pinnedEntries, 0);
});

t.test('float16 caches', async (t) => {
  const f16: KvLayout = { layers: 1, kvHeads: 2, headDim: 2, dtype: 'float16' };
  const { manager } = setup(100, { layout: f16 });
  t.equal(manager.bytesPerToken, 2 * 1 * 2 * 2 * 2);
  serve(manager, { prompt: range(1, 9) });
  const r = serve(manager, { prompt: range(1, 9) })!;
  t.equal(r.lease.cachedTokens, 8);
  t.equal(r.mismatch, undefined, 'raw float16 bits reused exactly');
  t.ok(r.lease.kv.tensors.every((x) => x instanceof Uint16Array));
  t.equal(manager.snapshot().bytes, 2 * 4 * manager.bytesPerToken);
  const direct = buildKv(f16, 'alice', range(1, 9), 8);
  t.equal(kvMismatch(direct, 'alice', range(1, 9), 8), undefined, 'helper sanity');
});

// ─── Regressions: bugs this suite found, now fixed ──────────────────────────────────────

t.test('after a request read a chain of blocks, eviction still takes the chain from its tail', async (t) => {
  const { manager } = setup(28); // 3584 bytes
  const P = range(1, 13);
  serve(manager, { prompt: P }); // blocks b0 b1 b2; LRU b2 b1 b0 — tail first, as designed
  // Copies all 3 blocks, touching them tail first (b2 b1 b0 stay in that LRU order), keeps a 13-token session.
  const s = serve(manager, { sessionId: 's', prompt: P })!;
  t.equal(s.lease.cachedTokens, 12);
  // Another request's cache grows to 5 tokens (640 B) beside 3200 B: one 512 B block must go.
  serve(manager, { prompt: range(100, 5) });
  t.equal(manager.snapshot().evictions.lru, 1, 'one block evicted');
  const again = serve(manager, { prompt: P, keep: false })!;
  t.equal(again.mismatch, undefined, 'whatever is reused is correct');
  t.equal(again.lease.cachedTokens, 8, 'the chain lost its tail (b2), so b0 b1 still serve 8 tokens');
});

t.test('a block hit counts as use of the blocks it read (they are touched, not pinned)', async (t) => {
  const { manager } = setup(26); // 3328 bytes
  serve(manager, { prompt: range(1, 9) }); // A0 A1; LRU: A1 A0
  serve(manager, { prompt: range(101, 9) }); // B0 B1; LRU: A1 A0 B1 B0
  const hit = serve(manager, { prompt: range(1, 9), keep: false })!; // reads A0 A1; LRU: B1 B0 A1 A0
  t.equal(hit.lease.cachedTokens, 8);
  t.equal(manager.snapshot().evictions.lru, 0);
  serve(manager, { prompt: range(200, 11), keep: false }); // 4 blocks + 11 tokens > 26 tokens: one block must go
  const s = manager.snapshot();
  t.equal(s.evictions.lru, 1);
  t.equal(s.evictedBytes.lru, BLOCK);
  t.equal(serve(manager, { prompt: range(1, 9), keep: false })!.lease.cachedTokens, 8, "A's chain, used more recently, is whole");
  t.equal(serve(manager, { prompt: range(101, 9), keep: false })!.lease.cachedTokens, 4, "B's lost its tail, the least recently used block");
  t.equal(manager.snapshot().evictions.lru, 1);
});

t.test('blocks a running request reads stay evictable; its cache keeps their values, counted once', async (t) => {
  const { manager } = setup(24); // 3072 bytes
  const P = range(1, 9);
  serve(manager, { prompt: P }); // blocks A0 A1 (1024 bytes), unpinned
  // A running request reads A0 A1 (8 cached tokens); it is admitted for its worst case, 10 tokens.
  const reader = manager.acquire({ tenant: 'alice', promptIds: P, maxTokens: 1 })!;
  t.equal(reader.cachedTokens, 8);
  t.equal(manager.snapshot().pinnedEntries, 1, 'only the running request is pinned, not the blocks it reads');
  t.equal(manager.bytesInUse, 2 * BLOCK + 8 * BPT, "the blocks' bytes count in the pool and in the request's entry");
  // A second request needs room: the blocks the first one reads are evicted for it.
  const other = manager.acquire({ tenant: 'alice', promptIds: range(500, 13), maxTokens: 1 })!;
  manager.grow(other, 13);
  t.equal(manager.snapshot().evictions.lru, 2, 'both blocks went');
  t.ok(manager.bytesInUse <= manager.maxBytes, `never over budget (${manager.bytesInUse} of ${manager.maxBytes})`);
  t.equal(kvMismatch(reader.kv, 'alice', P, 8), undefined, 'the running request still reads the right values: its cache keeps the arrays alive');
  t.equal(manager.bytesInUse, 8 * BPT + 13 * BPT, "and those bytes are counted once, as the request's own");
  manager.release(reader);
  manager.release(other);
});

t.test('session keys cannot collide across tenants', async (t) => {
  const { manager } = setup(100);
  serve(manager, { tenant: 'a', sessionId: 'b\u0000c', prompt: range(1, 8) });
  const lease = manager.acquire({ tenant: 'a\u0000b', sessionId: 'c', promptIds: range(1, 9), maxTokens: 1 })!;
  t.equal(lease.cachedTokens, 0, "tenant 'a\\0b' session 'c' does not read tenant 'a' session 'b\\0c'");
  t.equal(kvMismatch(lease.kv, 'a\u0000b', range(1, 9), lease.cachedTokens), undefined, 'no other tenant’s K/V');
  t.equal(manager.session('a\u0000b', 'c'), undefined, 'nor sees it');
  manager.release(lease);
});

t.test('releasing a lease twice does not free its commitment twice', async (t) => {
  const { manager } = setup(20);
  const a = manager.acquire({ tenant: 'alice', promptIds: range(1, 5), maxTokens: 5 })!;
  manager.release(a);
  manager.release(a);
  const b = manager.acquire({ tenant: 'alice', promptIds: range(1, 10), maxTokens: 10 })!;
  t.ok(b);
  t.equal(manager.acquire({ tenant: 'alice', promptIds: range(1, 5), maxTokens: 5 }), undefined, 'the budget is fully committed to b');
  manager.release(b);

  // A session taken over is kept once; a session deleted in use is counted once.
  serve(manager, { sessionId: 's', prompt: range(1, 5) });
  const c = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 6), maxTokens: 1 })!;
  t.equal(c.cachedTokens, 5);
  const cFinal = { kv: buildKv(layout, 'alice', range(1, 6)), tokens: range(1, 6) };
  manager.release(c, cFinal);
  manager.release(c, cFinal);
  let s = manager.snapshot();
  t.same(s.entries, { session: 1, prefix: 0, active: 0 });
  t.equal(s.bytes, 6 * BPT);
  t.match(manager.session('alice', 's'), { tokens: 6, pinned: false, tier: 'ram' });
  const d = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 7), maxTokens: 1 })!;
  t.equal(d.cachedTokens, 6);
  t.equal(manager.deleteSession('alice', 's'), true);
  const dFinal = { kv: buildKv(layout, 'alice', range(1, 7)), tokens: range(1, 7) };
  manager.release(d, dFinal);
  manager.release(d, dFinal);
  s = manager.snapshot();
  t.equal(s.evictions.deleted, 1);
  t.equal(s.evictedBytes.deleted, 7 * BPT);
  t.equal(s.bytes, 0);
  t.equal(manager.session('alice', 's'), undefined);
  t.ok(manager.acquire({ tenant: 'alice', promptIds: range(1, 10), maxTokens: 10 }), 'every commitment was freed exactly once');
});

t.test('a session with nothing in common with the prompt is not taken over', async (t) => {
  const { manager, clock } = setup(100);
  serve(manager, { sessionId: 's', prompt: range(1, 6) });
  const info = manager.session('alice', 's')!;
  clock.advance(1_000);
  const lease = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(50, 6), maxTokens: 1 })!;
  t.equal(lease.result, 'miss');
  t.same(manager.session('alice', 's'), info, 'still kept, unpinned, while the request runs');
  t.same(manager.snapshot().entries, { session: 1, prefix: 0, active: 1 });
  manager.release(lease); // no final cache (a failed step)
  t.same(manager.session('alice', 's'), info, 'a request that ends without a final cache leaves it as it was');
  t.same(manager.snapshot().entries, { session: 1, prefix: 0, active: 0 });
  t.equal(manager.snapshot().bytes, 6 * BPT);
  const r = serve(manager, { sessionId: 's', prompt: range(50, 6) })!;
  t.equal(r.lease.result, 'miss');
  t.same(
    manager.session('alice', 's'),
    { id: 's', tokens: 6, bytes: 6 * BPT, created: sec(clock.now), last_used: sec(clock.now), pinned: false, tier: 'ram' },
    'with a final cache: replaced at release',
  );
  t.same(manager.snapshot().evictions, { lru: 0, ttl: 0, deleted: 0 });
});

t.test('concurrent requests on one session id', async (t) => {
  {
    const { manager } = setup(100);
    serve(manager, { sessionId: 's', prompt: range(1, 4) });
    const first = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 5), maxTokens: 1 })!;
    t.equal(first.cachedTokens, 4, 'the first request takes the session over');
    const second = serve(manager, { sessionId: 's', prompt: range(1, 6) })!;
    t.equal(second.lease.cachedTokens, 0, 'the session is in use: a second request cannot take it over');
    t.equal(manager.sessions('alice').filter((i) => i.id === 's').length, 1, 'one listing per session id');
    t.match(manager.session('alice', 's'), { pinned: true, tokens: 4 }, 'still the running request’s');
    t.equal(manager.deleteSession('alice', 's'), true);
    t.equal(manager.session('alice', 's'), undefined, 'deleted means gone');
    t.same(manager.sessions('alice'), []);
    new SimulatedRun(first, 'alice', range(1, 5), [900]).finish(manager);
    t.equal(manager.session('alice', 's'), undefined, 'and it stays gone once the first request ends');
  }
  {
    const { manager } = setup(100);
    serve(manager, { sessionId: 's', prompt: range(1, 4) });
    const first = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 5), maxTokens: 1 })!;
    t.equal(manager.deleteSession('alice', 's'), true, 'deleted while the first request runs');
    serve(manager, { sessionId: 's', prompt: range(1, 6) }); // a new session under the same id
    t.match(manager.session('alice', 's'), { pinned: false, tokens: 6 });
    const third = manager.acquire({ tenant: 'alice', sessionId: 's', promptIds: range(1, 7), maxTokens: 1 })!;
    t.equal(third.cachedTokens, 6, 'a third request takes the new session over');
    new SimulatedRun(first, 'alice', range(1, 5), [900]).finish(manager);
    t.equal(manager.snapshot().evictions.deleted, 1, "the first request's end counts the deletion");
    t.match(manager.session('alice', 's'), { pinned: true, tokens: 6 }, "and leaves the third request's hold on the new session alone");
    t.equal(manager.deleteSession('alice', 's'), true);
    new SimulatedRun(third, 'alice', range(1, 7), [900]).finish(manager);
    t.equal(manager.session('alice', 's'), undefined, 'deleted while the third request ran: nothing kept');
    t.equal(manager.snapshot().evictions.deleted, 2);
    t.equal(manager.snapshot().bytes, 0);
  }
});

// ─── Random request streams ──────────────────────────────────────────────────────────────

const TENANTS = ['t0', 't1'] as const;
const SESSIONS = ['s0', 's1', 's2'] as const;
const PREFIXES: readonly (readonly number[])[] = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18], [20, 21, 22], []];
const tok = fc.integer({ min: 1, max: 6 });

type Cmd =
  /** session: −1 none, 0..2 that id, 3 the tenant and id of a session kept or in use (the `pick`th, if any). */
  | { c: 'start'; tenant: number; session: number; pick: number; continueSession: boolean; prefix: number; suffix: number[]; maxTokens: number; gen: number[] }
  | { c: 'step'; pick: number }
  | { c: 'finish'; pick: number; keep: boolean }
  /** session: 0..2 that id, 3 the tenant and id of a session kept or in use (the `pick`th, if any). */
  | { c: 'delete'; tenant: number; session: number; pick: number }
  | { c: 'tick'; ms: number }
  | { c: 'expire' };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .record({
        tenant: fc.integer({ min: 0, max: 1 }),
        session: fc.integer({ min: -1, max: 3 }),
        pick: fc.nat(100),
        continueSession: fc.boolean(),
        prefix: fc.integer({ min: 0, max: PREFIXES.length - 1 }),
        suffix: fc.oneof(fc.constant<number[]>([]), fc.array(tok, { maxLength: 2 }), fc.array(tok, { maxLength: 6 })),
        maxTokens: fc.integer({ min: 1, max: 6 }),
        gen: fc.array(tok, { minLength: 1, maxLength: 6 }),
      })
      .map((r) => ({ c: 'start' as const, ...r, gen: r.gen.slice(0, r.maxTokens) })),
  },
  { weight: 3, arbitrary: fc.record({ c: fc.constant('step' as const), pick: fc.nat(100) }) },
  {
    weight: 4,
    arbitrary: fc.record({ c: fc.constant('finish' as const), pick: fc.nat(100), keep: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(false)) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      c: fc.constant('delete' as const),
      tenant: fc.integer({ min: 0, max: 1 }),
      session: fc.integer({ min: 0, max: 3 }),
      pick: fc.nat(100),
    }),
  },
  { weight: 1, arbitrary: fc.record({ c: fc.constant('tick' as const), ms: fc.constantFrom(1_000, TTL / 2, TTL + 1) }) },
  { weight: 1, arbitrary: fc.record({ c: fc.constant('expire' as const) }) },
);

class Failure extends Error {}
function check(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Failure(what);
}

type Final = { kv: KvCache; tokens: readonly number[] };

interface Running {
  run: SimulatedRun<Lease>;
  tenant: string;
  sessionId: string | undefined;
  /** key(tenant, sessionId) for a session request. */
  key: string | undefined;
  committed: number;
  /** Set when the request took its session over: the session lives in the request until release. */
  owner: { createdMs: number; deleted: boolean } | undefined;
  /** When the pool last used its active entry (acquire, every grow). */
  lastUsedMs: number;
}

/** A session the pool should hold (unpinned, evictable) and list. */
interface Kept {
  final: Final;
  createdMs: number;
  keptAtMs: number;
}

const stats = {
  acquired: 0,
  refused: 0,
  reused: 0,
  hits: 0,
  partials: 0,
  takeovers: 0,
  wholeTakeovers: 0,
  notTakenOver: 0,
  contended: 0,
  deletedInUse: 0,
  lruSessions: 0,
  lru: 0,
  ttl: 0,
  ops: 0,
};

function runStream(budgetTokens: number, cmds: readonly Cmd[]): void {
  let now = 1_700_000_000_000;
  const maxBytes = budgetTokens * BPT;
  const manager = new KvCacheManager({ layout, maxBytes, blockSize: BS, sessionTtlMs: TTL, now: () => now });
  const running: Running[] = [];
  /** The reference model of every session: kept ones here; those in use are running requests with an owner. */
  const kept = new Map<string, Kept>();
  /** The last cache this harness released with each (tenant, session id), kept or not: prompts continue it. */
  const records = new Map<string, Final>();
  const key = (tenant: string, id: string) => JSON.stringify([tenant, id]);
  const model = { lookups: 0, reused: 0, computed: 0, deleted: 0, deletedBytes: 0 };
  const liveOwner = (k: string) => running.find((r) => r.key === k && r.owner !== undefined && !r.owner.deleted);
  /** The `pick`th of the sessions the model holds (kept or in use), to aim commands at; `inUse`: one in use if any. */
  const knownSession = (pick: number, inUse = false) => {
    const owned = running.filter((r) => r.owner && !r.owner.deleted).map((r) => r.key!);
    const keys = inUse && owned.length > 0 ? owned : [...kept.keys(), ...owned];
    const k = keys[pick % Math.max(1, keys.length)];
    if (k === undefined) return undefined;
    const [tenant, id] = JSON.parse(k) as [string, string];
    return { tenant, id };
  };
  /** Kept sessions seen evicted within the current operation before something replaced them. */
  let evictedUnseen = { n: 0, bytes: 0 };

  /** What acquire (and the 'expire' command) do first: evicts exactly the kept sessions idle past the TTL. */
  const expire = (what: string) => {
    const before = manager.snapshot();
    const cutoff = now - TTL;
    let n = 0;
    let bytes = 0;
    for (const [k, kp] of [...kept]) {
      if (kp.keptAtMs < cutoff) {
        n++;
        bytes += kp.final.kv.byteLength;
        kept.delete(k);
      }
    }
    const got = manager.expireSessions();
    const s = manager.snapshot();
    check(got === n, `${what}: expireSessions evicted ${got}, expected ${n}`);
    check(
      s.evictions.ttl - before.evictions.ttl === n && s.evictedBytes.ttl - before.evictedBytes.ttl === bytes,
      `${what}: TTL evictions counted ${s.evictions.ttl - before.evictions.ttl} / ${s.evictedBytes.ttl - before.evictedBytes.ttl} B, expected ${n} / ${bytes} B`,
    );
    check(s.evictions.lru === before.evictions.lru, `${what}: expiry evicted by LRU`);
    stats.ttl += n;
  };

  /** Checks the manager against the model after an operation; `before` is the snapshot from before it. */
  const invariants = (what: string, before: CacheSnapshot, mayEvict: boolean) => {
    const s = manager.snapshot();
    check(s.bytes <= maxBytes, `${what}: ${s.bytes} bytes > budget ${maxBytes}`);
    check(s.bytes === manager.bytesInUse, `${what}: snapshot bytes ≠ bytesInUse`);
    let keptBytes = 0;
    let keptCount = 0;
    let lruSessions = evictedUnseen.n;
    let lruSessionBytes = evictedUnseen.bytes;
    evictedUnseen = { n: 0, bytes: 0 };
    for (const tenant of TENANTS) {
      const listed = manager.sessions(tenant);
      check(new Set(listed.map((i) => i.id)).size === listed.length, `${what}: ${tenant} lists a session id twice: ${JSON.stringify(listed)}`);
      for (const info of listed) {
        check((SESSIONS as readonly string[]).includes(info.id), `${what}: unknown session ${info.id}`);
        check(JSON.stringify(manager.session(tenant, info.id)) === JSON.stringify(info), `${what}: session() and sessions() disagree on ${tenant}/${info.id}`);
      }
      for (const id of SESSIONS) {
        const k = key(tenant, id);
        const info = listed.find((i) => i.id === id);
        const owners = running.filter((r) => r.key === k && r.owner && !r.owner.deleted);
        check(owners.length <= 1, `${what}: ${owners.length} running requests hold ${tenant}/${id}`);
        const owner = owners[0];
        const kp = kept.get(k);
        check(!(owner && kp), `${what}: model: ${tenant}/${id} both kept and in use`);
        if (owner) {
          const o = owner.owner!;
          check(info, `${what}: session ${tenant}/${id} in use by a running request is not listed`);
          const bytes = owner.run.kv.byteLength;
          check(
            info.pinned && info.bytes === bytes && info.tokens * BPT === bytes && info.created === sec(o.createdMs) && info.last_used === sec(owner.lastUsedMs),
            `${what}: session ${tenant}/${id} in use listed as ${JSON.stringify(info)}, expected pinned, ${bytes} B, created ${sec(o.createdMs)}, last_used ${sec(owner.lastUsedMs)}`,
          );
        } else if (kp) {
          if (!info) {
            // Gone without being taken over or deleted: it can only have been evicted (checked below).
            lruSessions++;
            lruSessionBytes += kp.final.kv.byteLength;
            kept.delete(k);
            continue;
          }
          const { kv } = kp.final;
          check(
            !info.pinned &&
              info.tokens === kv.length &&
              info.bytes === kv.byteLength &&
              info.created === sec(kp.createdMs) &&
              info.last_used === sec(kp.keptAtMs),
            `${what}: session ${tenant}/${id} listed as ${JSON.stringify(info)}, expected kept ${kv.length} tokens, created ${sec(kp.createdMs)}, last_used ${sec(kp.keptAtMs)}`,
          );
          keptBytes += info.bytes;
          keptCount++;
        } else {
          check(!info, `${what}: session ${tenant}/${id} listed but neither kept nor in use: ${JSON.stringify(info)}`);
        }
      }
    }
    const activeBytes = running.reduce((n, r) => n + r.run.kv.byteLength, 0);
    const independent = keptBytes + s.entries.prefix * BLOCK + activeBytes;
    check(s.bytes === independent, `${what}: snapshot ${s.bytes} B ≠ sessions ${keptBytes} + ${s.entries.prefix} blocks + running ${activeBytes}`);
    check(s.entries.session === keptCount, `${what}: ${s.entries.session} session entries, ${keptCount} kept sessions listed`);
    check(s.entries.active === running.length, `${what}: ${s.entries.active} active entries, ${running.length} running`);
    check(s.pinnedEntries === running.length, `${what}: ${s.pinnedEntries} pinned entries ≠ ${running.length} running`);
    const committed = running.reduce((n, r) => n + r.committed, 0);
    check(committed <= maxBytes, `${what}: ${committed} B committed > ${maxBytes}`);
    const lookups = s.lookups.hit + s.lookups.partial + s.lookups.miss;
    check(
      lookups === model.lookups && s.reusedTokens === model.reused && s.computedTokens === model.computed,
      `${what}: counters ${JSON.stringify(s)} vs ${JSON.stringify(model)}`,
    );
    check(
      s.evictions.deleted === model.deleted && s.evictedBytes.deleted === model.deletedBytes,
      `${what}: deleted ${s.evictions.deleted}/${s.evictedBytes.deleted} B, expected ${model.deleted}/${model.deletedBytes} B`,
    );
    // Within an operation only LRU evicts (TTL expiry is checked on its own): the sessions that
    // vanished, and otherwise whole blocks.
    const lruN = s.evictions.lru - before.evictions.lru;
    const lruB = s.evictedBytes.lru - before.evictedBytes.lru;
    check(
      lruN >= lruSessions && lruB - lruSessionBytes === (lruN - lruSessions) * BLOCK,
      `${what}: ${lruSessions} session(s) of ${lruSessionBytes} B vanished; LRU evicted ${lruN} entries, ${lruB} B`,
    );
    check(mayEvict || lruN === 0, `${what}: an operation that cannot evict evicted ${lruN}`);
    check(s.evictions.ttl === before.evictions.ttl && s.evictedBytes.ttl === before.evictedBytes.ttl, `${what}: unexpected TTL eviction`);
    stats.lru = Math.max(stats.lru, s.evictions.lru);
    stats.lruSessions += lruSessions;
  };

  const finish = (r: Running, keep: boolean) => {
    // The last steps may LRU-evict the kept session this release then replaces: look in between.
    while (!r.run.done) {
      r.run.step(manager);
      r.lastUsedMs = now;
    }
    const kp = r.key === undefined ? undefined : kept.get(r.key);
    if (kp && !manager.sessions(r.tenant).some((i) => i.id === r.sessionId)) {
      evictedUnseen = { n: evictedUnseen.n + 1, bytes: evictedUnseen.bytes + kp.final.kv.byteLength };
      kept.delete(r.key!);
    }
    running.splice(running.indexOf(r), 1);
    const final = r.run.finish(manager, keep);
    if (r.owner?.deleted) {
      // Deleted while in use: counted now, nothing kept.
      model.deleted++;
      model.deletedBytes += keep ? final.kv.byteLength : 0;
    } else if (r.key !== undefined && keep && final.kv.length > 0 && !liveOwner(r.key)) {
      // Kept as the session (replacing any kept one); a session taken over keeps its age.
      kept.set(r.key, { final, createdMs: r.owner ? r.owner.createdMs : now, keptAtMs: now });
    }
    // A session taken over and released without a final cache is gone; a request that did not
    // take its session over and keeps nothing leaves the kept one as it was.
    if (keep && r.key !== undefined) records.set(r.key, final);
  };

  cmds.forEach((cmd, i) => {
    const what = `cmd ${i} ${JSON.stringify(cmd)}`;
    let before = manager.snapshot();
    let mayEvict = false;
    switch (cmd.c) {
      case 'start': {
        // Half of the starts aimed at a known session go to one in use: requests contending for it.
        const target = cmd.session === 3 ? knownSession(cmd.pick >> 1, cmd.pick % 2 === 0) : undefined;
        const tenant = target?.tenant ?? TENANTS[cmd.tenant]!;
        const sessionId = target?.id ?? (cmd.session < 0 || cmd.session === 3 ? undefined : SESSIONS[cmd.session]!);
        const k = sessionId === undefined ? undefined : key(tenant, sessionId);
        expire(`${what} (expiry)`); // what acquire does first: the session seen below is the one it sees
        before = manager.snapshot();
        mayEvict = true;
        const kp = k === undefined ? undefined : kept.get(k);
        const inUse = k === undefined ? undefined : liveOwner(k);
        const rec = kp?.final ?? (k === undefined ? undefined : records.get(k));
        let prompt = [...PREFIXES[cmd.prefix]!, ...cmd.suffix];
        if (cmd.continueSession && rec && rec.tokens.length + cmd.suffix.length < 40) prompt = [...rec.tokens, ...(cmd.suffix.length ? cmd.suffix : [1])];
        if (prompt.length === 0) prompt = [1];
        const maxTokens = cmd.maxTokens;
        const committedBefore = running.reduce((n, r) => n + r.committed, 0);
        const worst = (prompt.length + maxTokens) * BPT;
        // What the kept session of this id could give: the common prefix, capped at prompt − 1 and at the session.
        let common = 0;
        if (kp) {
          const limit = Math.min(prompt.length - 1, kp.final.kv.length);
          while (common < limit && kp.final.tokens[common] === prompt[common]) common++;
        }
        const lease = manager.acquire({ tenant, sessionId, promptIds: prompt, maxTokens });
        // Admission is exactly: the request's own worst case fits beside what running requests committed.
        if (!lease) {
          stats.refused++;
          check(committedBefore + worst > maxBytes, `${what}: refused though ${committedBefore} + ${worst} fits ${maxBytes}`);
          check(JSON.stringify(manager.snapshot()) === JSON.stringify(before), `${what}: a refused acquire changed the cache`);
          mayEvict = false;
          break; // invariants below: the session was not taken over either
        }
        check(committedBefore + worst <= maxBytes, `${what}: admitted ${worst} B beside ${committedBefore} B committed`);
        stats.acquired++;
        const n = lease.cachedTokens;
        check(lease.kv.length === n, `${what}: lease kv length ${lease.kv.length} ≠ cachedTokens ${n}`);
        check(n <= Math.max(0, prompt.length - 1), `${what}: reused ${n} of a ${prompt.length}-token prompt`);
        const mismatch = kvMismatch(lease.kv, tenant, prompt, n);
        check(mismatch === undefined, `${what}: reused K/V wrong: ${mismatch}`);
        check((n === 0) === (lease.result === 'miss'), `${what}: result ${lease.result} with ${n} reused`);
        check(n >= common, `${what}: reused ${n} < ${common} tokens in common with the session`);
        // The session wins ties with the blocks, and is taken over only if it gives something.
        const takeover = kp !== undefined && common > 0 && n === common;
        if (!takeover) check(n % BS === 0, `${what}: ${n} reused tokens from blocks is not whole blocks`);
        if (takeover) {
          const whole = common === kp.final.kv.length;
          if (whole) check(lease.kv === kp.final.kv, `${what}: the whole session reused, yet its cache was not handed over`);
          else check(lease.kv !== kp.final.kv && lease.kv.tensors[0] !== kp.final.kv.tensors[0], `${what}: part of the session reused, yet not copied`);
          kept.delete(k!);
          stats.takeovers++;
          if (whole) stats.wholeTakeovers++;
        } else if (kp) stats.notTakenOver++;
        if (inUse) stats.contended++;
        model.lookups++;
        model.reused += n;
        model.computed += prompt.length - n;
        stats.reused += n;
        if (lease.result === 'hit') stats.hits++;
        if (lease.result === 'partial') stats.partials++;
        running.push({
          run: new SimulatedRun(lease, tenant, prompt, cmd.gen),
          tenant,
          sessionId,
          key: k,
          committed: worst,
          owner: takeover ? { createdMs: kp.createdMs, deleted: false } : undefined,
          lastUsedMs: now,
        });
        break;
      }
      case 'step': {
        const r = running[cmd.pick % Math.max(1, running.length)];
        if (r && !r.run.done) {
          mayEvict = true;
          r.run.step(manager);
          r.lastUsedMs = now;
        }
        break;
      }
      case 'finish': {
        const r = running[cmd.pick % Math.max(1, running.length)];
        if (!r) break;
        mayEvict = true;
        finish(r, cmd.keep);
        break;
      }
      case 'delete': {
        const target = cmd.session === 3 ? knownSession(cmd.pick) : undefined;
        const tenant = target?.tenant ?? TENANTS[cmd.tenant]!;
        const id = target?.id ?? SESSIONS[cmd.session % SESSIONS.length]!;
        const k = key(tenant, id);
        const info = manager.session(tenant, id);
        const owner = liveOwner(k);
        const kp = kept.get(k);
        check((info !== undefined) === (owner !== undefined || kp !== undefined), `${what}: session() before delete: ${JSON.stringify(info)}`);
        const ok = manager.deleteSession(tenant, id);
        check(ok === (info !== undefined), `${what}: deleteSession returned ${ok}`);
        if (owner) {
          // In use: counted when its request ends.
          owner.owner!.deleted = true;
          stats.deletedInUse++;
        } else if (kp) {
          kept.delete(k);
          model.deleted++;
          model.deletedBytes += kp.final.kv.byteLength;
        }
        check(manager.session(tenant, id) === undefined, `${what}: session still there`);
        check(!manager.sessions(tenant).some((s) => s.id === id), `${what}: session still listed`);
        break;
      }
      case 'tick':
        now += cmd.ms;
        break;
      case 'expire':
        expire(what);
        before = manager.snapshot();
        break;
    }
    stats.ops++;
    invariants(what, before, mayEvict);
  });
  // Drain: everything released, only kept caches remain, all within budget.
  while (running.length) {
    const before = manager.snapshot();
    finish(running[running.length - 1]!, true);
    invariants('drain', before, true);
  }
  const s = manager.snapshot();
  check(s.entries.active === 0 && s.pinnedEntries === 0, 'drain: pins left behind');
  check(s.entries.session === kept.size, `drain: ${s.entries.session} sessions, ${kept.size} expected`);
}

t.test('random request streams: budget, accounting and reuse correctness after every operation', async (t) => {
  let runs = 0;
  fc.assert(
    fc.property(fc.constantFrom(16, 24, 40, 80), fc.array(cmdArb, { minLength: 10, maxLength: 40, size: 'max' }), (budget, cmds) => {
      runs++;
      runStream(budget, cmds);
    }),
    { numRuns: 300 },
  );
  t.equal(runs, 300);
  t.ok(stats.ops > 5_000, `${stats.ops} operations, each followed by the invariant check`);
  t.ok(stats.acquired > 800 && stats.refused > 100, `${stats.acquired} admitted, ${stats.refused} refused`);
  t.ok(stats.hits > 20 && stats.partials > 20, `${stats.hits} hits, ${stats.partials} partial hits; ${stats.reused} tokens reused`);
  t.ok(
    stats.takeovers > 50 && stats.wholeTakeovers > 30 && stats.takeovers - stats.wholeTakeovers > 10 && stats.notTakenOver > 20,
    `${stats.takeovers} sessions taken over (${stats.wholeTakeovers} whole), ${stats.notTakenOver} kept sessions not taken over`,
  );
  t.ok(stats.contended > 5 && stats.deletedInUse > 5, `${stats.contended} requests on a session in use, ${stats.deletedInUse} sessions deleted in use`);
  t.ok(stats.lru > 0 && stats.ttl > 0 && stats.lruSessions > 0, `LRU (${stats.lruSessions} sessions) and TTL (${stats.ttl}) evictions happened`);
});

t.test('a finished sequence read in place from its batch row: what is kept is copied before release returns', async (t) => {
  const { DecodeBatch } = await import('../../../src/core/scheduler/batch.js');
  for (const sessionId of [undefined, 'chat']) {
    const { manager } = setup(200);
    const prompt = range(1, 13);
    const lease = manager.acquire({ tenant: 'alice', sessionId, promptIds: prompt, maxTokens: 1 })!;
    const batch = new DecodeBatch<string>(layout);
    batch.add('seq', buildKv(layout, 'alice', prompt));
    batch.add('other', buildKv(layout, 'bob', range(500, 13)));
    manager.grow(lease, prompt.length);
    const view = batch.view('seq');
    t.ok(view.transient);
    manager.release(lease, { kv: view, tokens: prompt });
    // The row's memory is reused at once: the last row moves into its place.
    batch.remove('seq');
    const again = manager.acquire({ tenant: 'alice', sessionId, promptIds: [...prompt, 99], maxTokens: 1 })!;
    t.equal(again.cachedTokens, sessionId ? 13 : 12, `${sessionId ? 'session' : 'prefix blocks'}: reused`);
    t.equal(kvMismatch(again.kv, 'alice', prompt, again.cachedTokens), undefined, `${sessionId ? 'session' : 'prefix blocks'}: the kept copy is intact`);
  }
});
