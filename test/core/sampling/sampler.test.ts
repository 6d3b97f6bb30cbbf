// Sampling decides every generated token, and its filters must agree with vLLM/HF/OpenAI
// semantics. Empirical draws are checked against the exact truncated softmax, each filter
// and penalty against a hand-built case where it must change the outcome.
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { type SamplingParams, defaultSampling, validateSampling } from '../../../src/core/sampling/params.js';
import { Sampler } from '../../../src/core/sampling/sampler.js';
import { selectNucleus } from '../../../src/core/sampling/select.js';
import { loadModel } from '../../../src/runtime/load-model.js';
import { MODEL_DIR, argmax, runAll } from '../../helpers/model.js';

// Real next-token rows from the shipped model, for the numerical edge cases at the end: the
// sampler is a pure function of its rows, so these are computed once.
const model = await loadModel(MODEL_DIR);
t.teardown(() => model.decoder.close());
const VOCAB = model.info.vocabSize;
const ROMEO = model.tokenizer.encode('ROMEO:\nBut soft, what light through yonder window breaks?');
const realRows = (await runAll(model.decoder, ROMEO)).rows;

function params(over: Partial<SamplingParams> = {}): SamplingParams {
  return { ...defaultSampling, seed: 1, ...over };
}

function softmax(logits: ArrayLike<number>, temperature = 1): number[] {
  const xs = Array.from(logits, (x) => x / temperature);
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

function logitsOf(probs: number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

function refArgmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Token counts over n draws from a fresh sampler (penalties off, so draws are i.i.d.). */
function histogram(p: SamplingParams, logits: Float32Array, n: number): number[] {
  const s = new Sampler(p, []);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) {
    const tok = s.sample(logits);
    counts[tok] = counts[tok]! + 1;
  }
  return counts;
}

// chi-square critical values at p = 0.001, by degrees of freedom.
const CHI_001 = [NaN, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88];

/** Asserts counts match `expected` probabilities; tokens with expected 0 must never appear. */
function checkFrequencies(t: Test, counts: number[], expected: number[], label: string): void {
  const n = counts.reduce((a, b) => a + b, 0);
  let chi = 0;
  let df = -1;
  counts.forEach((c, i) => {
    const e = expected[i]! * n;
    if (e === 0) {
      t.equal(c, 0, `${label}: token ${i} is filtered out`);
      return;
    }
    chi += (c - e) ** 2 / e;
    df++;
  });
  if (df > 0) t.ok(chi < CHI_001[df]!, `${label}: chi-square ${chi.toFixed(2)} < ${CHI_001[df]} (df ${df})`);
  else t.equal(counts.filter((c) => c > 0).length, 1, `${label}: single surviving token`);
}

function truncated(probs: number[], keep: number[]): number[] {
  const z = keep.reduce((s, i) => s + probs[i]!, 0);
  return probs.map((p, i) => (keep.includes(i) ? p / z : 0));
}

t.test('defaultSampling disables every filter and penalty', async (t) => {
  t.same(defaultSampling, {
    temperature: 1,
    topK: 0,
    topP: 1,
    minP: 0,
    repetitionPenalty: 1,
    frequencyPenalty: 0,
    presencePenalty: 0,
  });
  t.doesNotThrow(() => validateSampling(defaultSampling));
});

t.test('validateSampling rejects each bad field by name', async (t) => {
  const bad: Array<[keyof SamplingParams, unknown[]]> = [
    ['temperature', [-0.1, NaN, Infinity, '1']],
    ['topK', [-1, 1.5, NaN]],
    ['topP', [0, -0.5, 1.01, NaN]],
    ['minP', [-0.01, 1.01, NaN]],
    ['repetitionPenalty', [0, -1, Infinity, NaN]],
    ['frequencyPenalty', [2.01, -2.01, NaN]],
    ['presencePenalty', [3, -3, NaN]],
    ['seed', [-1, 1.5, 2 ** 53, NaN]],
  ];
  for (const [field, values] of bad) {
    for (const v of values) {
      const p = { ...defaultSampling, [field]: v } as SamplingParams;
      t.throws(() => validateSampling(p), { name: 'RangeError', message: new RegExp(`^${field}\\b`) }, `${field}=${String(v)}`);
      t.throws(() => new Sampler(p, []), RangeError, `Sampler constructor also rejects ${field}=${String(v)}`);
    }
  }
  const edges: Array<Partial<SamplingParams>> = [
    { temperature: 0 },
    { topK: 1 },
    { topP: 1e-9 },
    { minP: 1 },
    { repetitionPenalty: 1e-3 },
    { frequencyPenalty: -2, presencePenalty: 2 },
    { seed: 0 },
    { seed: Number.MAX_SAFE_INTEGER },
  ];
  for (const e of edges) t.doesNotThrow(() => validateSampling(params(e)), `accepts ${JSON.stringify(e)}`);
});

t.test('greedy picks the argmax, lowest id on ties, without touching logits', async (t) => {
  const s = new Sampler(params({ temperature: 0 }), []);
  t.equal(s.sample(Float32Array.of(0.1, 3, 2, 3)), 1, 'tie -> lowest id');
  t.equal(s.sample(Float32Array.of(-5, -Infinity, -4)), 2, 'negative logits and masked tokens');
  t.throws(() => s.sample(Float32Array.of(-Infinity, -Infinity)), RangeError, 'all masked');
  t.throws(() => s.sample(new Float32Array(0)), RangeError, 'empty');
  fc.assert(
    fc.property(fc.array(fc.float({ noNaN: true, min: -50, max: 50 }), { minLength: 1, maxLength: 300 }), (xs) => {
      const logits = Float32Array.from(xs);
      const copy = logits.slice();
      const tok = new Sampler(params({ temperature: 0 }), []).sample(logits);
      return tok === refArgmax(logits) && copy.every((v, i) => Object.is(v, logits[i]));
    }),
  );
});

t.test('seeded sampling is reproducible and seeds differ', async (t) => {
  const steps = Array.from({ length: 200 }, (_, i) => Float32Array.from({ length: 50 }, (_, j) => Math.sin(i * 7 + j * 3)));
  const run = (p: SamplingParams) => {
    const s = new Sampler(p, [1, 2, 3]);
    return steps.map((l) => s.sample(l));
  };
  const configs: Array<Partial<SamplingParams>> = [
    {},
    { topK: 10 },
    { topP: 0.8 },
    { minP: 0.3 },
    { topK: 20, topP: 0.9, minP: 0.05, temperature: 0.7 },
    { repetitionPenalty: 1.3, frequencyPenalty: 0.5, presencePenalty: 0.4 },
  ];
  for (const c of configs) {
    const a = run(params({ ...c, seed: 99 }));
    t.same(run(params({ ...c, seed: 99 })), a, `same seed, same tokens: ${JSON.stringify(c)}`);
    t.not(run(params({ ...c, seed: 100 })).join(), a.join(), `different seed, different tokens: ${JSON.stringify(c)}`);
  }
  const unseeded = new Sampler({ ...defaultSampling }, []);
  t.ok(Number.isSafeInteger(unseeded.seed), 'a seed is drawn when none is given');
  t.not(new Sampler({ ...defaultSampling }, []).seed, unseeded.seed, 'drawn seeds differ');
});

t.test('empirical frequencies match softmax(logits / T)', async (t) => {
  const logits = Float32Array.of(1.5, 0.2, -0.7, 2.1, 0, -3, 1.1, 0.4);
  for (const temperature of [1, 0.6, 2.5]) {
    const counts = histogram(params({ temperature, seed: 7 }), logits, 100_000);
    checkFrequencies(t, counts, softmax(logits, temperature), `T=${temperature}`);
  }
  const masked = Float32Array.of(0, -Infinity, 0.5, -Infinity);
  checkFrequencies(t, histogram(params({ seed: 3 }), masked, 20_000), softmax(masked), '-Infinity is never drawn');
});

t.test('top-k', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.float({ noNaN: true, noDefaultInfinity: true, min: -20, max: 20 }), { minLength: 1, maxLength: 200 }), fc.nat(), (xs, seed) => {
      const logits = Float32Array.from(xs);
      return new Sampler(params({ topK: 1, seed }), []).sample(logits) === refArgmax(logits);
    }),
  );
  t.pass('top-k = 1 equals greedy');

  const V = 2000;
  const logits = Float32Array.from({ length: V }, (_, i) => Math.sin(i * 12.9898) * 4);
  const k = 5;
  const topIds = Array.from(logits.keys())
    .sort((a, b) => logits[b]! - logits[a]!)
    .slice(0, k);
  const s = new Sampler(params({ topK: k, temperature: 3 }), []);
  const outside = new Set<number>();
  const drawn = new Set<number>();
  for (let i = 0; i < 5000; i++) {
    const tok = s.sample(logits);
    drawn.add(tok);
    if (!topIds.includes(tok)) outside.add(tok);
  }
  t.same([...outside], [], 'never outside the k largest');
  t.equal(drawn.size, k, 'every one of the k largest is drawn (high temperature)');

  const flat = new Float32Array(10);
  const tied = new Set<number>();
  const st = new Sampler(params({ topK: 3 }), []);
  for (let i = 0; i < 500; i++) tied.add(st.sample(flat));
  t.same([...tied].sort(), [0, 1, 2], 'ties at the cut keep the lowest ids');
  const evict = new Set<number>();
  const se = new Sampler(params({ topK: 3 }), []);
  for (let i = 0; i < 500; i++) evict.add(se.sample(Float32Array.of(0, 0, 0, 1, 0, 0)));
  t.same([...evict].sort(), [0, 1, 3], 'a larger logit evicts the highest id among the tied');

  const probs = [0.1, 0.4, 0.05, 0.3, 0.15];
  checkFrequencies(t, histogram(params({ topK: 3 }), logitsOf(probs), 50_000), truncated(probs, [1, 3, 4]), 'top-k=3 renormalises');
  checkFrequencies(t, histogram(params({ topK: 99 }), logitsOf(probs), 50_000), probs, 'top-k >= V is no filter');
});

t.test('top-p keeps the smallest set whose mass >= p', async (t) => {
  const probs = [0.05, 0.5, 0.15, 0.3];
  const logits = logitsOf(probs);
  checkFrequencies(t, histogram(params({ topP: 0.4 }), logits, 5_000), [0, 1, 0, 0], 'p=0.4 -> top token only');
  checkFrequencies(t, histogram(params({ topP: 0.75 }), logits, 50_000), truncated(probs, [1, 3]), 'p=0.75 -> {0.5, 0.3}');
  checkFrequencies(t, histogram(params({ topP: 0.85 }), logits, 50_000), truncated(probs, [1, 3, 2]), 'p=0.85 -> {0.5, 0.3, 0.15}');
  checkFrequencies(t, histogram(params({ topP: 0.99 }), logits, 50_000), probs, 'p=0.99 -> everything');
  // With top-k, mass is measured on the top-k renormalised distribution (vLLM order):
  // among {0.5, 0.3} the top token holds 0.625.
  checkFrequencies(t, histogram(params({ topK: 2, topP: 0.6 }), logits, 5_000), [0, 1, 0, 0], 'top-k=2, p=0.6 -> 0.625 suffices');
  checkFrequencies(t, histogram(params({ topK: 2, topP: 0.7 }), logits, 50_000), truncated(probs, [1, 3]), 'top-k=2, p=0.7 -> both');
  // Ties at the nucleus boundary resolve towards the lowest id, like top-k.
  const tied = Float32Array.of(0, 1, 1, 1, 1);
  const tp = softmax(tied);
  checkFrequencies(t, histogram(params({ topP: 0.5 }), tied, 20_000), truncated(tp, [1, 2, 3]), 'ties at the boundary');

  // Many comparable candidates: the nucleus boundary is found by selection, not a sort, so
  // check the exact kept set. Each nucleus token holds > 1/200 of the kept mass, so 10k
  // draws hit every one of them.
  const ramps: Array<[string, Float32Array]> = [
    ['distinct', Float32Array.from({ length: 400 }, (_, i) => -i * 0.01)],
    ['tied in threes', Float32Array.from({ length: 400 }, (_, i) => -Math.floor(i / 3) * 0.03)],
  ];
  for (const [name, ramp] of ramps) {
    const rp = softmax(ramp);
    for (const [topP, topK] of [
      [0.5, 0],
      [0.31, 0],
      [0.5, 300],
    ] as const) {
      const base =
        topK > 0
          ? truncated(
              rp,
              Array.from({ length: topK }, (_, i) => i),
            )
          : rp;
      let acc = 0;
      let size = 0;
      while (acc < topP) acc += base[size++]!;
      const drawn = new Set<number>();
      const s = new Sampler(params({ topP, topK, seed: 17 }), []);
      for (let i = 0; i < 10_000; i++) drawn.add(s.sample(ramp));
      const sorted = [...drawn].sort((a, b) => a - b);
      t.same(
        sorted,
        Array.from({ length: size }, (_, i) => i),
        `${name}, p=${topP}, k=${topK}: exactly the first ${size} tokens`,
      );
    }
  }

  // Large vocabulary with a long tail: every draw must lie in the reference nucleus.
  const V = 5_000;
  const big = Float32Array.from({ length: V }, (_, i) => -Math.log(i + 1) * 1.1 + Math.sin(i) * 0.3);
  const sp = softmax(big);
  const order = Array.from(big.keys()).sort((a, b) => sp[b]! - sp[a]! || a - b);
  for (const topP of [0.3, 0.9, 0.995]) {
    const nucleus = new Set<number>();
    let acc = 0;
    for (const i of order) {
      nucleus.add(i);
      acc += sp[i]!;
      if (acc >= topP) break;
    }
    const s = new Sampler(params({ topP, seed: 11 }), []);
    let outside = 0;
    let deepest = 0;
    const rank = new Map(order.map((id, r) => [id, r]));
    for (let i = 0; i < 2000; i++) {
      const tok = s.sample(big);
      if (!nucleus.has(tok)) outside++;
      deepest = Math.max(deepest, rank.get(tok)!);
    }
    t.equal(outside, 0, `p=${topP}: no draw outside the ${nucleus.size}-token nucleus`);
    t.ok(deepest > nucleus.size / 4, `p=${topP}: draws reach deep into the nucleus (rank ${deepest})`);
  }
});

t.test('selectNucleus finds exactly the sorted-prefix nucleus', async (t) => {
  // Integer logits force many ties; weights 2^logit are integers, so every sum is exact and the
  // reference cannot disagree by rounding. Every boundary rank is tried, with the target both
  // exactly at a prefix sum and just below it, so each pivot is at some point the boundary.
  const arb = fc.record({
    logits: fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 1, maxLength: 200, size: 'max' }),
    shuffle: fc.nat(),
    maxRounds: fc.constantFrom(0, 1, 64),
  });
  fc.assert(
    fc.property(arb, ({ logits, shuffle, maxRounds }) => {
      const src = Float32Array.from(logits);
      const n = src.length;
      const start = Int32Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = (shuffle + i * 7919) % (i + 1);
        [start[i], start[j]] = [start[j]!, start[i]!];
      }
      const weight = (id: number) => 2 ** src[id]!;
      const ref = Array.from({ length: n }, (_, i) => i).sort((a, b) => src[b]! - src[a]! || a - b);
      let cum = 0;
      for (let size = 1; size <= n; size++) {
        cum += weight(ref[size - 1]!);
        const want = ref
          .slice(0, size)
          .sort((a, b) => a - b)
          .join();
        for (const target of [cum, cum - 0.5]) {
          const ids = start.slice();
          const w = Float64Array.from(ids, weight);
          const got = selectNucleus(src, ids, w, n, target, maxRounds);
          if (got !== size) return false;
          if (
            Array.from(ids.subarray(0, got))
              .sort((a, b) => a - b)
              .join() !== want
          )
            return false;
          if (!Array.from(ids).every((id, j) => w[j] === weight(id))) return false; // w stays paired
          if (new Set(ids).size !== n) return false; // still a permutation
        }
      }
      return true;
    }),
    { numRuns: 150 },
  );
  t.pass('matches the reference at every boundary for 150 random inputs');
});

t.test('min-p keeps tokens with p >= minP * pMax', async (t) => {
  const probs = [0.05, 0.5, 0.15, 0.3];
  const logits = logitsOf(probs);
  checkFrequencies(t, histogram(params({ minP: 0.2 }), logits, 50_000), truncated(probs, [1, 2, 3]), 'minP=0.2 -> p >= 0.1');
  checkFrequencies(t, histogram(params({ minP: 0.5 }), logits, 50_000), truncated(probs, [1, 3]), 'minP=0.5 -> p >= 0.25');
  checkFrequencies(t, histogram(params({ minP: 1 }), logits, 2_000), [0, 1, 0, 0], 'minP=1 -> argmax');
  checkFrequencies(t, histogram(params({ minP: 0.5, topK: 3 }), logits, 50_000), truncated(probs, [1, 3]), 'with top-k');
  checkFrequencies(t, histogram(params({ minP: 0.5, topP: 0.95 }), logits, 50_000), truncated(probs, [1, 3]), 'with top-p');
  // Temperature flattens the distribution first, so more tokens pass the same minP.
  const hot = softmax(logits, 4);
  const keep = [0, 1, 2, 3].filter((i) => hot[i]! >= 0.6 * Math.max(...hot));
  checkFrequencies(t, histogram(params({ minP: 0.6, temperature: 4 }), logits, 50_000), truncated(hot, keep), 'after temperature');
});

t.test('repetition penalty (HF style, prompt + generated)', async (t) => {
  const greedy = (over: Partial<SamplingParams>, prompt: number[]) => new Sampler(params({ temperature: 0, ...over }), prompt);
  t.equal(greedy({}, [0]).sample(Float32Array.of(2, 1.9, 0)), 0, 'no penalty -> 0');
  t.equal(greedy({ repetitionPenalty: 1.2 }, [0]).sample(Float32Array.of(2, 1.9, 0)), 1, 'positive logit divided: 2/1.2 < 1.9');
  t.equal(greedy({ repetitionPenalty: 1.2 }, [0]).sample(Float32Array.of(-1, -1.1)), 1, 'negative logit multiplied: -1.2 < -1.1');
  t.equal(greedy({ repetitionPenalty: 1.2 }, [0, 0, 0]).sample(Float32Array.of(2, 1.6)), 0, 'applied once per id, not per occurrence');
  t.equal(greedy({ repetitionPenalty: 0.5 }, [1]).sample(Float32Array.of(2, 1.5)), 1, 'penalty < 1 encourages repeats');
  const s = greedy({ repetitionPenalty: 1.2 }, []);
  const row = Float32Array.of(2, 1.9);
  t.same([s.sample(row), s.sample(row)], [0, 1], 'generated tokens are penalised too');
  t.equal(greedy({ repetitionPenalty: 1.2 }, [5000, -1, 0.5]).sample(Float32Array.of(2, 1)), 0, 'out-of-range prompt ids are ignored');
});

t.test('frequency and presence penalties (OpenAI style, generated only)', async (t) => {
  const run = (over: Partial<SamplingParams>, prompt: number[], n: number, row = Float32Array.of(2, 1.5)) => {
    const s = new Sampler(params({ temperature: 0, ...over }), prompt);
    return Array.from({ length: n }, () => s.sample(row));
  };
  t.same(run({}, [], 4), [0, 0, 0, 0], 'no penalty');
  t.same(run({ frequencyPenalty: 0.3 }, [], 4), [0, 0, 1, 0], 'frequency grows with count: 2-0.6 < 1.5');
  t.same(run({ presencePenalty: 0.3 }, [], 4), [0, 0, 0, 0], 'presence is flat: 2-0.3 > 1.5 forever');
  t.same(run({ presencePenalty: 0.6 }, [], 4), [0, 1, 0, 0], 'presence 0.6: 1.4 < 1.5, then both penalised');
  t.same(run({ frequencyPenalty: 2, presencePenalty: 2 }, [0, 0, 0], 1), [0], 'prompt tokens are not counted');
  t.same(run({ frequencyPenalty: -0.5 }, [], 3, Float32Array.of(1.5, 2)), [1, 1, 1], 'negative penalty favours repeats');
  const combined = run({ repetitionPenalty: 2, frequencyPenalty: 0.5 }, [], 2, Float32Array.of(4, 1.8));
  t.same(combined, [0, 1], 'repetition then frequency: 4/2 - 0.5 = 1.5 < 1.8');
  const logits = Float32Array.of(1, 2, 3, -1);
  const copy = logits.slice();
  const s = new Sampler(params({ repetitionPenalty: 1.5, frequencyPenalty: 1, presencePenalty: 1, topP: 0.9 }), [0, 1, 2, 3]);
  for (let i = 0; i < 20; i++) s.sample(logits);
  t.same(Array.from(logits), Array.from(copy), 'logits are never mutated');
});

t.test('penalties change the sampled distribution, not just greedy', async (t) => {
  const logits = Float32Array.of(1, 1);
  const s = new Sampler(params({ presencePenalty: 2, seed: 5 }), []);
  const first = s.sample(logits);
  let same = 0;
  for (let i = 0; i < 2000; i++) {
    const p = new Sampler(params({ presencePenalty: 2, seed: 1000 + i }), []);
    const a = p.sample(logits);
    if (p.sample(logits) === a) same++;
  }
  t.ok(first === 0 || first === 1);
  // P(repeat) = e^-2 / (1 + e^-2) = 0.119
  t.ok(Math.abs(same / 2000 - 0.119) < 0.03, `repeat rate ${(same / 2000).toFixed(3)} ~ 0.119`);
});

t.test('large vocabulary: all paths stay fast', async (t) => {
  const V = 151_936;
  // Flat rows (huge nucleus) are the worst case for top-p; peaked rows look like real LLM output.
  const flat = Array.from({ length: 2 }, (_, r) => Float32Array.from({ length: V }, (_, i) => Math.sin(i * 0.37 + r) * 3 + Math.cos(i * 1.3) * 2));
  const peaked = Array.from({ length: 2 }, (_, r) =>
    Float32Array.from({ length: V }, (_, i) => Math.sin(i * 0.37 + r) * 3 + (Math.cos(i * 1.3 + r) > 0.9995 ? 14 : 0)),
  );
  const prompt = Array.from({ length: 2000 }, (_, i) => (i * 7919) % V);
  const configs: Array<Partial<SamplingParams>> = [
    { temperature: 0 },
    {},
    { topK: 50 },
    { topP: 0.9 },
    { minP: 0.1 },
    { topK: 50, topP: 0.9, minP: 0.05, repetitionPenalty: 1.1, frequencyPenalty: 0.2, presencePenalty: 0.2 },
  ];
  for (const [label, rows] of [
    ['flat', flat],
    ['peaked', peaked],
  ] as const) {
    for (const c of configs) {
      const s = new Sampler(params(c), prompt);
      const n = 100;
      const start = performance.now();
      for (let i = 0; i < n; i++) s.sample(rows[i % rows.length]!);
      const ms = (performance.now() - start) / n;
      // Generous bound: catches an accidental O(V log V) or per-token allocation blow-up, not jitter.
      t.ok(ms < 50, `${label} ${JSON.stringify(c)}: ${ms.toFixed(3)} ms/token`);
    }
  }
});

// Numerical edge cases. The HTTP schema accepts temperature in [0, 2], top_p in (0, 1], min_p in
// [0, 1], frequency/presence in [-2, 2] and repetition_penalty in (0, 10]; at the small ends
// 1 / T and x / penalty overflow, which once made sample() return -1 (fed to the model as a
// token). Expected tokens come from the limits the comments in sampler.ts derive.

/** Draws `n` tokens over `rows` (cycled) and returns them. */
function drawAll(p: SamplingParams, prompt: number[], rows: Float32Array[], n = rows.length): number[] {
  const s = new Sampler(p, prompt);
  return Array.from({ length: n }, (_, i) => s.sample(rows[i % rows.length]!));
}

/** Rows with a unique maximum, so "greedy" has one answer however ties would be broken. */
const uniqueMaxRows = realRows.filter((r) => r.filter((x) => x === r[argmax(r)]).length === 1);

t.test('real rows: vocabulary size and a unique argmax', async (t) => {
  t.equal(VOCAB, 257, 'the shipped model is byte-level');
  t.ok(realRows.every((r) => r.length === VOCAB));
  t.ok(uniqueMaxRows.length >= 50, `${uniqueMaxRows.length} rows with a unique max`);
});

t.test('a temperature whose 1/T overflows is greedy', async (t) => {
  const tiny = [1e-320, Number.MIN_VALUE, 5e-309, 5.56e-309, -0];
  const filters: Array<Partial<SamplingParams>> = [
    {},
    { topK: 40 },
    { topK: 1 },
    { topP: 0.9 },
    { topP: Number.MIN_VALUE },
    { minP: 0.05 },
    { minP: Number.MIN_VALUE },
    { topK: 40, topP: 0.9, minP: 0.05 },
    { topK: VOCAB, topP: 1e-308, minP: 1 },
  ];
  const want = uniqueMaxRows.map(argmax);
  for (const temperature of tiny) {
    t.equal(1 / temperature === Infinity || 1 / temperature === -Infinity, true, `1/${temperature} overflows`);
    for (const f of filters) {
      for (const seed of [1, 2, 3]) {
        const got = drawAll(params({ temperature, seed, ...f }), [], uniqueMaxRows);
        t.same(got, want, `T=${temperature} ${JSON.stringify(f)} seed ${seed}: every row gives its argmax`);
      }
    }
  }
  const g = new Sampler(params({ temperature: 0 }), []);
  const s = new Sampler(params({ temperature: 1e-320 }), []);
  const row = uniqueMaxRows[3]!;
  t.equal(s.sample(row), g.sample(row));
});

t.test('a tiny but finite-1/T temperature draws the argmax', async (t) => {
  // 1/T is finite here, so the stochastic path runs: every weight but the max's underflows.
  const want = uniqueMaxRows.map(argmax);
  for (const temperature of [1e-308, 5.57e-309, 1e-300, 1e-30]) {
    for (const f of [{}, { topK: 40 }, { topP: 0.9 }, { minP: 0.05 }, { topK: 40, topP: 0.5, minP: 0.5 }]) {
      t.same(drawAll(params({ temperature, ...f }), [], uniqueMaxRows), want, `T=${temperature} ${JSON.stringify(f)}`);
    }
  }
});

t.test('tiny temperature on the real model generates the greedy text', async (t) => {
  // What the fuzzer sent: {"prompt":"ROMEO:","max_tokens":12,"temperature":1e-320}, and
  // the same with the filters and penalties on.
  const prompt = model.tokenizer.encode('ROMEO:');
  const generate = async (over: Partial<SamplingParams>) => {
    const s = new Sampler(params(over), prompt);
    const first = await runAll(model.decoder, prompt);
    const out: number[] = [s.sample(first.rows.at(-1)!)];
    while (out.length < 12) out.push(s.sample((await runAll(model.decoder, [out.at(-1)!], first.cache)).rows[0]!));
    return out;
  };
  const penalties = { repetitionPenalty: 1.3, frequencyPenalty: 0.5, presencePenalty: 0.5 };
  for (const over of [{}, { topK: 40, topP: 0.9, minP: 0.05 }, penalties]) {
    const greedy = await generate({ ...over, temperature: 0 });
    t.ok(greedy.every((id) => Number.isInteger(id) && id >= 0 && id < VOCAB));
    for (const temperature of [1e-320, Number.MIN_VALUE, 5e-309]) {
      const got = await generate({ ...over, temperature, seed: 42 });
      t.same(got, greedy, `T=${temperature} ${JSON.stringify(over)}: ${JSON.stringify(model.tokenizer.decode(got))}`);
    }
  }
});

/**
 * Greedy over the exactly penalised row (float64; x / rep is increasing in x, so among seen
 * tokens whose value overflows even float64 the larger logit is the larger value).
 */
function refPenalisedArgmax(row: Float32Array, seen: ReadonlySet<number>, rep: number): number {
  let best = -1;
  let bestV = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const x = row[i]!;
    const v = seen.has(i) ? (x > 0 ? x / rep : x * rep) : x;
    if (v > bestV || (v === Infinity && bestV === Infinity && x > row[best]!)) {
      best = i;
      bestV = v;
    }
  }
  return best;
}

t.test('a repetition penalty whose x / rep leaves float32 takes its limit', async (t) => {
  // 2 / 1e-39 is past float32's 3.4e38; as rep -> 0 the seen token with the largest logit takes
  // all the mass, at any temperature. Token 0 (unseen) leads before the penalty; token 1 is the
  // lowest id that overflows, which a plain +Infinity would have made win.
  const hand = Float32Array.of(3, 1, 2, 0.5, -1);
  for (const repetitionPenalty of [1e-39, 1e-300, Number.MIN_VALUE]) {
    for (const temperature of [0, 0.7, 1, 2, 1e-320]) {
      for (const f of [{}, { topK: 2 }, { topP: 0.9 }, { minP: 0.1 }]) {
        const p = params({ repetitionPenalty, temperature, ...f });
        t.same(drawAll(p, [1, 2, 4], [hand], 5), [2, 2, 2, 2, 2], `rep=${repetitionPenalty} T=${temperature} ${JSON.stringify(f)}`);
      }
    }
  }

  // Real rows, the prompt's bytes seen: the reference is the float64 greedy of the penalised row.
  const seen = new Set(ROMEO);
  const row6 = realRows[6]!;
  t.not(refPenalisedArgmax(row6, seen, 1e-39), argmax(row6), 'the penalty changes the winner');
  t.not(refPenalisedArgmax(row6, seen, 1e-39), Math.min(...[...seen].filter((i) => row6[i]! / 1e-39 > 3.5e38)), 'not the lowest overflowing id');
  for (const repetitionPenalty of [1e-39, 1e-38, 1e-100, Number.MIN_VALUE]) {
    for (const [k, row] of realRows.entries()) {
      const want = refPenalisedArgmax(row, seen, repetitionPenalty);
      for (const over of [{ temperature: 0 }, { temperature: 1 }, { temperature: 2, topK: 50, topP: 0.95, minP: 0.01 }]) {
        // A fresh sampler per row: its draws would add to `seen` otherwise.
        const got = new Sampler(params({ repetitionPenalty, ...over }), ROMEO).sample(row);
        if (got !== want) t.fail(`rep=${repetitionPenalty} row ${k} ${JSON.stringify(over)}: ${got}, want ${want}`);
      }
    }
  }
  t.pass('every real row, every config, gives the limit token');
});

t.test('past float32, frequency and presence penalties still rank the tied tokens', async (t) => {
  // Tokens 0 and 1 share a logit, both boosted past float32: only their penalties separate
  // them, as in exact arithmetic (the huge common part cancels in the softmax).
  const row = Float32Array.of(1, 1, 0.5, 3);
  const greedy = drawAll(params({ temperature: 0, repetitionPenalty: 1e-39, frequencyPenalty: 1 }), [0, 1, 2], [row], 4);
  t.same(greedy, [0, 1, 0, 1], 'greedy: the less often generated of the two, lowest id on ties');
  // Sampled: after drawing one of them, the other is e^2 times likelier.
  let other = 0;
  const n = 4000;
  for (let seed = 0; seed < n; seed++) {
    const [a, b] = drawAll(params({ repetitionPenalty: 1e-39, presencePenalty: 2, seed }), [0, 1, 2], [row], 2);
    t.ok(a! <= 1 && b! <= 1, 'only the tied pair is drawn') || t.bailout();
    if (a !== b) other++;
  }
  const want = 1 / (1 + Math.exp(-2));
  t.ok(Math.abs(other / n - want) < 0.03, `switch rate ${(other / n).toFixed(3)} ~ ${want.toFixed(3)}`);
  const s = new Sampler(params({ temperature: 0, repetitionPenalty: 1e-39, presencePenalty: 2 }), [0, 1, 2]);
  t.same([s.sample(row), s.sample(row)], [0, 1]);
});

t.test('large repetition penalties: valid ids, the exact penalised greedy token', async (t) => {
  const seen = new Set(ROMEO);
  for (const repetitionPenalty of [2, 9.99, 10]) {
    for (const [k, row] of realRows.entries()) {
      const want = refPenalisedArgmax(row, seen, repetitionPenalty);
      const got = new Sampler(params({ temperature: 0, repetitionPenalty }), ROMEO).sample(row);
      if (got !== want) t.fail(`rep=${repetitionPenalty} row ${k}: ${got}, want ${want}`);
      const drawn = new Sampler(params({ repetitionPenalty, topP: 0.9 }), ROMEO).sample(row);
      if (!(Number.isInteger(drawn) && drawn >= 0 && drawn < VOCAB)) t.fail(`rep=${repetitionPenalty} row ${k}: drew ${drawn}`);
    }
  }
  t.pass('greedy matches the float64 reference on every real row');
  // x * rep past -3.4e38 is not a mask: with nothing else left, such a token is still drawn.
  const row = Float32Array.of(-Infinity, -1e38, -2e38, -Infinity);
  for (const over of [{ temperature: 0 }, { temperature: 1 }, { topK: 1 }, { topP: 0.5 }, { minP: 0.5 }]) {
    for (const repetitionPenalty of [10, 1e300]) {
      const tok = new Sampler(params({ repetitionPenalty, ...over }), [1, 2]).sample(row);
      t.ok(tok === 1 || tok === 2, `rep=${repetitionPenalty} ${JSON.stringify(over)}: ${tok}`);
    }
  }
  t.equal(new Sampler(params({ temperature: 0, repetitionPenalty: 10 }), [1]).sample(Float32Array.of(-1e38, -1e38)), 0, 'an unpenalised token outranks it');
});

t.test('non-finite logits from the model', async (t) => {
  const nan = Float32Array.of(NaN, 1, 3, NaN, 2);
  const inf = Float32Array.of(0, Infinity, 5, Infinity, -Infinity);
  const configs: Array<Partial<SamplingParams>> = [
    { temperature: 0 },
    {},
    { temperature: 1e-320 },
    { temperature: 1e-308 },
    { temperature: 2 },
    { topK: 2 },
    { topP: 0.9 },
    { minP: 0.1 },
    { topK: 3, topP: 0.5, minP: 0.2, temperature: 0.7 },
    { repetitionPenalty: 1.5, frequencyPenalty: 1, presencePenalty: -1 },
    { repetitionPenalty: 1e-39, presencePenalty: 2 },
  ];
  for (const c of configs) {
    const a = new Set(drawAll(params(c), [0, 1, 2, 3], [nan], 300));
    t.ok(
      [...a].every((id) => id === 1 || id === 2 || id === 4),
      `NaN is never drawn ${JSON.stringify(c)}: ${[...a]}`,
    );
    const b = new Set(drawAll(params(c), [0, 2], [inf], 300));
    t.ok(
      [...b].every((id) => id === 1 || id === 3),
      `only +Infinity is drawn ${JSON.stringify(c)}: ${[...b]}`,
    );
  }
  t.equal(new Sampler(params({ temperature: 0 }), []).sample(nan), 2, 'greedy skips NaN');
  t.equal(new Sampler(params({ temperature: 0 }), []).sample(inf), 1, 'greedy: lowest +Infinity id');
  checkFrequencies(t, histogram(params({ seed: 9 }), inf, 20_000), [0, 0.5, 0, 0.5, 0], '+Infinity tokens share the mass');
  // A real row with holes: the rest still samples as before.
  const row = realRows[10]!.slice();
  const top = argmax(row);
  row[0] = NaN;
  row[200] = NaN;
  t.equal(new Sampler(params({ temperature: 0 }), []).sample(row), top, 'NaN elsewhere leaves greedy alone');
  row[77] = Infinity;
  t.same(drawAll(params({ topP: 0.9 }), [], [row], 20), new Array(20).fill(77), 'one +Infinity takes every draw');
  const copy = Float32Array.of(NaN, Infinity, 1);
  new Sampler(params({ repetitionPenalty: 1e-39 }), [0, 1, 2]).sample(copy);
  t.ok(Number.isNaN(copy[0]!) && copy[1] === Infinity && copy[2] === 1, 'logits are not mutated');
  // The sampler finds NaN/+Infinity on the way and redraws from the cleaned row: that must be
  // exactly the draw from a row the caller cleaned, with the same seed.
  const clean = (r: Float32Array) => (r.includes(Infinity) ? r.map((x) => (x === Infinity ? 0 : -Infinity)) : r.map((x) => (Number.isNaN(x) ? -Infinity : x)));
  const dirty = [0, 5, 20, 56].map((k) => {
    const r = realRows[k]!.slice();
    r[k % 7] = NaN;
    r[argmax(r)] = NaN; // the top token too
    r[200] = NaN;
    return r;
  });
  const infRow = realRows[30]!.map((x, i) => (i === 40 || i === 170 ? Infinity : x));
  for (const c of [...configs, { topK: 1 }, { topK: 2, temperature: 2 }, { minP: 0.5, temperature: 1e-300 }]) {
    for (const rows of [dirty, [infRow]]) {
      // Penalties do not move +Infinity (Infinity - x is Infinity), but would move the zeros a
      // caller cleaned it to.
      if (rows !== dirty && (c.frequencyPenalty || c.presencePenalty)) continue;
      const a = drawAll(params({ ...c, seed: 77 }), ROMEO, rows, 40);
      const b = drawAll(params({ ...c, seed: 77 }), ROMEO, rows.map(clean), 40);
      t.same(a, b, `${rows === dirty ? 'NaN' : '+Infinity'} ${JSON.stringify(c)}: as the cleaned row`);
    }
  }
  // With no usable logit at all there is no token to give: same error as an all-masked row.
  for (const bad of [Float32Array.of(NaN, NaN), Float32Array.of(NaN, -Infinity)]) {
    for (const c of [{ temperature: 0 }, {}, { topK: 1 }, { topP: 0.5 }]) {
      t.throws(() => new Sampler(params(c), []).sample(bad), { name: 'RangeError', message: /no token/ });
    }
  }
});

t.test('any parameters the API accepts give a token id in [0, vocab)', async (t) => {
  const tiny = [Number.MIN_VALUE, 1e-320, 1e-308, 5e-309];
  const pick = <T>(edges: T[], range: fc.Arbitrary<T>) => fc.oneof(fc.constantFrom(...edges), range);
  const unit = fc.double({ min: 0, max: 1, noNaN: true });
  const arb = fc.record({
    temperature: pick([0, -0, ...tiny, 1e-300, 0.7, 1, 2], fc.double({ min: 0, max: 2, noNaN: true })),
    topK: pick([0, 1, 2, 40, VOCAB - 1, VOCAB, VOCAB + 10], fc.nat({ max: 2 * VOCAB })),
    topP: pick(
      [...tiny, 1e-9, 0.5, 0.9, 1 - 2 ** -53, 1],
      unit.filter((x) => x > 0),
    ),
    minP: pick([0, ...tiny, 0.05, 0.5, 1 - 2 ** -53, 1], unit),
    repetitionPenalty: pick(
      [...tiny, 1e-39, 1e-3, 0.5, 1, 1.1, 2, 10],
      fc.double({ min: 0, max: 10, noNaN: true }).filter((x) => x > 0),
    ),
    frequencyPenalty: pick([-2, 0, 2, Number.MIN_VALUE], fc.double({ min: -2, max: 2, noNaN: true })),
    presencePenalty: pick([-2, 0, 2, Number.MIN_VALUE], fc.double({ min: -2, max: 2, noNaN: true })),
    seed: fc.nat(),
    row: fc.nat({ max: realRows.length - 1 }),
    prompt: fc.constantFrom([], ROMEO, ROMEO.slice(0, 6), [0, 10, 256]),
    // Now and then the model's row carries NaN or infinities.
    holes: fc.array(fc.tuple(fc.nat({ max: VOCAB - 1 }), fc.constantFrom(NaN, Infinity, -Infinity)), { maxLength: 3 }),
  });
  let runs = 0;
  fc.assert(
    fc.property(arb, ({ row: k, prompt, holes, ...p }) => {
      runs++;
      const row = realRows[k]!.slice();
      for (const [i, v] of holes) row[i] = v;
      const copy = row.slice();
      const s = new Sampler(p, prompt);
      // Several steps, so generated tokens feed the penalties.
      for (let step = 0; step < 6; step++) {
        const id = s.sample(row);
        if (!(Number.isInteger(id) && id >= 0 && id < VOCAB)) return false;
        if (Number.isNaN(row[id]!) || row[id] === -Infinity) return false; // never a NaN or masked token
      }
      return copy.every((v, i) => Object.is(v, row[i]));
    }),
    { numRuns: 3000 },
  );
  t.equal(runs, 3000, 'every run returned an id in range, never NaN or masked');
});
