// `npm run bench:tiers`: what the KV tiers below RAM buy, and what they cost. Writes
// bench/results/tiers.json:
//   restart          TTFT of a 1,024-token prompt cold vs after a restart with the disk tier
//                    warm (each prompt sent once to a server, which is then stopped with SIGTERM
//                    and started again on the same KV_CACHE_DIR) — goal ratio ≥ 5
//   capacity         with the same RAM budget, a working set of distinct 512-token prefixes 4×
//                    larger than RAM replayed in a seeded random order: the fraction of prompt
//                    tokens served from cache, RAM only vs with tiers — goal ratio ≥ 3
//   fidelity         per compressed dtype, after a 1,024-token prefix restored from it versus
//                    computed: top-1 agreement and mean KL of the next-token distributions
//   step_p99_ratio   inter-token latency p99 of 8 streams while the disk tier writes every
//                    evicted cache vs without disk writes: the default configuration (the
//                    compressed tier on, no KV_CACHE_DIR) — goal ≤ 1.1. The disk tier runs as a
//                    service spends its life, its budget full (KV_CACHE_DISK_MAX_BYTES 64 MiB:
//                    full within ~3 s of the 15 s window), so each write also evicts. Reported
//                    beside it: step_p99_ratio_filling, the default 1 GiB budget, which the
//                    window never fills (every write a new file), and step_p99_ratio_vs_no_tiers,
//                    steady state against no tier below RAM at all (KV_CACHE_COMPRESSED_DTYPE=off).
//                    The four configurations run in turn, the order rotating between rounds;
//                    10 rounds by default (TIERS_STEP_ROUNDS): one round's ratio varies ±0.1.
// Every KV_CACHE_DIR is a fresh directory under os.tmpdir(): TMPDIR=/dev/shm puts the disk tier
// on tmpfs, which separates what the writes cost kvserve from what the filesystem charges.
// They are all removed at the end, not as each is done with: removing thousands of files
// makes the next minutes' file creations on ext4 without a journal several times dearer
// (it skips recently freed inodes), which would charge the bench's cleanup to whichever
// configuration ran next.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { postStream } from './lib/http-stream.js';
import { envInt, log, round2 } from './lib/interleave.js';
import { benchMeta } from './lib/meta.js';
import { ROOT, complete, startService } from './lib/server.js';
import { median, percentile } from './lib/stats.js';
import { measureFidelity, viaEntry } from './tiers-fidelity.js';

const TEXT = readFileSync(join(ROOT, 'test/fixtures/shakespeare-20k.txt'), 'utf8');
const QUICK = process.argv.includes('--quick');
const BYTES_PER_TOKEN = 4096; // the shipped model, float32
/** The step figure's disk budget: ~1,000 block files, full within seconds of the window. */
const STEADY_DISK_BYTES = 64 * 2 ** 20;
const dirs: string[] = [];
const fresh = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-bench-tiers-'));
  dirs.push(dir);
  return dir;
};
process.on('exit', () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Time to the first streamed text of `prompt` (a few tokens, greedy). */
async function ttft(url: string, prompt: string): Promise<{ ms: number; cached: number }> {
  const start = performance.now();
  let first: number | undefined;
  let cached = 0;
  await postStream(`${url}/v1/completions`, { prompt, max_tokens: 4, temperature: 0, stream: true, stream_options: { include_usage: true } }, (chunks, at) => {
    for (const c of chunks) {
      if (first === undefined && c.choices?.[0]?.text) first = at;
      if (c.usage) cached = c.usage.prompt_tokens_details?.cached_tokens ?? 0;
    }
  });
  return { ms: (first ?? performance.now()) - start, cached };
}

async function restart() {
  const reps = QUICK ? 2 : envInt('TIERS_RESTART_REPS', 5);
  const cold: number[] = [];
  const warm: number[] = [];
  for (let rep = 0; rep < reps; rep++) {
    const dir = fresh();
    const prompt = TEXT.slice(1500 * rep, 1500 * rep + 1024);
    const env = { KV_CACHE_DIR: dir };
    // Each server first prefills another 1,024-token prompt, so both sides run on warmed-up
    // onnxruntime buffers and the figure compares prefilling with fetching, not first calls;
    // the restarted one also fetches half of a prompt from disk (the fetch path warmed up).
    const warmUp = { prompt: TEXT.slice(14_000 + 1000 * rep, 14_000 + 1000 * rep + 1024), max_tokens: 2 };
    const warmUpAfter = TEXT.slice(7_500 + 1000 * rep, 7_500 + 1000 * rep + 1024);
    let server = await startService(env);
    await complete(server.url, warmUp);
    const c = await ttft(server.url, prompt);
    await server.stop(); // SIGTERM: RAM's caches go to disk
    server = await startService(env);
    await complete(server.url, { ...warmUp, prompt: warmUpAfter });
    await complete(server.url, { ...warmUp, prompt: `${warmUp.prompt.slice(0, 512)}!` });
    const w = await ttft(server.url, prompt);
    await server.stop();
    if (w.cached < 1008) throw new Error(`after the restart only ${w.cached} tokens were cached`);
    cold.push(c.ms);
    warm.push(w.ms);
    log(`restart rep ${rep + 1}: cold ${c.ms.toFixed(1)} ms, restarted ${w.ms.toFixed(1)} ms (${w.cached} cached)`);
  }
  const coldMs = median(cold);
  const restartedMs = median(warm);
  return { cold_ttft_ms: round2(coldMs), restarted_ttft_ms: round2(restartedMs), ratio: round2(coldMs / restartedMs), reps, runs: { cold, restarted: warm } };
}

/** A seeded shuffle of `n` indices, `passes` times over. */
function accessOrder(n: number, passes: number, seed: number): number[] {
  let s = seed;
  const rand = () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
  return Array.from({ length: n * passes }, () => Math.floor(rand() * n));
}

async function capacity() {
  const ramPrefixes = QUICK ? 4 : 8;
  const prefixes = Array.from({ length: 4 * ramPrefixes }, (_, i) => TEXT.slice(500 * i, 500 * i + 512));
  // RAM holds ramPrefixes 512-token prefixes beside one running request.
  const ramBytes = (ramPrefixes * 512 + 600) * BYTES_PER_TOKEN;
  const order = accessOrder(prefixes.length, QUICK ? 2 : 4, 7);
  const replay = async (env: Record<string, string>) => {
    const server = await startService({ KV_CACHE_MAX_BYTES: String(ramBytes), ...env });
    let served = 0;
    let total = 0;
    for (const [n, i] of order.entries()) {
      const r = await complete(server.url, { prompt: `${prefixes[i]}${n}`, max_tokens: 2, temperature: 0 });
      // The first pass over the set is the warm-up: count the rest.
      if (n >= prefixes.length) {
        served += r.usage?.prompt_tokens_details.cached_tokens ?? 0;
        total += r.usage?.prompt_tokens ?? 0;
      }
    }
    await server.stop();
    return served / total;
  };
  const dir = fresh();
  const ramOnly = await replay({ KV_CACHE_COMPRESSED_DTYPE: 'off' });
  // The compressed tier gets the RAM budget too; the disk tier the rest.
  const tiered = await replay({ KV_CACHE_DIR: dir, KV_CACHE_COMPRESSED_MAX_BYTES: String(ramBytes) });
  log(`capacity: RAM only ${(ramOnly * 100).toFixed(1)} %, tiered ${(tiered * 100).toFixed(1)} % of prompt tokens from cache`);
  return {
    ram_only_hit_rate: round2(ramOnly),
    tiered_hit_rate: round2(tiered),
    ratio: round2(tiered / Math.max(ramOnly, 1e-9)),
    working_set_prefixes: prefixes.length,
    ram_prefixes: ramPrefixes,
    requests: order.length,
  };
}

async function fidelity() {
  const out = await measureFidelity({
    modelDir: join(ROOT, 'models/tiny-shakespeare'),
    text: TEXT,
    prefix: 1024,
    continuation: QUICK ? 64 : 256,
    windows: QUICK ? 2 : 5,
    roundTrips: { int8: viaEntry('int8'), float16: viaEntry('float16') },
  });
  return Object.fromEntries(Object.entries(out.results).map(([codec, f]) => [codec, { top1_agreement: f.top1_agreement, kld: f.kld, positions: f.positions }]));
}

/** ITL p99 (ms) of 8 streams for `seconds`, each a fresh long prompt so every finish evicts. */
async function itlP99(env: Record<string, string>, seconds: number): Promise<number> {
  const server = await startService({ KV_CACHE_MAX_BYTES: String(2000 * BYTES_PER_TOKEN), ...env });
  const gaps: number[] = [];
  const until = performance.now() + seconds * 1000;
  let n = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (performance.now() < until) {
        const start = (n++ * 97) % (TEXT.length - 600);
        let last: number | undefined;
        await postStream(
          `${server.url}/v1/completions`,
          { prompt: TEXT.slice(start, start + 300), max_tokens: 96, temperature: 0, ignore_eos: true, stream: true },
          (_c, at) => {
            if (last !== undefined) gaps.push(at - last);
            last = at;
          },
        );
      }
    }),
  );
  await server.stop();
  return percentile(gaps, 99);
}

async function stepP99() {
  const rounds = QUICK ? 1 : envInt('TIERS_STEP_ROUNDS', 10);
  const seconds = QUICK ? 5 : 15;
  const configs: Record<string, () => Record<string, string>> = {
    none: () => ({ KV_CACHE_COMPRESSED_DTYPE: 'off' }),
    compressed: () => ({}),
    disk: () => ({ KV_CACHE_DIR: fresh(), KV_CACHE_DISK_MAX_BYTES: String(STEADY_DISK_BYTES) }),
    filling: () => ({ KV_CACHE_DIR: fresh() }),
  };
  const names = Object.keys(configs);
  const rows: Array<Record<string, number>> = [];
  for (let r = 0; r < rounds; r++) {
    const p99: Record<string, number> = {};
    for (const side of [...names.slice(r % names.length), ...names.slice(0, r % names.length)]) {
      p99[side] = await itlP99(configs[side]!(), seconds);
    }
    rows.push({ no_tiers_ms: round2(p99.none!), compressed_ms: round2(p99.compressed!), disk_ms: round2(p99.disk!), disk_filling_ms: round2(p99.filling!) });
    log(
      `step round ${r + 1}: ITL p99 no lower tiers ${p99.none!.toFixed(2)} ms, compressed tier (default) ${p99.compressed!.toFixed(2)} ms, ` +
        `disk tier full ${p99.disk!.toFixed(2)} ms, disk tier filling ${p99.filling!.toFixed(2)} ms`,
    );
  }
  const ratio = (a: string, b: string) => round2(median(rows.map((x) => x[a]! / x[b]!)));
  return {
    ratio: ratio('disk_ms', 'compressed_ms'),
    filling: ratio('disk_filling_ms', 'compressed_ms'),
    vsNoTiers: ratio('disk_ms', 'no_tiers_ms'),
    rounds: rows,
  };
}

const result = {
  restart: await restart(),
  capacity: await capacity(),
  fidelity: await fidelity(),
  ...(await stepP99().then((s) => ({
    step_p99_ratio: s.ratio,
    step_p99_ratio_filling: s.filling,
    step_p99_ratio_vs_no_tiers: s.vsNoTiers,
    step_p99_rounds: s.rounds,
  }))),
  goals: { restart_ratio: '≥ 5', capacity_ratio: '≥ 3', int8_top1_agreement: '≥ 0.995', step_p99_ratio: '≤ 1.1' },
  quick: QUICK,
  ...benchMeta(),
};
writeFileSync(join(ROOT, 'bench/results/tiers.json'), `${JSON.stringify(result, null, 2)}\n`);
log(
  JSON.stringify(
    {
      restart: result.restart.ratio,
      capacity: result.capacity,
      fidelity: result.fidelity,
      step_p99_ratio: result.step_p99_ratio,
      step_p99_ratio_filling: result.step_p99_ratio_filling,
      step_p99_ratio_vs_no_tiers: result.step_p99_ratio_vs_no_tiers,
    },
    null,
    2,
  ),
);
