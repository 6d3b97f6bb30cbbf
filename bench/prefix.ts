// `npm run bench:prefix`: what the KV cache buys a client of the real server (a separate
// process, default configuration).
//
// 1. Automatic prefix caching: time to first token for a 1,024-token shared prefix plus a
//    16-token suffix, cold versus warm. Each repetition draws a fresh random prefix (random
//    from its first token, so no earlier request's blocks can match); the cold request is the
//    first ever sent with it, the warm one sends the same prefix with a different 16-token
//    suffix and must be served 1,024 cached tokens (asserted: cached_tokens ≥ 1008 in the
//    usage chunk; the cold one must have 0). TTFT runs from sending the streamed request to
//    the first data chunk with text. A warm request depends on its cold one, so the two run
//    back to back, cold then warm, PREFIX_REPS (15) times: the sides still alternate, so a
//    disturbance lasting a while hits both. Medians; ratio = cold / warm (goal ≥ 10).
// 2. Sessions: a CHAT_TURNS (10)-turn chat through /v1/completions, the transcript as the
//    prompt (max_tokens 32); each turn appends the assistant's reply and a new 40-token user
//    line. Once with a `session_id`, once without. To measure what the session buys over
//    recomputing, the no-session run must get nothing from the prefix cache either — it would
//    otherwise reuse the previous turn's blocks and hide the difference. We make that so by
//    varying a leading token: the transcript's first line is a random tag, fixed for the
//    session run, drawn afresh for every no-session turn; prefix blocks are keyed by a hash
//    chained from the first token, so no block ever matches (asserted: cached_tokens = 0 on
//    every no-session turn). The prompts keep the same length and the server the same config
//    as in part 1 — unlike a second server with a huge KV_CACHE_BLOCK_SIZE, which would also
//    change how released caches are cut into blocks. Reported per variant: prefilled tokens
//    (Σ prompt_tokens − cached_tokens) and seconds (all turns, sequential), medians over
//    CHAT_REPS (3) interleaved repetitions, each with fresh random content.
//
// Requests are greedy with EOS ignored (exact token counts). Writes bench/results/prefix.json:
// {"cold_ttft_ms", "warm_ttft_ms", "ratio", "chat": {"turns", "session": {"prefilled_tokens",
// "seconds"}, "no_session": {…}}} plus context (per-run figures, settings, machine, date).
import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { envInt, interleave, log, round1, round2 } from './lib/interleave.js';
import { ROOT, type StreamResult, type Usage, complete, startService, streamCompletion } from './lib/server.js';
import { median } from './lib/stats.js';
import { benchMeta } from './lib/meta.js';

const OUT_FILE = join(ROOT, 'bench/results/prefix.json');
const PREFIX_TOKENS = 1024;
const SUFFIX_TOKENS = 16;
const MIN_WARM_CACHED = PREFIX_TOKENS - 16;
const TTFT_MAX_TOKENS = 8;
const REPS = envInt('PREFIX_REPS', 15);
const CHAT_TURNS = envInt('CHAT_TURNS', 10);
const CHAT_REPS = envInt('CHAT_REPS', 3);
const CHAT_MAX_TOKENS = 32;
/** "\nUSER: " + 28 random characters + "\nBOT:" = 40 tokens (byte-level model: one per ASCII character). */
const USER_TEXT = 28;

const WORDS = (
  'the and thou thee thy lord king queen love death night day sword crown heart blood ' +
  'speak hear good noble gentle sweet fair foul grave honour fortune heaven earth tongue'
).split(' ');

/** `n` characters of random words (ASCII: exactly n tokens for the byte-level model). */
function randomText(n: number): string {
  let s = '';
  while (s.length < n) s += `${WORDS[randomInt(WORDS.length)]!} `;
  return s.slice(0, n);
}

/** A fresh random prefix: random from its first character. */
const randomPrefix = (): string => `${randomBytes(4).toString('hex')} ${randomText(PREFIX_TOKENS - 9)}`;

// ---- 1. cold vs warm TTFT ----

interface Pair {
  cold: StreamResult;
  warm: StreamResult;
}

async function coldWarm(url: string): Promise<Pair> {
  const prefix = randomPrefix();
  const suffixA = randomText(SUFFIX_TOKENS);
  let suffixB = randomText(SUFFIX_TOKENS);
  while (suffixB === suffixA) suffixB = randomText(SUFFIX_TOKENS);
  const cold = await streamCompletion(url, { prompt: prefix + suffixA, max_tokens: TTFT_MAX_TOKENS });
  const warm = await streamCompletion(url, { prompt: prefix + suffixB, max_tokens: TTFT_MAX_TOKENS });
  const expected = PREFIX_TOKENS + SUFFIX_TOKENS;
  for (const [what, r] of [
    ['cold', cold],
    ['warm', warm],
  ] as const) {
    if (r.usage.prompt_tokens !== expected) throw new Error(`${what}: ${r.usage.prompt_tokens} prompt tokens, expected ${expected}`);
    if (r.usage.completion_tokens !== TTFT_MAX_TOKENS) throw new Error(`${what}: ${r.usage.completion_tokens} completion tokens`);
  }
  if (cold.usage.prompt_tokens_details.cached_tokens !== 0) {
    throw new Error(`cold request reused ${cold.usage.prompt_tokens_details.cached_tokens} cached tokens`);
  }
  if (warm.usage.prompt_tokens_details.cached_tokens < MIN_WARM_CACHED) {
    throw new Error(`warm request reused only ${warm.usage.prompt_tokens_details.cached_tokens} cached tokens (expected ≥ ${MIN_WARM_CACHED})`);
  }
  return { cold, warm };
}

// ---- 2. a chat with and without a session ----

interface ChatRun {
  prefilledTokens: number;
  promptTokens: number;
  seconds: number;
  cachedPerTurn: number[];
}

async function chat(url: string, withSession: boolean): Promise<ChatRun> {
  const sessionId = withSession ? `bench-prefix-${randomBytes(8).toString('hex')}` : undefined;
  const tag = (): string => `${randomBytes(4).toString('hex')}\n`;
  const fixedTag = tag();
  // The transcript after the tag line; the prompt is tag + body.
  let body = `USER: ${randomText(USER_TEXT)}\nBOT:`;
  const run: ChatRun = { prefilledTokens: 0, promptTokens: 0, seconds: 0, cachedPerTurn: [] };
  const start = performance.now();
  for (let turn = 0; turn < CHAT_TURNS; turn++) {
    const prompt = (withSession ? fixedTag : tag()) + body;
    const r = await complete(url, { prompt, max_tokens: CHAT_MAX_TOKENS, ...(sessionId ? { session_id: sessionId } : {}) });
    if (r.status !== 200 || !r.usage) throw new Error(`chat turn ${turn + 1}: HTTP ${r.status} (${r.errorCode})`);
    const u: Usage = r.usage;
    if (u.completion_tokens !== CHAT_MAX_TOKENS) throw new Error(`chat turn ${turn + 1}: ${u.completion_tokens} completion tokens`);
    const cached = u.prompt_tokens_details.cached_tokens;
    if (!withSession && cached !== 0) throw new Error(`no-session turn ${turn + 1} reused ${cached} cached tokens`);
    run.promptTokens += u.prompt_tokens;
    run.prefilledTokens += u.prompt_tokens - cached;
    run.cachedPerTurn.push(cached);
    body += `${r.text}\nUSER: ${randomText(USER_TEXT)}\nBOT:`;
  }
  run.seconds = (performance.now() - start) / 1000;
  if (sessionId) {
    const res = await fetch(`${url}/v1/sessions/${sessionId}`, { method: 'DELETE' });
    await res.arrayBuffer();
  }
  return run;
}

// ---- main ----

const server = await startService();
log(`server ${server.url} (pid ${server.pid}); ${REPS} cold/warm reps, ${CHAT_REPS} chat reps of ${CHAT_TURNS} turns`);
const pairs: Pair[] = [];
let chats: ChatRun[][];
try {
  log('warm-up (one cold/warm pair)');
  await coldWarm(server.url);
  for (let rep = 0; rep < REPS; rep++) {
    const p = await coldWarm(server.url);
    pairs.push(p);
    log(
      `rep ${rep + 1}/${REPS}: cold ${p.cold.ttftMs.toFixed(1)} ms, warm ${p.warm.ttftMs.toFixed(1)} ms ` +
        `(cached ${p.warm.usage.prompt_tokens_details.cached_tokens}/${p.warm.usage.prompt_tokens})`,
    );
  }
  chats = await interleave(CHAT_REPS, [() => chat(server.url, true), () => chat(server.url, false)], ([s, n], rep) =>
    log(
      `chat rep ${rep + 1}/${CHAT_REPS}: session ${s!.prefilledTokens} prefilled in ${s!.seconds.toFixed(2)} s, ` +
        `no session ${n!.prefilledTokens} prefilled in ${n!.seconds.toFixed(2)} s`,
    ),
  );
} finally {
  const code = await server.stop();
  if (code !== 0) log(`WARNING: server exited with ${code}:\n${server.output()}`);
}

const cold = median(pairs.map((p) => p.cold.ttftMs));
const warm = median(pairs.map((p) => p.warm.ttftMs));
const [sessionRuns, plainRuns] = chats as [ChatRun[], ChatRun[]];
const summary = (runs: ChatRun[]) => ({
  prefilled_tokens: median(runs.map((r) => r.prefilledTokens)),
  seconds: round2(median(runs.map((r) => r.seconds))),
  prompt_tokens: median(runs.map((r) => r.promptTokens)),
  runs: runs.map((r) => ({ prefilled_tokens: r.prefilledTokens, seconds: round2(r.seconds), cached_per_turn: r.cachedPerTurn })),
});
const result = {
  cold_ttft_ms: round1(cold),
  warm_ttft_ms: round1(warm),
  ratio: round2(cold / warm),
  chat: { turns: CHAT_TURNS, session: summary(sessionRuns), no_session: summary(plainRuns) },
  runs: {
    cold_ttft_ms: pairs.map((p) => round1(p.cold.ttftMs)),
    warm_ttft_ms: pairs.map((p) => round1(p.warm.ttftMs)),
    warm_cached_tokens: pairs.map((p) => p.warm.usage.prompt_tokens_details.cached_tokens),
  },
  settings: {
    prefix_tokens: PREFIX_TOKENS,
    suffix_tokens: SUFFIX_TOKENS,
    ttft_max_tokens: TTFT_MAX_TOKENS,
    reps: REPS,
    chat_turns: CHAT_TURNS,
    chat_reps: CHAT_REPS,
    chat_max_tokens: CHAT_MAX_TOKENS,
    chat_user_line_tokens: USER_TEXT + 12,
  },
  ...benchMeta(),
};
mkdirSync(dirname(OUT_FILE), { recursive: true });
writeFileSync(OUT_FILE, `${JSON.stringify(result, null, 2)}\n`);

const c = result.chat;
const lines = [
  `Prefix cache: TTFT for a ${PREFIX_TOKENS}-token prefix + ${SUFFIX_TOKENS}-token suffix, median of ${REPS} (ratio = cold / warm, goal ≥ 10)`,
  '',
  '| cold ms | warm ms | ratio | warm cached tokens |',
  '|--------:|--------:|------:|-------------------:|',
  `| ${result.cold_ttft_ms.toFixed(1)} | ${result.warm_ttft_ms.toFixed(1)} | ${result.ratio.toFixed(2)}× | ${Math.min(...result.runs.warm_cached_tokens)}–${Math.max(...result.runs.warm_cached_tokens)} |`,
  '',
  `Chat: ${CHAT_TURNS} turns (+${CHAT_MAX_TOKENS}-token reply, +${USER_TEXT + 12}-token user line each), median of ${CHAT_REPS} interleaved reps`,
  '',
  '| | prompt tokens | prefilled tokens | seconds |',
  '|:--|------:|------:|------:|',
  `| session | ${c.session.prompt_tokens} | ${c.session.prefilled_tokens} | ${c.session.seconds.toFixed(2)} |`,
  `| no session (no reuse) | ${c.no_session.prompt_tokens} | ${c.no_session.prefilled_tokens} | ${c.no_session.seconds.toFixed(2)} |`,
  '',
  `${result.machine.cpu}, ${result.machine.cores} cores, Node ${result.node}; wrote ${relative(process.cwd(), OUT_FILE)}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
