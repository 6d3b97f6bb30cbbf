// GET /v1/kv — the KV cache as the playground's panel shows it: the pool's bytes against its
// budget by kind and by tier, lookups, hit rate, evictions by reason, and the caller's
// sessions. Counts and sizes only, never token contents.
import type { FastifyInstance } from 'fastify';
import { type KvResponse, kvResponse } from '../http/schemas.js';

export default async function kv(app: FastifyInstance): Promise<void> {
  app.get('/v1/kv', async (request) => {
    const engine = app.services.engine();
    const [stats, sessions] = await Promise.all([engine.stats(), engine.sessions(request.tenant)]);
    const { cache, tiers } = stats;
    const now = Math.floor(Date.now() / 1000);
    const prompt = cache.reusedTokens + cache.computedTokens;
    const kind = (k: 'active' | 'session' | 'prefix') => ({ bytes: cache.bytesByKind[k], entries: cache.entries[k] });
    // A lower tier with no budget is off (the tier worker reports 0 for it).
    const lower = (t: 'compressed' | 'disk') =>
      tiers && tiers.capacityBytes[t] > 0 ? { bytes: tiers.bytes[t], capacity_bytes: tiers.capacityBytes[t] } : null;
    const body: KvResponse = {
      object: 'kv',
      pool: {
        bytes: cache.bytes,
        capacity_bytes: cache.capacityBytes,
        pinned_entries: cache.pinnedEntries,
        by_kind: { active: kind('active'), session: kind('session'), prefix: kind('prefix') },
      },
      tiers: {
        ram: { bytes: cache.bytes, capacity_bytes: cache.capacityBytes },
        compressed: lower('compressed'),
        disk: lower('disk'),
        remote: tiers?.remote ? { connected: tiers.remote.connected, sent_bytes: tiers.remote.bytes.sent, received_bytes: tiers.remote.bytes.received } : null,
      },
      lookups: { ...cache.lookups },
      reused_tokens: cache.reusedTokens,
      computed_tokens: cache.computedTokens,
      hit_rate: prompt > 0 ? cache.reusedTokens / prompt : null,
      evictions: { count: { ...cache.evictions }, bytes: { ...cache.evictedBytes } },
      sessions: sessions.map((s) => ({ ...s, age_seconds: Math.max(0, now - s.created) })),
    };
    // The schema is the contract (and the OpenAPI document): a drift fails here, not in a client.
    return kvResponse.parse(body);
  });
}
