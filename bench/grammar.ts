// `npm run bench:grammar`: what constrained decoding costs per step, our automaton (src/core/
// sampling/grammar) against xgrammar's WebAssembly build (@mlc-ai/web-xgrammar).
//
// For each tokenizer (the shipped 257-token byte-level one, Llama 2's 32k) and each format (a
// nested schema, json_object), BATCH (16) independent sequences each get a token trajectory of at
// most MAX_TOKENS (128) tokens, sampled uniformly among the tokens our grammar allows (random
// logits, masked, closed within the budget), compact (no whitespace) and cut where xgrammar
// would refuse a token, so both approaches replay the very same tokens. Per step and sequence,
// each computes the mask, applies it to a fresh row of logits (xgrammar's bitmask by a JS loop)
// and accepts the token; only that is timed. "cold" is the first replay on a freshly compiled
// grammar (ours fills its mask cache then), "warm" a second replay on the same grammar (a schema
// reused by later requests). Both run GRAMMAR_REPS (7) times, interleaved; each batch step's
// time is the median over repetitions (see summarize()), and the figures summarize those.
//
// us_per_mask is wall time per mask (mask + apply + accept). A batch step sums 16 sequences'
// times; the goal is ≤ 20 % of a 16-row decode step of the shipped model (DECODE_STEP_MS, 2 ms
// on this machine).
//
// Writes bench/results/grammar.json: {"decode_step_ms", "rows": [{tokenizer, format, approach,
// compile_ms, cold|warm: {"us_per_mask", "batch_step_us_mean" / "_p50" /
// "_p99", "batch_step_pct_of_decode" (mean) / "_p50", "steps"}}], "setup": per-tokenizer
// one-off costs} plus settings, load average, machine and date.
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, platform, release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileGrammar, type Grammar, type ResponseFormat } from '../src/core/sampling/grammar/index.js';
import { llama2, rawVocab, shakespeare, vocabOf, type TestTokenizer } from '../test/core/sampling/grammar/tokenizers.js';
import { envInt, interleave, log, round1 } from './lib/interleave.js';
import { median, percentile } from './lib/stats.js';
import { applyBitmask, loadXgrammar, type Xgrammar } from './lib/xgrammar.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT_FILE = join(ROOT, 'bench/results/grammar.json');
const BATCH = envInt('GRAMMAR_BATCH', 16);
const MAX_TOKENS = envInt('GRAMMAR_MAX_TOKENS', 128);
const DECODE_STEP_MS = Number(process.env.DECODE_STEP_MS ?? 2);
const REPS = envInt('GRAMMAR_REPS', 7);

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    age: { type: 'integer' },
    email: { type: 'string' },
    role: { enum: ['admin', 'user', 'guest'] },
    scores: { type: 'array', items: { type: 'number' }, maxItems: 4 },
    address: {
      type: 'object',
      properties: { city: { type: 'string' }, zip: { type: 'string' } },
      required: ['city', 'zip'],
      additionalProperties: false,
    },
    tags: {
      type: 'array',
      items: {
        type: 'object',
        properties: { k: { type: 'string' }, v: { anyOf: [{ type: 'string' }, { type: 'null' }] } },
        required: ['k', 'v'],
        additionalProperties: false,
      },
      maxItems: 3,
    },
    active: { type: 'boolean' },
  },
  required: ['name', 'age', 'role', 'address', 'tags', 'active'],
  additionalProperties: false,
};

const FORMATS: { name: string; format: ResponseFormat }[] = [
  { name: 'json_schema (nested)', format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } } },
  { name: 'json_object', format: { type: 'json_object' } },
];

/** A tiny deterministic PRNG (mulberry32): trajectories are the same on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fillRandom(row: Float32Array, rand: () => number): void {
  for (let i = 0; i < row.length; i++) row[i] = rand() * 8;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Token trajectories (without EOS) sampled under our grammar: random logits, masked, argmax. */
function trajectories(grammar: Grammar): number[][] {
  const eos = new Set(grammar.vocab.eosIds);
  const row = new Float32Array(grammar.vocab.size);
  return Array.from({ length: BATCH }, (_, seq) => {
    const rand = rng(1000 + seq);
    const st = grammar.start();
    const out: number[] = [];
    while (!st.complete && out.length < MAX_TOKENS) {
      fillRandom(row, rand);
      st.mask(row, MAX_TOKENS - out.length);
      const id = argmax(row);
      if (eos.has(id)) break;
      st.accept(id);
      out.push(id);
    }
    return out;
  });
}

interface Phase {
  us_per_mask: number;
  batch_step_us_mean: number;
  batch_step_us_p50: number;
  batch_step_us_p99: number;
  /** Mean batch step over a decode step: the cost goal. */
  batch_step_pct_of_decode: number;
  /** The same from the median step, which preemption by other work on the machine hardly moves. */
  batch_step_pct_of_decode_p50: number;
  steps: number;
}

/** Random logits rows, made once: refilling a row per step must not allocate inside the timed loop. */
const pools = new Map<number, Float32Array[]>();
function rowPool(size: number): Float32Array[] {
  let pool = pools.get(size);
  if (pool === undefined) {
    const rand = rng(7);
    pool = Array.from({ length: 8 }, () => {
      const row = new Float32Array(size);
      fillRandom(row, rand);
      return row;
    });
    pools.set(size, pool);
  }
  return pool;
}

/** One replay's raw figures: each batch step's wall time. */
interface Raw {
  batchUs: number[];
  masks: number;
}

/** Replays trajectories step by step; `stepOne(seq, row, token)` does mask + apply + accept. */
async function replay(trajs: number[][], size: number, stepOne: (seq: number, row: Float32Array, token: number) => void | Promise<void>): Promise<Raw> {
  const pool = rowPool(size);
  const rows = trajs.map(() => new Float32Array(size));
  const batchUs: number[] = [];
  let masks = 0;
  const longest = Math.max(...trajs.map((t) => t.length));
  (globalThis as { gc?: () => void }).gc?.();
  for (let step = 0; step < longest; step++) {
    let stepUs = 0;
    for (let s = 0; s < trajs.length; s++) {
      const token = trajs[s]![step];
      if (token === undefined) continue;
      rows[s]!.set(pool[(step + s) % pool.length]!);
      const t0 = performance.now();
      await stepOne(s, rows[s]!, token);
      stepUs += (performance.now() - t0) * 1000;
      masks++;
    }
    batchUs.push(stepUs);
  }
  return { batchUs, masks };
}

/**
 * Summarizes repetitions of the same replay. Each batch step's time is first the median over
 * repetitions: preemption by other work lands on random steps and drops out, while a cost every
 * repetition pays at that step (a trie walk on a cache miss) stays.
 */
function summarize(raws: Raw[]): Phase {
  const steps = raws[0]!.batchUs.map((_, i) => median(raws.map((r) => r.batchUs[i]!)));
  const total = steps.reduce((a, b) => a + b, 0);
  const masks = raws[0]!.masks;
  const mean = total / steps.length;
  const p50 = percentile(steps, 50);
  const pct = (us: number): number => round1((us / (DECODE_STEP_MS * 1000)) * 100);
  return {
    us_per_mask: round1(total / masks),
    batch_step_us_mean: round1(mean),
    batch_step_us_p50: round1(p50),
    batch_step_us_p99: round1(percentile(steps, 99)),
    batch_step_pct_of_decode: pct(mean),
    batch_step_pct_of_decode_p50: pct(p50),
    steps: masks,
  };
}

interface SideRun {
  meta: Record<string, number | string>;
  cold: Raw;
  warm: Raw;
}

function summarizeSide(runs: SideRun[]): Record<string, unknown> {
  const meta: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(runs[0]!.meta)) meta[k] = typeof v === 'number' ? round1(median(runs.map((r) => r.meta[k] as number))) : v;
  return { ...meta, cold: summarize(runs.map((r) => r.cold)), warm: summarize(runs.map((r) => r.warm)) };
}

async function ours(tok: TestTokenizer, format: ResponseFormat, trajs: number[][]): Promise<SideRun> {
  const vocab = vocabOf(tok);
  const t0 = performance.now();
  const grammar = compileGrammar(format, vocab, { maxWhitespace: 0 })!;
  const compileMs = performance.now() - t0;
  const run = async (): Promise<Raw> => {
    const states = trajs.map(() => grammar.start());
    return replay(trajs, vocab.size, (s, row, token) => {
      states[s]!.mask(row);
      states[s]!.accept(token);
    });
  };
  const cold = await run();
  const walks = grammar.walks;
  const warm = await run();
  return { meta: { approach: 'ours (automaton + token trie)', compile_ms: compileMs, trie_walks: walks }, cold, warm };
}

async function xgCompile(xg: Xgrammar, tok: TestTokenizer, format: ResponseFormat): Promise<{ compiled: unknown; infoMs: number; compileMs: number }> {
  const vocab = rawVocab(tok);
  const t0 = performance.now();
  const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, tok.vocabType, tok.vocabType === 'byte_fallback', vocab.length, tok.eosIds);
  const compiler = await xg.GrammarCompiler.createGrammarCompiler(info, false);
  const t1 = performance.now();
  // indent -1 and these separators: compact JSON, the same documents our grammar allows with no whitespace.
  const compiled =
    format.type === 'json_schema'
      ? await compiler.compileJSONSchema(JSON.stringify(format.json_schema.schema), false, -1, [',', ':'], true)
      : await compiler.compileBuiltinJSONGrammar();
  return { compiled, infoMs: t1 - t0, compileMs: performance.now() - t1 };
}

/**
 * Cuts each trajectory before the first token xgrammar refuses, so both sides replay the very
 * same tokens (its integer grammar refuses "-0", which JSON and ours allow). Returns how many were cut.
 */
async function agreeWithXgrammar(xg: Xgrammar, tok: TestTokenizer, format: ResponseFormat, trajs: number[][]): Promise<number> {
  const { compiled } = await xgCompile(xg, tok, format);
  let cut = 0;
  for (const t of trajs) {
    const m = await xg.GrammarMatcher.createGrammarMatcher(compiled);
    const bad = t.findIndex((id) => !m.acceptToken(id));
    m.dispose();
    if (bad >= 0) {
      t.length = bad;
      cut++;
    }
  }
  return cut;
}

async function xgrammar(xg: Xgrammar, tok: TestTokenizer, format: ResponseFormat, trajs: number[][]): Promise<SideRun> {
  const { compiled, infoMs, compileMs } = await xgCompile(xg, tok, format);
  const run = async (): Promise<Raw> => {
    const matchers = await Promise.all(trajs.map(() => xg.GrammarMatcher.createGrammarMatcher(compiled)));
    const phase = await replay(trajs, rawVocab(tok).length, async (s, row, token) => {
      const m = matchers[s]!;
      applyBitmask(await m.getNextTokenBitmask(), row);
      if (!m.acceptToken(token)) throw new Error(`xgrammar refused token ${token} of sequence ${s}`);
    });
    for (const m of matchers) m.dispose();
    return phase;
  };
  const cold = await run();
  const warm = await run();
  return { meta: { approach: 'xgrammar (web-xgrammar wasm)', tokenizer_info_ms: infoMs, compile_ms: compileMs }, cold, warm };
}

/** One-off costs per tokenizer: building the vocabulary and trie, then the string-body table (first string mask). */
function vocabSetup(tok: TestTokenizer): Record<string, unknown> {
  const t0 = performance.now();
  const vocab = vocabOf(tok);
  const t1 = performance.now();
  const st = compileGrammar({ type: 'json_object' }, vocab)!.start();
  for (const ch of '{"') st.accept(vocab.bytes.findIndex((b) => b?.length === 1 && b[0] === ch.charCodeAt(0)));
  st.mask(new Float32Array(vocab.size));
  return { tokenizer: tok.name, vocab: vocab.size, trie_nodes: vocab.trie.nodes, vocab_ms: round1(t1 - t0), string_table_ms: round1(performance.now() - t1) };
}

async function main(): Promise<void> {
  const xg = loadXgrammar();
  const rows: Record<string, unknown>[] = [];
  const setup: Record<string, unknown>[] = [];
  for (const tok of [shakespeare(), llama2()]) {
    setup.push(vocabSetup(tok));
    log(JSON.stringify(setup[setup.length - 1]));
    for (const { name, format } of FORMATS) {
      const trajs = trajectories(compileGrammar(format, vocabOf(tok), { maxWhitespace: 0 })!);
      const cut = await agreeWithXgrammar(xg, tok, format, trajs);
      log(`${tok.name} / ${name}: ${trajs.reduce((n, t) => n + t.length, 0)} tokens over ${trajs.length} sequences (${cut} cut short for xgrammar)`);
      const runs = await interleave(REPS, [() => ours(tok, format, trajs), () => xgrammar(xg, tok, format, trajs)]);
      for (const side of runs) {
        const row = { tokenizer: tok.name, vocab: vocabOf(tok).size, format: name, trajectories_cut: cut, ...summarizeSide(side) };
        log(JSON.stringify(row));
        rows.push(row);
      }
    }
  }
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(
    OUT_FILE,
    `${JSON.stringify(
      {
        decode_step_ms: DECODE_STEP_MS,
        goal: 'batch step (16 masks) <= 20 % of a 16-row decode step',
        rows,
        setup,
        settings: { batch: BATCH, max_tokens: MAX_TOKENS, reps: REPS, whitespace: 'none (compact, so both accept the same tokens)' },
        load_average_1m: round1(loadavg()[0]!),
        date: new Date().toISOString(),
        machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), os: `${platform()} ${release()}` },
        node: process.version,
      },
      null,
      2,
    )}\n`,
  );
  log(`wrote ${OUT_FILE}`);
}

await main();
