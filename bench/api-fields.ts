// The KV cache in the OpenAI fields, on the shipped model in process (no HTTP):
// 1. n-way sharing: one request with n choices (prompt prefilled once, forked into n rows)
//    against n separate requests for the same prompt submitted together (each computes it);
//    prompt tokens computed and wall time, medians of interleaved repetitions.
// 2. Structured outputs: time per generated token at batch 16 with a json_schema grammar
//    masking every step against the same requests unconstrained, and the mask's own cost per
//    batch-16 step (GrammarState.mask on the model's real logits rows).
// 3. Echo scoring: a 512-token prompt scored (all-position logits, the cache bypassed) against
//    the same prompt generating one token cold, and from a warm prefix cache.
// Results: bench/results/api-fields.json.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KvCacheManager } from '../src/core/kv/cache-manager.js';
import { GrammarCache } from '../src/core/sampling/constraints.js';
import { tokenVocab } from '../src/core/sampling/grammar/index.js';
import { defaultSampling } from '../src/core/sampling/params.js';
import type { EngineEvent } from '../src/core/scheduler/events.js';
import { Scheduler } from '../src/core/scheduler/scheduler.js';
import type { GenerateRequest } from '../src/core/scheduler/sequence.js';
import { loadModel } from '../src/runtime/load-model.js';
import { benchMeta } from './lib/meta.js';
import { ROOT } from './lib/server.js';
import { median } from './lib/stats.js';

const MODEL_DIR = join(ROOT, 'models/tiny-shakespeare');
const REPS = Number(process.env.REPS ?? 5);
const model = await loadModel(MODEL_DIR);
const tokenizerJson = JSON.parse(readFileSync(join(MODEL_DIR, 'tokenizer.json'), 'utf8')) as object;
const grammars = new GrammarCache(tokenVocab(tokenizerJson, model.info.eosIds));
const corpus = readFileSync(join(ROOT, 'test/fixtures/shakespeare-20k.txt'), 'utf8');

function engine() {
  const cache = new KvCacheManager({ layout: model.info.layout, maxBytes: 512 * 2 ** 20, blockSize: 16, sessionTtlMs: 60_000 });
  const listeners = new Map<string, (e: EngineEvent) => void>();
  const scheduler = new Scheduler(
    model.decoder,
    model.tokenizer,
    {
      eosIds: model.info.eosIds,
      contextLength: model.info.contextLength,
      cache,
      admissionTimeoutMs: 60_000,
      limits: { maxRunning: 16, maxQueued: 64, maxPrefillTokensPerStep: 256, requestTimeoutMs: 600_000 },
      grammars,
    },
    (e) => listeners.get(e.id)?.(e),
  );
  let next = 0;
  const run = (req: GenerateRequest): Promise<number> =>
    new Promise((resolve) => {
      const id = `r${next++}`;
      listeners.set(id, (e) => {
        if (e.type === 'done') resolve(e.usage.completionTokens);
      });
      scheduler.submit(id, req);
    });
  return { cache, run };
}

const request = (prompt: string, extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  promptIds: model.tokenizer.encode(prompt),
  maxTokens: 16,
  sampling: { ...defaultSampling, temperature: 1, seed: 1 },
  ignoreEos: true,
  ...extra,
});

async function timed<T>(f: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await f();
  return { ms: performance.now() - start, value };
}

// 1. n-way sharing.
const sharing: Record<string, unknown>[] = [];
for (const n of [4, 8]) {
  const forked: number[] = [];
  const separate: number[] = [];
  let computed = { forked: 0, separate: 0 };
  for (let r = 0; r < REPS; r++) {
    const prompt = corpus.slice(1000 + r * 600, 1000 + r * 600 + 512);
    for (const mode of r % 2 === 0 ? ['forked', 'separate'] : ['separate', 'forked']) {
      const e = engine();
      const before = e.cache.snapshot().computedTokens;
      const { ms } = await timed<unknown>(() =>
        mode === 'forked'
          ? e.run(request(prompt, { n }))
          : Promise.all(Array.from({ length: n }, (_, i) => e.run(request(prompt, { sampling: { ...defaultSampling, seed: i } })))),
      );
      (mode === 'forked' ? forked : separate).push(ms);
      computed = { ...computed, [mode]: e.cache.snapshot().computedTokens - before };
    }
  }
  sharing.push({ n, promptTokens: 512, maxTokens: 16, computedTokens: computed, medianMs: { forked: median(forked), separate: median(separate) } });
  console.log(`n=${n}: computed ${JSON.stringify(computed)}, median ms forked ${median(forked).toFixed(0)} vs separate ${median(separate).toFixed(0)}`);
}

// 2. Structured outputs at batch 16.
const schema = {
  type: 'object',
  properties: { name: { type: 'string' }, age: { type: 'integer' }, lines: { type: 'array', items: { type: 'string' } } },
  required: ['name', 'age', 'lines'],
  additionalProperties: false,
};
const format = { type: 'json_schema' as const, json_schema: { name: 'p', schema, strict: true } };
const perToken = { grammar: [] as number[], plain: [] as number[] };
for (let r = 0; r < REPS; r++) {
  for (const mode of r % 2 === 0 ? (['grammar', 'plain'] as const) : (['plain', 'grammar'] as const)) {
    const e = engine();
    const reqs = Array.from({ length: 16 }, (_, i) =>
      request(`${corpus.slice(i * 40, i * 40 + 40)}{`, {
        maxTokens: 64,
        ignoreEos: false,
        sampling: { ...defaultSampling, seed: r * 16 + i },
        ...(mode === 'grammar' ? { responseFormat: format } : {}),
      }),
    );
    const { ms, value } = await timed(() => Promise.all(reqs.map((q) => e.run(q))));
    const tokens = value.reduce((a, b) => a + b, 0);
    perToken[mode].push(ms / tokens);
  }
}
// The mask alone: 16 states walked along one matching document, each masking a vocabulary-sized row per step.
const grammar = grammars.get(format)!;
const doc = '{"name": "Romeo", "age": 16, "lines": ["But soft", "what light"]}';
const row = new Float32Array(model.info.vocabSize);
const maskTimes: number[] = [];
for (let rep = 0; rep < 20; rep++) {
  const st = Array.from({ length: 16 }, () => grammar.start());
  for (const id of model.tokenizer.encode(doc)) {
    const start = performance.now();
    for (const s of st) {
      row.fill(0);
      s.mask(row);
    }
    maskTimes.push((performance.now() - start) * 1000);
    for (const s of st) s.accept(id);
  }
}
const structured = {
  batch: 16,
  msPerToken: { grammar: median(perToken.grammar), plain: median(perToken.plain) },
  maskMicrosPerBatch16Step: median(maskTimes),
};
console.log(
  `structured: ms/token grammar ${structured.msPerToken.grammar.toFixed(3)} vs plain ${structured.msPerToken.plain.toFixed(3)}; mask ${structured.maskMicrosPerBatch16Step.toFixed(1)} µs per batch-16 step`,
);

// 3. Echo scoring vs a warm one-token generation of the same prompt.
const scoring = { scoreMs: [] as number[], warmMs: [] as number[], coldMs: [] as number[] };
for (let r = 0; r < REPS; r++) {
  const e = engine();
  const prompt = corpus.slice(5000 + r * 700, 5000 + r * 700 + 512);
  scoring.coldMs.push((await timed(() => e.run(request(prompt, { maxTokens: 1 })))).ms);
  scoring.warmMs.push((await timed(() => e.run(request(prompt, { maxTokens: 1 })))).ms);
  scoring.scoreMs.push((await timed(() => e.run(request(prompt, { maxTokens: 0, promptLogprobs: 0 })))).ms);
}
const echo = {
  promptTokens: 512,
  medianMs: { scoreAllPositions: median(scoring.scoreMs), coldOneToken: median(scoring.coldMs), warmPrefixOneToken: median(scoring.warmMs) },
};
console.log(
  `echo scoring 512 tokens: ${echo.medianMs.scoreAllPositions.toFixed(1)} ms vs cold one token ${echo.medianMs.coldOneToken.toFixed(1)} ms vs warm prefix one token ${echo.medianMs.warmPrefixOneToken.toFixed(1)} ms`,
);

mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/api-fields.json'), `${JSON.stringify({ meta: benchMeta(), reps: REPS, sharing, structured, echo }, null, 2)}\n`);
await model.decoder.close();
