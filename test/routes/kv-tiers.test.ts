// The KV tiers through the service, on the real model: sessions and prefixes survive a
// restart with the same KV_CACHE_DIR (listed with their tier; the next turn reuses them, with
// the same greedy text as a cold run); damaged files and another model's are never served,
// but counted and removed; a process killed with SIGKILL while it writes loses at most what was
// not yet written and never serves a corrupt entry.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startServerProcess } from '../../bench/lib/server.js';
import { postJson } from '../helpers/http.js';
import { scrape } from '../helpers/metrics-text.js';
import { startServer } from '../helpers/server.js';

const fixture = readFileSync(new URL('../fixtures/shakespeare-20k.txt', import.meta.url), 'utf8');
const greedy = { temperature: 0, ignore_eos: true };

function cacheDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-kv-dir-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every entry file under the cache directory (the tmp/ directory excluded). */
function entryFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((d) => /^[0-9a-f]{2}$/.test(d))
    .flatMap((d) => readdirSync(join(dir, d)).map((f) => join(dir, d, f)));
}

t.test('a session and a long prefix survive a graceful restart', async (t) => {
  const dir = cacheDir(t);
  const env = { KV_CACHE_DIR: dir };
  const prefix = fixture.slice(0, 1024); // byte tokenizer: 1,024 tokens
  let server = await startServer({ env });
  const url = () => `${server.url}/v1/completions`;
  const turn1 = await postJson(url(), { prompt: 'ROMEO:\nWhat light is this?\n', session_id: 'balcony', max_tokens: 24, ...greedy });
  t.equal(turn1.status, 200);
  await postJson(url(), { prompt: `${prefix}\nFIRST:`, max_tokens: 4, ...greedy });
  await server.close(); // SIGTERM's path: RAM's caches go to disk
  t.ok(entryFiles(dir).length > 60, `entries written to disk (${entryFiles(dir).length} files)`);

  server = await startServer({ env });
  t.teardown(() => server.close());
  const sessions = (await (await fetch(`${server.url}/v1/sessions`)).json()) as { data: Array<{ id: string; tier: string; tokens: number }> };
  t.match(sessions.data, [{ id: 'balcony', tier: 'disk', tokens: turn1.json.usage.prompt_tokens + 24 - 1 }], 'listed after the restart, on disk');
  const previous = `ROMEO:\nWhat light is this?\n${turn1.json.choices[0].text}`;
  const turn2 = await postJson(url(), { prompt: `${previous}\nJULIET:\n`, session_id: 'balcony', max_tokens: 16, ...greedy });
  t.ok(
    turn2.json.usage.prompt_tokens_details.cached_tokens >= turn1.json.usage.prompt_tokens + 24 - 1,
    `the next turn reuses the previous prompt and reply (${turn2.json.usage.prompt_tokens_details.cached_tokens} cached)`,
  );
  const warm = await postJson(url(), { prompt: `${prefix}\nSECOND:`, max_tokens: 24, ...greedy });
  t.ok(
    warm.json.usage.prompt_tokens_details.cached_tokens >= 1008,
    `the 1,024-token prefix comes from disk (${warm.json.usage.prompt_tokens_details.cached_tokens} cached)`,
  );
  const m = await scrape(server.url);
  t.ok((m.get('kvserve_kv_cache_tier_hits_total{tier="disk"}') ?? 0) >= 63, 'blocks served from disk are counted');
  t.ok((m.get('kvserve_kv_cache_promotions_total{from="disk"}') ?? 0) >= 63);

  // The disk tier is exact: the warm answer is the cold one.
  const cold = await startServer({ env: { KV_CACHE_COMPRESSED_DTYPE: 'off' } });
  t.teardown(() => cold.close());
  const reference = await postJson(`${cold.url}/v1/completions`, { prompt: `${prefix}\nSECOND:`, max_tokens: 24, ...greedy });
  t.equal(reference.json.usage.prompt_tokens_details.cached_tokens, 0, 'the reference is computed cold');
  t.equal(warm.json.choices[0].text, reference.json.choices[0].text, 'same greedy text from disk as computed');
});

t.test("damaged files and another model's are never served: counted by reason and removed", async (t) => {
  const dir = cacheDir(t);
  let server = await startServer({ env: { KV_CACHE_DIR: dir } });
  for (const name of ['HAMLET', 'OTHELLO', 'LEAR', 'MACBETH']) {
    await postJson(`${server.url}/v1/completions`, { prompt: `${name}:\n${fixture.slice(2000, 2200)}`, max_tokens: 4, ...greedy });
  }
  await server.close();
  const files = entryFiles(dir);
  t.ok(files.length >= 8, `${files.length} entries on disk`);
  const [flipped, cut] = files;
  const bytes = readFileSync(flipped!);
  bytes[bytes.length - 100]! ^= 0xff; // a payload byte: only the checksum can tell
  writeFileSync(flipped!, bytes);
  truncateSync(cut!, Math.floor(statSync(cut!).size / 2));
  writeFileSync(join(dir, 'tmp', 'left-by-a-crash.tmp'), 'half a write');

  server = await startServer({ env: { KV_CACHE_DIR: dir } });
  let m = await scrape(server.url);
  t.equal(m.get('kvserve_kv_cache_disk_rejected_total{reason="truncated"}'), 2, 'the cut file and the stray temp file, at start');
  t.same(readdirSync(join(dir, 'tmp')), [], 'the temp file is gone');
  // The flipped byte is found when the entry is read: every prompt reuses what is sound.
  for (const name of ['HAMLET', 'OTHELLO', 'LEAR', 'MACBETH']) {
    const r = await postJson(`${server.url}/v1/completions`, { prompt: `${name}:\n${fixture.slice(2000, 2200)}`, max_tokens: 4, ...greedy });
    t.equal(r.status, 200);
  }
  m = await scrape(server.url);
  t.equal(m.get('kvserve_kv_cache_disk_rejected_total{reason="checksum"}'), 1, 'the damaged payload is caught on read');
  t.equal(m.get('kvserve_kv_cache_disk_rejected_total{reason="fingerprint"}'), 0);
  await server.close();

  // The float16 variant is another model (another graph, another KV dtype): nothing of the float32 one is served.
  const before = entryFiles(dir).length;
  server = await startServer({ env: { KV_CACHE_DIR: dir, MODEL_FILE: 'onnx/model_fp16.onnx' } });
  t.teardown(() => server.close());
  m = await scrape(server.url);
  t.equal(m.get('kvserve_kv_cache_disk_rejected_total{reason="fingerprint"}'), before, `all ${before} files rejected as another model's`);
  t.equal(entryFiles(dir).length, 0, 'and removed');
  const r = await postJson(`${server.url}/v1/completions`, { prompt: `HAMLET:\n${fixture.slice(2000, 2200)}`, max_tokens: 4, ...greedy });
  t.equal(r.json.usage.prompt_tokens_details.cached_tokens, 0, 'so nothing is reused');
});

t.test('SIGKILL while writing: at most the unwritten entries are lost, nothing corrupt is served', async (t) => {
  const dir = cacheDir(t);
  // A small RAM budget: every request evicts, so the tier thread writes all the time.
  const env = { KV_CACHE_DIR: dir, KV_CACHE_MAX_BYTES: String(400 * 4096), KV_CACHE_COMPRESSED_DTYPE: 'off' };
  const prompts = Array.from({ length: 24 }, (_, i) => `${String.fromCharCode(65 + (i % 26))}${i}:\n${fixture.slice(300 * i, 300 * i + 280)}`);
  for (let kill = 0; kill < 3; kill++) {
    const server = await startServerProcess(env);
    const load = Promise.allSettled(prompts.map((prompt) => postJson(`${server.url}/v1/completions`, { prompt, max_tokens: 8, ...greedy })));
    await sleep(300 + 400 * kill);
    process.kill(server.pid, 'SIGKILL');
    await load;
    await server.stop();
  }
  const server = await startServerProcess(env);
  t.teardown(() => server.stop());
  const reference = await startServer({ env: { KV_CACHE_COMPRESSED_DTYPE: 'off' } });
  t.teardown(() => reference.close());
  let reused = 0;
  for (const prompt of prompts) {
    const body = { prompt, max_tokens: 8, ...greedy };
    const [warm, cold] = await Promise.all([postJson(`${server.url}/v1/completions`, body), postJson(`${reference.url}/v1/completions`, body)]);
    t.equal(warm.status, 200);
    reused += warm.json.usage.prompt_tokens_details.cached_tokens;
    if (warm.json.choices[0].text !== cold.json.choices[0].text) t.fail(`${prompt.slice(0, 4)}: reused cache changed the text`);
  }
  t.ok(reused > 0, `entries written before the kills are reused (${reused} prompt tokens)`);
  const m = await scrape(server.url);
  t.equal(m.get('kvserve_kv_cache_disk_rejected_total{reason="checksum"}'), 0, 'no damaged file: writes are atomic');
  t.equal(m.get('kvserve_kv_cache_disk_rejected_total{reason="fingerprint"}'), 0);
});
