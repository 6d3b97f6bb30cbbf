// The cache manager with real tiers below RAM (a tier thread, the disk in a temporary
// directory): what LRU evicts is demoted, a later prompt fetches it back before admission and
// reuses it, sessions move down and back up, and the RAM budget holds throughout. Synthetic
// K/V values (test/helpers/synthetic-kv.ts) make any wrong reuse a value mismatch; the disk tier
// is exact, so reuse from it must match bit for bit.
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { KvCacheManager } from '../../../../src/core/kv/cache-manager.js';
import { fileName } from '../../../../src/core/kv/tiers/disk-files.js';
import { type KvLayout, kvBytesPerToken } from '../../../../src/core/kv/layout.js';
import { TierThread } from '../../../../src/workers/tier-thread.js';
import { MODEL_DIR } from '../../../helpers/model.js';
import { waitFor } from '../../../helpers/poll.js';
import { SimulatedRun, kvMismatch } from '../../../helpers/synthetic-kv.js';

const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 4, dtype: 'float32' };
const BPT = kvBytesPerToken(layout);
const BS = 4;
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

async function setup(
  t: { teardown(fn: () => Promise<void>): void },
  options: { budgetTokens: number; compressed?: boolean; disk?: boolean; ttlMs?: number; dir?: string },
) {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'kvserve-tiers-'));
  const tiers = await TierThread.start({
    layout,
    onnxPath: join(MODEL_DIR, 'onnx/model.onnx'),
    tokenizerPath: join(MODEL_DIR, 'tokenizer.json'),
    compressed: options.compressed ? { maxBytes: 1 << 20, codec: 'int8' } : undefined,
    disk: options.disk === false ? undefined : { dir, maxBytes: 1 << 24, readReserveBytes: 1 << 20 },
    remote: undefined,
  });
  let now = 1_700_000_000_000;
  const manager = new KvCacheManager({
    layout,
    maxBytes: options.budgetTokens * BPT,
    blockSize: BS,
    sessionTtlMs: options.ttlMs ?? 60_000,
    tiers,
    now: () => now,
  });
  t.teardown(async () => {
    await tiers.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { manager, tiers, dir, advance: (ms: number) => (now += ms) };
}

/** acquire (after fetching from the tiers what the plan names) → steps → release. */
async function serve(manager: KvCacheManager, req: { tenant?: string; sessionId?: string; prompt: number[]; generated?: number[] }) {
  const tenant = req.tenant ?? 'alice';
  const cacheRequest = { tenant, sessionId: req.sessionId, promptIds: req.prompt };
  const plan = manager.tierPlan(cacheRequest);
  await manager.fetchFromTiers(cacheRequest, plan);
  const generated = req.generated ?? [900];
  const lease = manager.acquire({ ...cacheRequest, maxTokens: generated.length })!;
  const mismatch = kvMismatch(lease.kv, tenant, req.prompt, lease.cachedTokens);
  new SimulatedRun(lease, tenant, req.prompt, generated).finish(manager);
  if (manager.bytesInUse > manager.maxBytes) throw new Error(`over budget: ${manager.bytesInUse} > ${manager.maxBytes}`);
  return { plan, lease, mismatch };
}

t.test('evicted blocks are demoted to disk and fetched back exactly before admission', async (t) => {
  const { manager, tiers } = await setup(t, { budgetTokens: 24 });
  const A = range(1, 13);
  await serve(manager, { prompt: A }); // 3 blocks of A kept in RAM
  for (let i = 0; i < 3; i++) await serve(manager, { prompt: range(100 * (i + 1), 13) }); // each evicts what came before
  await waitFor("A's first block on disk", () => manager.tierPlan({ tenant: 'alice', promptIds: A }).length > 0);
  const again = await serve(manager, { prompt: A });
  t.ok(again.plan.length > 0, `fetched ${again.plan.length} blocks from the tiers`);
  t.equal(again.lease.cachedTokens, 12, 'every full block of the prompt but its last token reused');
  t.equal(again.mismatch, undefined, 'the values are the originals, bit for bit (the disk tier is exact)');
  const s = manager.snapshot();
  t.ok(s.tierHits.disk >= again.plan.length, `blocks served from disk counted (${s.tierHits.disk})`);
  t.equal(s.promotions.disk, again.plan.length, 'each promotion counted');
  const stats = await tiers.stats();
  t.ok((stats.demotions['ram>disk'] ?? 0) >= 3, `demotions counted (${JSON.stringify(stats.demotions)})`);
});

t.test('a block back from the int8 tier and evicted again keeps its exact copy on disk, not rewritten', async (t) => {
  const first = await setup(t, { budgetTokens: 24, compressed: true });
  const A = range(1, 13);
  const plan = () => first.manager.tierPlan({ tenant: 'alice', promptIds: A });
  await serve(first.manager, { prompt: A });
  for (let i = 0; i < 3; i++) await serve(first.manager, { prompt: range(100 * (i + 1), 13) });
  const keys = await waitFor("A's three blocks below RAM", () => (plan().length === 3 ? plan() : undefined));
  const files = keys.map((k) => join(first.dir, fileName(k).slice(0, 2), fileName(k)));
  // A rewrite is a new file under the same name (often with the same inode number): birth times tell.
  const born = () => files.map((f) => statSync(f).birthtimeMs);
  const births = await waitFor("A's files written", () => (files.every((f) => existsSync(f)) ? born() : undefined));
  const lossy = await serve(first.manager, { prompt: A });
  t.ok(first.manager.snapshot().tierHits.compressed >= 3, 'served from the int8 tier');
  t.not(lossy.mismatch, undefined, 'int8: not the original values');
  for (let i = 0; i < 3; i++) await serve(first.manager, { prompt: range(1000 * (i + 1), 13) });
  await waitFor('A below RAM again', () => plan().length === 3);
  await first.tiers.close(); // every queued write done
  if (births.every((b) => b > 0)) t.same(born(), births, "A's files are the ones first written: a copy on disk is kept, not written again");
  else t.comment('this filesystem records no birth times: the files are not compared');
  const second = await setup(t, { budgetTokens: 24, dir: first.dir });
  const again = await serve(second.manager, { prompt: A });
  t.equal(again.lease.cachedTokens, 12, 'A from disk after a restart of the tiers');
  t.equal(again.mismatch, undefined, 'the original values, bit for bit: the int8 copy never replaced them');
});

t.test('the compressed tier serves a hit first; int8 keeps values close', async (t) => {
  const { manager } = await setup(t, { budgetTokens: 24, compressed: true, disk: false });
  const A = range(1, 13);
  await serve(manager, { prompt: A });
  for (let i = 0; i < 3; i++) await serve(manager, { prompt: range(100 * (i + 1), 13) });
  await waitFor('A on the compressed tier', () => manager.tierPlan({ tenant: 'alice', promptIds: A }).length > 0);
  const again = await serve(manager, { prompt: A });
  t.equal(again.lease.cachedTokens, 12);
  t.ok(manager.snapshot().tierHits.compressed > 0, 'served from the compressed tier');
  t.ok(manager.snapshot().promotions.compressed > 0, 'promotions counted');
  t.not(again.mismatch, undefined, 'int8 is not exact (its fidelity is measured by bench:tiers, not asserted here)');
});

t.test('a session moves down when evicted, is listed with its tier, and comes back for its next turn', async (t) => {
  const { manager } = await setup(t, { budgetTokens: 30 });
  const first = range(1, 10);
  await serve(manager, { sessionId: 'chat', prompt: first, generated: [50, 51, 52] });
  t.equal(manager.session('alice', 'chat')?.tier, 'ram');
  await serve(manager, { prompt: range(200, 25) }); // pushes the session out of RAM
  await waitFor('the session below RAM', () => manager.session('alice', 'chat')?.tier === 'disk');
  t.match(manager.sessions('alice'), [{ id: 'chat', tier: 'disk', tokens: 12, pinned: false }], 'listed, with its tier');
  t.same(manager.sessions('bob'), [], 'another tenant does not see it');
  t.same(manager.tierPlan({ tenant: 'bob', sessionId: 'chat', promptIds: [...first, 50, 51, 7] }), [], 'nor can it fetch it');
  const next = await serve(manager, { sessionId: 'chat', prompt: [...first, 50, 51, 52, 7, 8] });
  t.equal(next.lease.cachedTokens, 12, 'the whole previous turn reused');
  t.equal(next.mismatch, undefined, 'exactly');
  t.equal(manager.session('alice', 'chat')?.tier, 'ram', 'back in RAM, kept again at release');
});

t.test('deleting a session removes it from every tier; so does expiry', async (t) => {
  const { manager, tiers, advance } = await setup(t, { budgetTokens: 30, ttlMs: 1000 });
  await serve(manager, { sessionId: 'gone', prompt: range(1, 10) });
  await serve(manager, { prompt: range(200, 25) });
  await waitFor('the session below RAM', () => manager.session('alice', 'gone')?.tier === 'disk');
  t.equal(manager.deleteSession('bob', 'gone'), false, 'another tenant cannot delete it');
  t.equal(manager.deleteSession('alice', 'gone'), true, 'a session only on disk can be deleted');
  t.equal(manager.session('alice', 'gone'), undefined);
  await waitFor('the file gone', async () => (await tiers.stats()).bytes.disk === 0 || ![...tiers.entries('session')].length);
  t.equal([...tiers.entries('session')].length, 0);

  await serve(manager, { sessionId: 'idle', prompt: range(1, 10) });
  advance(2000);
  manager.expireSessions();
  t.equal(manager.session('alice', 'idle'), undefined, 'expired in RAM');
  await serve(manager, { prompt: range(300, 25) });
  t.equal([...tiers.entries('session')].length, 0, 'and not demoted: an expired session is gone');
});

t.test('promotion never takes RAM past its budget, and stops when nothing can be evicted', async (t) => {
  const { manager } = await setup(t, { budgetTokens: 24 });
  const A = range(1, 21); // 5 blocks: more than fit beside a running request
  await serve(manager, { prompt: A });
  for (let i = 0; i < 3; i++) await serve(manager, { prompt: range(100 * (i + 1), 21) });
  await waitFor('A below RAM', () => manager.tierPlan({ tenant: 'alice', promptIds: A }).length > 0);
  // A running request pins most of the budget while A is fetched back.
  const holder = manager.acquire({ tenant: 'alice', promptIds: range(700, 15), maxTokens: 1 })!;
  manager.grow(holder, 15);
  const plan = manager.tierPlan({ tenant: 'alice', promptIds: A });
  await manager.fetchFromTiers({ tenant: 'alice', promptIds: A }, plan);
  t.ok(manager.bytesInUse <= manager.maxBytes, `${manager.bytesInUse} ≤ ${manager.maxBytes}`);
  t.ok(manager.snapshot().promotions.disk < plan.length, 'only what fits beside the running request came back');
  manager.release(holder);
});
