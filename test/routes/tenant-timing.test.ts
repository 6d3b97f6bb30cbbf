// The prefix-cache timing side channel (CVE-2025-46570) closed by per-tenant keys: a prompt
// tenant A cached is no faster for tenant B than a prompt nobody cached. Built so a noisy shared
// machine cannot flake it: many interleaved rounds, medians, generous bands — and the
// meaningful check that the same measurement DOES see A's own warm hit (so it is not blind).
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { bearer, keyFile } from '../helpers/keys.js';
import { startServer } from '../helpers/server.js';

const A = 'sk-tenant-a';
const B = 'sk-tenant-b';
const file = keyFile(t, {
  keys: [
    { tenant: 'a', key: A },
    { tenant: 'b', key: B },
  ],
});
const server = await startServer({ env: { API_KEYS_FILE: file.path } });
t.teardown(() => server.close());

/** A prompt of ~430 byte tokens nobody has sent (the model's vocabulary is bytes). */
const freshPrompt = () => `${randomBytes(16).toString('hex')} ${'Friends, Romans, countrymen, lend me your ears; '.repeat(8)}${randomBytes(8).toString('hex')}`;

/** Milliseconds to the whole answer of a 1-token completion (prefill dominates it). */
async function timed(key: string, prompt: string): Promise<{ ms: number; cached: number }> {
  const start = performance.now();
  const res = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(key) },
    body: JSON.stringify({ prompt, max_tokens: 1, temperature: 0 }),
  });
  const json = (await res.json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } };
  return { ms: performance.now() - start, cached: json.usage.prompt_tokens_details.cached_tokens };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

t.test('B gets no speed-up from a prompt A cached; A does from its own', async (t) => {
  await timed(A, freshPrompt()); // warm-up (first-call costs)
  const warm: number[] = [];
  const cross: number[] = [];
  const fresh: number[] = [];
  const ROUNDS = 16;
  for (let i = 0; i < ROUNDS; i++) {
    const shared = freshPrompt();
    await timed(A, shared); // A caches it
    // The three measurements of a round, in an order that rotates (no position bias).
    const runs: Array<() => Promise<void>> = [
      async () => {
        const r = await timed(B, shared);
        t.equal(r.cached, 0, `round ${i}: B reuses nothing of A's prompt`);
        cross.push(r.ms);
      },
      async () => {
        const r = await timed(B, freshPrompt());
        fresh.push(r.ms);
      },
      async () => {
        const r = await timed(A, shared);
        t.ok(r.cached > 350, `round ${i}: A's own repeat is a hit (${r.cached} tokens)`);
        warm.push(r.ms);
      },
    ];
    for (let k = 0; k < 3; k++) await runs[(i + k) % 3]!();
  }
  const [w, c, f] = [median(warm), median(cross), median(fresh)];
  t.comment(`median ms: A warm ${w.toFixed(1)}, B on A's prompt ${c.toFixed(1)}, B fresh ${f.toFixed(1)}`);
  t.ok(w < 0.6 * f, `the measurement can see a cache hit: warm ${w.toFixed(1)} ms < 0.6 × fresh ${f.toFixed(1)} ms`);
  // Classified by the nearer of the two references (a midpoint band absorbs this machine's
  // noise, which moved medians of misses by up to ~30 % between runs): a leak would sit at
  // the warm time.
  t.ok(c > (w + f) / 2, `B on A's prompt looks like a miss: ${c.toFixed(1)} ms is nearer fresh ${f.toFixed(1)} than warm ${w.toFixed(1)} ms`);
  t.ok(c > 1.5 * w, `and is well above a hit: ${c.toFixed(1)} ms > 1.5 × warm ${w.toFixed(1)} ms`);
});
