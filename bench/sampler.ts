// `npm run bench:sampler`: what choosing a token costs the engine thread, per sequence and token,
// at real vocabulary sizes (49,152: SmolLM2; 151,936: Qwen2), where a sampled token's softmax is
// the largest piece of the engine's own work on a step.
//
// 1. The weight pass alone: exp((x - max) / T) over a row into float32, summed — Math.exp in a
//    loop (what the sampler ran before) against softmaxWeights (src/core/sampling/softmax.ts).
// 2. Sampler.sample() per token: greedy, temperature 1 (the API's default), and temperature 0.7
//    with top_p 0.9 (a common client setting).
// Rows are synthetic logits shaped like a language model's: a broad bulk (sum of uniforms,
// ±9) with a few tokens 10-15 above it. Medians of SAMPLER_REPS (15) interleaved repetitions of
// 200 tokens each. Writes bench/results/sampler.json:
//   {"vocab":{"<V>":{"exp_pass_us":{"math_exp","softmax_weights","ratio"},"sample_us":{"greedy","t1","t07_top_p09"}}}}
// plus machine, commit and date; ratio = Math.exp loop ÷ softmaxWeights (> 1: faster now).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type SamplingParams, defaultSampling } from '../src/core/sampling/params.js';
import { Sampler } from '../src/core/sampling/sampler.js';
import { softmaxWeights } from '../src/core/sampling/softmax.js';
import { envInt, interleave, log, round2 } from './lib/interleave.js';
import { benchMeta } from './lib/meta.js';
import { ROOT } from './lib/server.js';
import { median } from './lib/stats.js';

const OUT_FILE = join(ROOT, 'bench/results/sampler.json');
const REPS = envInt('SAMPLER_REPS', 15);
const TOKENS = 200;
const VOCABS = [49_152, 151_936];

/** Deterministic LM-like rows (a seeded LCG, so every run measures the same numbers). */
function rows(vocab: number, count: number): Float32Array[] {
  let state = 12345;
  const next = (): number => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state / 2 ** 32;
  };
  return Array.from({ length: count }, () => {
    const row = new Float32Array(vocab);
    for (let i = 0; i < vocab; i++) row[i] = (next() + next() + next() - 1.5) * 6;
    for (let j = 0; j < 8; j++) row[Math.floor(next() * vocab)] = 10 + next() * 5;
    return row;
  });
}

/** The weight pass as the sampler ran it before softmaxWeights. */
function mathExpWeights(src: Float32Array, max: number, invT: number, out: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < src.length; i++) {
    out[i] = Math.exp((src[i]! - max) * invT);
    sum += out[i]!;
  }
  return sum;
}

/** Microseconds per token of `fn(row index)` over TOKENS rows of `count` (cycled). */
function perToken(count: number, fn: (row: number) => number): () => Promise<number> {
  let sink = 0;
  return async () => {
    const start = performance.now();
    for (let i = 0; i < TOKENS; i++) sink += fn(i % count);
    if (Number.isNaN(sink)) throw new Error('NaN weights');
    return ((performance.now() - start) * 1000) / TOKENS;
  };
}

const result: Record<string, unknown> = {};
for (const vocab of VOCABS) {
  const data = rows(vocab, 8);
  const maxes = data.map((r) => r.reduce((a, b) => Math.max(a, b), -Infinity));
  const out = new Float32Array(vocab);
  const [mathExp = [], fast = []] = await interleave(REPS, [
    perToken(data.length, (r) => mathExpWeights(data[r]!, maxes[r]!, 1, out)),
    perToken(data.length, (r) => softmaxWeights(data[r]!, maxes[r]!, 1, out)),
  ]);
  const sampler = (p: Partial<SamplingParams>) => {
    const s = new Sampler({ ...defaultSampling, seed: 1, ...p }, []);
    return perToken(data.length, (r) => s.sample(data[r]!));
  };
  const [greedy = [], t1 = [], nucleus = []] = await interleave(REPS, [
    sampler({ temperature: 0 }),
    sampler({ temperature: 1 }),
    sampler({ temperature: 0.7, topP: 0.9 }),
  ]);
  const exp = { math_exp: round2(median(mathExp)), softmax_weights: round2(median(fast)), ratio: round2(median(mathExp) / median(fast)) };
  const sample = { greedy: round2(median(greedy)), t1: round2(median(t1)), t07_top_p09: round2(median(nucleus)) };
  result[vocab] = { exp_pass_us: exp, sample_us: sample };
  log(
    `V=${vocab}: weight pass ${exp.math_exp} µs (Math.exp) vs ${exp.softmax_weights} µs (${exp.ratio}×); sample() greedy ${sample.greedy}, T=1 ${sample.t1}, T=0.7 top_p 0.9 ${sample.t07_top_p09} µs/token`,
  );
}

const json = { vocab: result, reps: REPS, tokens_per_rep: TOKENS, ...benchMeta() };
mkdirSync(dirname(OUT_FILE), { recursive: true });
writeFileSync(OUT_FILE, `${JSON.stringify(json, null, 2)}\n`);
log(`wrote ${OUT_FILE}`);
