// `npm run bench:quant`: reduced-precision weights at SmolLM2-135M size (issue #18), kvserve's
// MatMulNBits graphs (tools/quantize.py) against llama.cpp's block formats (node-llama-cpp on
// GGUFs from tools/gguf/convert.ts) of the same weights, every engine over HTTP from its own
// process on loopback, load from a third (as bench:peer).
//
// Engines (--engines, comma-separated; default all seven):
//   kvserve-f32, kvserve-q8, kvserve-q4      onnx/model.onnx, model_q8.onnx, model_q4.onnx (MODEL_FILE)
//   llama-f32, llama-f16, llama-q8_0, llama-q4_0   .cache/gguf/smollm2-135m-<type>.gguf
//   kvserve-q4-1t (ORT_THREADS=1), llama-q4_0-2t (THREADS=2): thread-setting variants, on request
// --concurrent all|kvserve|none: which engines get the 16-client load (default all).
// First, in this process: the files, the fidelity of q8/q4 against float32 over a fixed
// 128-token stream (bench/lib/quant-fidelity.ts) for the untrained SmolLM2-sized model and for
// the shipped trained model quantized the same way, and the read-bandwidth probe. Then --rounds
// rounds (default 3); each round starts every engine in turn (the order rotates and reverses
// between rounds) and measures: idle RSS after load; one stream of 256 greedy tokens (decode
// tokens/s); cold TTFT of a 256-token prompt (median of 2); 16 closed-loop streaming clients
// (aggregate tokens/s, TTFT p50/p99); RSS after that load. Reported: each engine's median over
// rounds, medians of per-round ratios for the pairs that matter, and a roofline per engine
// (weight bytes one single-stream decode step reads ÷ the best measured read bandwidth) beside
// onnxruntime's kernel floor (the graph's weight products alone, bench/lib/kernel-floor.ts).
// Writes bench/results/quant.json and prints markdown tables.
import { copyFileSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { modelWeightBytes, usableCpus } from '../src/runtime/threads.js';
import { measureReadBandwidth } from './lib/bandwidth.js';
import { log, round1, round2 } from './lib/interleave.js';
import { kernelFloorMs, kernelFloorOnnx } from './lib/kernel-floor.js';
import { benchMeta } from './lib/meta.js';
import { coldTtft, concurrent, type LoadSettings, rssMb, singleStream } from './lib/peer-measure.js';
import { gguf, ggufStepBytes, preparePeerModel } from './lib/peer-model.js';
import { readShakespeare, shakespearePrompts } from './lib/prompts.js';
import { measureFidelity } from './lib/quant-fidelity.js';
import { kvBytesPerToken, onnxStepBytes, quantizedOnnx } from './lib/quant-model.js';
import { ROOT, type ServerProcess, startServerProcess, startService } from './lib/server.js';
import { median } from './lib/stats.js';
import { TextTokenizer } from '../src/runtime/tokenizer.js';
import { readModelDir } from '../src/runtime/model-dir.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const QUICK = process.argv.includes('--quick');
const ROUNDS = Number(arg('--rounds') ?? (QUICK ? 1 : 3));
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds: expected a positive integer');
const SHAPE = 'smollm2-135m';
const OUT = join(ROOT, 'bench/results/quant.json');
const SINGLE_TOKENS = 256;
const FIDELITY_TOKENS = 128;
const CLIENTS = 16;
// --concurrent kvserve: the 16-client load only on kvserve's engines (llama.cpp's one-context,
// 16-sequence setup decodes 16 streams slower than one here, and its drain takes minutes).
const CONCURRENT = arg('--concurrent') ?? 'all';
if (!['all', 'kvserve', 'none'].includes(CONCURRENT)) throw new Error('--concurrent: expected all, kvserve or none');
// llama.cpp as bench:peer runs it: 1 thread, no flash attention, 16 sequences, float32 KV.
const PEER_THREADS = process.env.PEER_THREADS ?? '1';
const FLASH = process.env.PEER_FLASH_ATTENTION ?? 'off';

const started = performance.now();
const model = await preparePeerModel(SHAPE);
const dir = model.dir;
const files = { f32: 'onnx/model.onnx', q8: quantizedOnnx(dir, 8), q4: quantizedOnnx(dir, 4) };

interface Engine {
  name: string;
  side: 'kvserve' | 'node_llama_cpp';
  precision: string;
  env: Record<string, string>;
  weightFileBytes: number;
  stepBytes: number;
}
const kvserve = (precision: 'f32' | 'q8' | 'q4', extra: Record<string, string> = {}, suffix = ''): Engine => ({
  name: `kvserve-${precision}${suffix}`,
  side: 'kvserve',
  precision,
  env: { MODEL_DIR: dir, MODEL_FILE: files[precision], ...extra },
  weightFileBytes: modelWeightBytes(join(dir, files[precision])),
  stepBytes: onnxStepBytes(dir, precision === 'f32' ? 32 : precision === 'q8' ? 8 : 4),
});
const llama = async (type: 'f32' | 'f16' | 'q8_0' | 'q4_0', threads = PEER_THREADS, suffix = ''): Promise<Engine> => {
  const file = gguf(dir, SHAPE, type);
  return {
    name: `llama-${type}${suffix}`,
    side: 'node_llama_cpp',
    precision: type,
    env: { MODEL: file, SEQUENCES: String(CLIENTS), KV_TYPE: 'F32', THREADS: threads, FLASH_ATTENTION: FLASH },
    weightFileBytes: statSync(file).size,
    stepBytes: await ggufStepBytes(file),
  };
};
const all: Record<string, () => Engine | Promise<Engine>> = {
  'kvserve-f32': () => kvserve('f32'),
  'kvserve-q8': () => kvserve('q8'),
  'kvserve-q4': () => kvserve('q4'),
  'llama-f32': () => llama('f32'),
  'llama-f16': () => llama('f16'),
  'llama-q8_0': () => llama('q8_0'),
  'llama-q4_0': () => llama('q4_0'),
  'kvserve-q4-1t': () => kvserve('q4', { ORT_THREADS: '1' }, '-1t'),
  'llama-q4_0-2t': () => llama('q4_0', '2', '-2t'),
};
const names = (arg('--engines') ?? Object.keys(all).slice(0, 7).join(',')).split(',');
for (const n of names) if (!all[n]) throw new Error(`--engines: unknown engine ${n} (known: ${Object.keys(all).join(', ')})`);
const engines: Engine[] = [];
for (const n of names) engines.push(await all[n]!());

// Fidelity: the SmolLM2-sized export (untrained) and the shipped trained model, quantized alike.
const text = readShakespeare();
const streamIds = (d: string): number[] => {
  const f = readModelDir(d);
  return new TextTokenizer(f.tokenizerJson, f.tokenizerConfig).encode(text.slice(0, 4 * FIDELITY_TOKENS)).slice(0, FIDELITY_TOKENS);
};
const toyDir = join(ROOT, '.cache/models/tiny-shakespeare-quant');
mkdirSync(join(toyDir, 'onnx'), { recursive: true });
for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx']) {
  const src = join(ROOT, 'models/tiny-shakespeare', f);
  if (!existsSync(join(toyDir, f)) || statSync(join(toyDir, f)).mtimeMs < statSync(src).mtimeMs) copyFileSync(src, join(toyDir, f));
}
const toyFiles = [quantizedOnnx(toyDir, 8), quantizedOnnx(toyDir, 4)];
const fidelity = {
  [SHAPE]: await measureFidelity(dir, files.f32, [files.q8, files.q4], streamIds(dir)),
  'tiny-shakespeare (trained)': await measureFidelity(toyDir, 'onnx/model.onnx', toyFiles, streamIds(toyDir)),
};
for (const [m, f] of Object.entries(fidelity)) {
  for (const r of f.results)
    log(
      `fidelity ${m} ${r.file}: top-1 ${r.top1_agreement}, KLD mean ${r.kld_mean} max ${r.kld_max} (float32 entropy ${f.entropy_mean} of ln V ${f.vocab_ln})`,
    );
}

const bandwidth = await measureReadBandwidth();
const bestGbs = Math.max(...Object.values(bandwidth.native_gbs));
log(`read bandwidth (native scan): ${JSON.stringify(bandwidth.native_gbs)} GB/s by threads`);

// onnxruntime's kernel floor per kvserve engine: its weight products alone, on the threads its
// single stream decodes with (all usable cores for a model this size, or ORT_THREADS), timed in
// every round just before the engine's server starts, so each ratio is taken side by side.
const floorFiles = Object.fromEntries(engines.filter((e) => e.side === 'kvserve').map((e) => [e.name, kernelFloorOnnx(dir, e.env.MODEL_FILE!)]));
const floorThreads = (e: Engine): number => (e.env.ORT_THREADS ? Number(e.env.ORT_THREADS) : usableCpus());

const prompts = shakespearePrompts(text, { count: 4096, minChars: 64, maxChars: 128, seed: 1 });
const load: LoadSettings = { prompts, maxTokens: QUICK ? 32 : 64, warmupMs: QUICK ? 1000 : 2000, windowMs: QUICK ? 3000 : 15_000 };

type Metrics = Record<string, number>;
const rounds: Record<string, Metrics>[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const k = r % engines.length;
  let order = [...engines.slice(k), ...engines.slice(0, k)];
  if (r % 2 === 1) order = order.reverse();
  const round: Record<string, Metrics> = {};
  for (const e of order) {
    const m: Metrics = {};
    if (floorFiles[e.name]) m.kernel_floor_ms = await kernelFloorMs(floorFiles[e.name]!, floorThreads(e));
    const server: ServerProcess =
      e.side === 'kvserve' ? await startService(e.env, 600_000) : await startServerProcess(e.env, 600_000, 'bench/lib/llama-cpp-server.ts');
    try {
      await new Promise((res) => setTimeout(res, 1000));
      m.idle_rss_mb = rssMb(server);
      await singleStream(server.url, prompts[0]!, 8);
      m.single_tokens_per_s = (await singleStream(server.url, prompts[1 + r]!, SINGLE_TOKENS)).tokens_per_s;
      m.ttft_256_ms = await coldTtft(server.url, 256, 2);
      if (CONCURRENT === 'all' || (CONCURRENT === 'kvserve' && e.side === 'kvserve')) {
        const c = await concurrent(server.url, CLIENTS, load);
        m.concurrent_tokens_per_s = c.tokens_per_s;
        m.concurrent_ttft_p50_ms = c.ttft_ms.p50;
        m.concurrent_ttft_p99_ms = c.ttft_ms.p99;
        m.loaded_rss_mb = rssMb(server);
      }
    } finally {
      const code = await server.stop();
      if (code !== 0) log(`WARNING: ${e.name} exited with ${code}:\n${server.output()}`);
    }
    round[e.name] = m;
    log(
      `round ${r + 1} ${e.name.padEnd(14)} single ${(m.single_tokens_per_s ?? NaN).toFixed(1)} tok/s (kernel floor ${m.kernel_floor_ms !== undefined ? (1000 / m.kernel_floor_ms).toFixed(1) : '-'}), ttft256 ${(m.ttft_256_ms ?? NaN).toFixed(0)} ms, ` +
        `${CLIENTS} clients ${(m.concurrent_tokens_per_s ?? NaN).toFixed(1)} tok/s (ttft p50 ${(m.concurrent_ttft_p50_ms ?? NaN).toFixed(0)} ms), rss ${(m.idle_rss_mb ?? NaN).toFixed(0)}/${(m.loaded_rss_mb ?? NaN).toFixed(0)} MiB`,
    );
  }
  rounds.push(round);
}

const med = (name: string, key: string): number | null => {
  const v = rounds.map((r) => r[name]![key]).filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length ? round2(median(v)) : null;
};
const results: Record<string, unknown> = {};
for (const e of engines) {
  const single = med(e.name, 'single_tokens_per_s') ?? NaN;
  const idle = med(e.name, 'idle_rss_mb') ?? NaN;
  const bound = (bestGbs * 1e9) / e.stepBytes;
  const floorMs = med(e.name, 'kernel_floor_ms');
  const floor = floorMs !== null ? 1000 / floorMs : undefined;
  const perRound = rounds.map((r) => r[e.name]!.single_tokens_per_s! * (r[e.name]!.kernel_floor_ms! / 1000)).filter(Number.isFinite);
  results[e.name] = {
    precision: e.precision,
    single: { tokens_per_s: single, ttft_256_ms: med(e.name, 'ttft_256_ms') },
    concurrent: {
      [CLIENTS]: {
        tokens_per_s: med(e.name, 'concurrent_tokens_per_s'),
        ttft_p50_ms: med(e.name, 'concurrent_ttft_p50_ms'),
        ttft_p99_ms: med(e.name, 'concurrent_ttft_p99_ms'),
      },
    },
    memory: {
      idle_rss_mb: med(e.name, 'idle_rss_mb'),
      loaded_rss_mb: med(e.name, 'loaded_rss_mb'),
      weight_file_mb: round1(e.weightFileBytes / 2 ** 20),
      idle_rss_per_weight_byte: round2((idle * 2 ** 20) / e.weightFileBytes),
    },
    roofline: {
      step_weight_mb: round1(e.stepBytes / 2 ** 20),
      bound_tokens_per_s: round1(bound),
      fraction_reached: round2(single / bound),
      // onnxruntime's weight products alone: the best its kernels allow (null for llama.cpp).
      kernel_floor_tokens_per_s: floor !== undefined ? round1(floor) : null,
      kernel_floor_fraction: floor !== undefined ? round2(floor / bound) : null,
      // Median over rounds of single-stream tokens/s ÷ that round's kernel-floor tokens/s.
      fraction_of_kernel_floor: perRound.length ? round2(median(perRound)) : null,
    },
  };
}
// Per-round ratios (a over b; > 1: a is faster), median over rounds.
const PAIRS = [
  ['kvserve-q4', 'kvserve-f32'],
  ['kvserve-q8', 'kvserve-f32'],
  ['kvserve-q4', 'llama-q4_0'],
  ['kvserve-q8', 'llama-q8_0'],
  ['kvserve-f32', 'llama-f32'],
  ['kvserve-q4', 'llama-f16'],
  ['llama-q4_0', 'llama-f32'],
  ['kvserve-q4-1t', 'kvserve-q4'],
  ['llama-q4_0-2t', 'llama-q4_0'],
];
const ratios: Record<string, Record<string, number | null>> = {};
for (const [a, b] of PAIRS) {
  if (!names.includes(a!) || !names.includes(b!)) continue;
  const ratio = (key: string, higherBetter: boolean): number | null => {
    const v = rounds.map((r) => (higherBetter ? r[a!]![key]! / r[b!]![key]! : r[b!]![key]! / r[a!]![key]!)).filter(Number.isFinite);
    return v.length ? round2(median(v)) : null;
  };
  ratios[`${a} vs ${b}`] = {
    single_tokens_per_s: ratio('single_tokens_per_s', true),
    concurrent_tokens_per_s: ratio('concurrent_tokens_per_s', true),
    ttft_256: ratio('ttft_256_ms', false),
    idle_rss: ratio('idle_rss_mb', false),
  };
}

const out = {
  shape: SHAPE,
  engines: results,
  ratios,
  ratio_note: '"a vs b": median over rounds of the per-round ratio; > 1 means a is better (throughput a ÷ b; TTFT and RSS b ÷ a)',
  fidelity,
  kv_bytes_per_token: kvBytesPerToken(dir),
  roofline_note:
    "bound = best native read bandwidth ÷ weight bytes a single-stream decode step reads; KV reads and compute ignored. kernel_floor = one run of the graph's weight products alone (tools/kernel_floor.py) with the service's session options (median of 30 runs, timed in each round just before the engine starts)",
  bandwidth,
  ...benchMeta(),
  settings: {
    rounds: ROUNDS,
    quick: QUICK,
    single_tokens: SINGLE_TOKENS,
    fidelity_tokens: FIDELITY_TOKENS,
    load: { ...load, prompts: load.prompts.length, clients: CLIENTS },
    kvserve: 'dist/src/main.js as npm start runs it, default configuration except MODEL_FILE (and ORT_THREADS for -1t)',
    concurrent: CONCURRENT,
    node_llama_cpp: `one context of ${CLIENTS} sequences, float32 KV, ${PEER_THREADS} thread(s) (2 for -2t), flash attention ${FLASH}`,
    files: { ...files, gguf: Object.fromEntries(engines.filter((e) => e.side === 'node_llama_cpp').map((e) => [e.name, relative(ROOT, e.env.MODEL!)])) },
  },
  seconds: round1((performance.now() - started) / 1000),
  rounds_raw: rounds,
};
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(OUT, `${JSON.stringify(out, null, 2)}\n`);

const rows = engines.map((e) => {
  const x = results[e.name] as { single: Metrics; concurrent: Record<string, Metrics>; memory: Metrics; roofline: Metrics };
  // (null where not measured)
  return `| ${e.name} | ${x.single.tokens_per_s} | ${x.roofline.fraction_reached} | ${x.roofline.kernel_floor_fraction} | ${x.roofline.fraction_of_kernel_floor} | ${x.single.ttft_256_ms} | ${x.concurrent[CLIENTS]!.tokens_per_s} | ${x.memory.idle_rss_mb} | ${x.memory.weight_file_mb} |`;
});
process.stdout.write(
  `| engine | single tok/s | of roofline | kernel floor of roofline | of kernel floor | TTFT 256 ms | ${CLIENTS} clients tok/s | idle RSS MiB | weight file MiB |\n|---|---|---|---|---|---|---|---|---|\n${rows.join('\n')}\n\n` +
    `| pair | single | ${CLIENTS} clients | TTFT 256 | idle RSS |\n|---|---|---|---|---|\n` +
    Object.entries(ratios)
      .map(([p, v]) => `| ${p} | ${v.single_tokens_per_s} | ${v.concurrent_tokens_per_s} | ${v.ttft_256} | ${v.idle_rss} |`)
      .join('\n') +
    `\n\n${SHAPE}, ${ROUNDS} round(s), ${out.commit}, ${out.date}; wrote ${relative(process.cwd(), OUT)}\n`,
);
