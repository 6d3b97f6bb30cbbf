// Shared by /v1/completions and /v1/chat/completions: turns a validated body into an engine
// request (limits and sampling checked), runs it, and answers as JSON or as an SSE stream.
// The route supplies only how a choice looks (`text` or `message`/`delta`).
import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { DoneEvent, EngineEvent, FinishReason } from '../core/scheduler/events.js';
import type { GenerateRequest } from '../core/scheduler/sequence.js';
import { type ApiError, apiError } from '../errors.js';
import type { TokenLogprob } from '../core/sampling/logprobs.js';
import { type ChoiceFormat, type ChoiceState, type LogprobEntry, entriesOf, merge, newChoice, pick, promptEntries } from './choices.js';
import type { EngineFields, OutputPlan } from './fields.js';
import { usageOf } from './openai.js';
import { finishRequest } from './request-log.js';
import type { ChatRequest, CompletionRequest } from './schemas.js';
import type { Services } from './services.js';
import { SseStream } from './sse.js';

type Body = CompletionRequest | ChatRequest;

export type { ChoiceFormat } from './choices.js';

/**
 * A prompt longer than this many tokens' worth of characters cannot fit the context whatever
 * it says, and is refused before it is tokenized: a megabyte of text (within the body limit)
 * costs most of a second of tokenizing (on the tokenizer thread, see EngineClient.encode) for
 * nothing. The margin covers normalizers that merge characters (NFC can make three code
 * points one).
 */
const PROMPT_CHARS_MARGIN = 4;

/** The completion length the client asked for, and the field it used (chat: the newer name wins, as at OpenAI and vLLM). */
function maxTokensOf(body: Body): { requested: number | undefined; param: string } {
  if ('max_completion_tokens' in body && body.max_completion_tokens != null) return { requested: body.max_completion_tokens, param: 'max_completion_tokens' };
  return { requested: body.max_tokens ?? undefined, param: 'max_tokens' };
}

/**
 * Refuses, before any costly work, input that cannot fit the context: `chars` characters of
 * text (more than any `contextLength` tokens of this tokenizer span) or, for chat, more
 * messages than the context has tokens (a chat template gives each message at least one
 * token; rendering 30,000 of them took the HTTP thread half a second).
 */
export function checkPromptSize(services: Services, param: string, chars: number, messages?: number): void {
  const engine = services.engine();
  const context = engine.info.contextLength;
  const limit = `This model's maximum context length is ${context} tokens. However, the ${param}`;
  if (messages !== undefined && messages > context) {
    throw apiError('context_length_exceeded', `${limit} has ${messages} messages, more than fit in ${context} tokens (refused without rendering them).`, param);
  }
  if (chars > PROMPT_CHARS_MARGIN * engine.tokenizer.maxTokenChars * context) {
    throw apiError(
      'context_length_exceeded',
      `${limit} is ${chars} characters, more than ${context} tokens of this tokenizer can hold (refused without tokenizing it).`,
      param,
    );
  }
}

/**
 * One prompt (text, or token ids as completions allow) as an engine request: context limits
 * checked, sampling parameters and the other fields (`extra`, see fields.ts) attached.
 */
export async function planRequest(
  body: Body,
  prompt: string | readonly number[],
  services: Services,
  format: ChoiceFormat,
  tenant: string,
  extra: EngineFields = {},
): Promise<GenerateRequest> {
  const engine = services.engine();
  const context = engine.info.contextLength;
  const { requested, param } = maxTokensOf(body);
  let promptIds: number[];
  if (typeof prompt === 'string') {
    checkPromptSize(services, format.promptParam, prompt.length);
    promptIds = await engine.encode(prompt);
  } else {
    const bad = prompt.find((id) => id >= engine.info.vocabSize);
    if (bad !== undefined) throw apiError('invalid_request', `token id ${bad} is outside the vocabulary (0..${engine.info.vocabSize - 1})`, format.promptParam);
    promptIds = [...prompt];
  }
  if (promptIds.length === 0) throw apiError('invalid_request', `${format.promptParam} must not be empty`, format.promptParam);
  const room = context - promptIds.length;
  if (requested != null ? promptIds.length + requested > context : room < 1) {
    throw apiError(
      'context_length_exceeded',
      `This model's maximum context length is ${context} tokens. However, you requested ${promptIds.length + (requested ?? 1)} tokens (${promptIds.length} in the ${format.promptParam}, ${requested ?? 1} in the completion).`,
      // The prompt alone leaves no room: it is the field to shorten, whatever max_tokens says.
      requested == null || room < 1 ? format.promptParam : param,
    );
  }
  // The schema checked every field's range: these are the sampler's own parameters.
  const sampling = {
    temperature: body.temperature ?? 1,
    topK: Math.max(0, body.top_k ?? 0),
    topP: body.top_p ?? 1,
    minP: body.min_p ?? 0,
    repetitionPenalty: body.repetition_penalty ?? 1,
    frequencyPenalty: body.frequency_penalty ?? 0,
    presencePenalty: body.presence_penalty ?? 0,
    ...(body.seed != null ? { seed: body.seed } : {}),
  };
  const stop = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  return {
    promptIds,
    maxTokens: requested ?? Math.min(room, services.config.limits.defaultMaxTokens),
    sampling,
    stop,
    ignoreEos: body.ignore_eos ?? false,
    tenant,
    ...(body.session_id != null ? { sessionId: body.session_id } : {}),
    ...extra,
  };
}

/**
 * The HTTP error for a generation the engine refused or failed: its catalog code as it is
 * (status and Retry-After come with it), except that an internal failure's message stays in
 * the log. `maxTokensParam` names the field a budget refusal is about.
 */
function engineError(done: DoneEvent, maxTokensParam: string): ApiError {
  const code = done.errorCode ?? 'internal';
  if (code === 'internal') return apiError('internal', 'generation failed');
  return apiError(code, done.error ?? code, code === 'kv_budget_exceeded' ? maxTokensParam : null);
}

/** One engine request of a response: a prompt (its text for echo), generating `plan.generated` choices. */
export interface PlannedPrompt {
  request: GenerateRequest;
  text: string;
}

/** Runs the generations (one per prompt) and writes the whole response (JSON or SSE). */
export async function respond(
  request: FastifyRequest,
  reply: FastifyReply,
  services: Services,
  body: Body,
  prompts: readonly PlannedPrompt[],
  plan: OutputPlan,
  format: ChoiceFormat,
): Promise<void> {
  const engine = services.engine();
  const { metrics } = services;
  const maxTokensParam = maxTokensOf(body).param;
  const id = `${format.idPrefix}-${randomUUID().replaceAll('-', '')}`;
  const created = Math.floor(Date.now() / 1000);
  const model = engine.info.id;
  const decode = (tokenId: number): string => engine.tokenizer.decode([tokenId]);
  // Admission, here and now: a refusal is a 429 before anything was sent.
  const release = services.admit(request.tenant);
  const controller = new AbortController();
  // The client going away (mid-stream or before the first token) aborts the work.
  const onClose = (): void => {
    if (!reply.raw.writableFinished) controller.abort();
  };
  reply.raw.on('close', onClose);
  const untrack = services.track(controller);
  const stats = request.generation;
  stats.promptTokens = prompts.reduce((sum, p) => sum + p.request.promptIds.length, 0);
  // The tenant's KV share travels with its requests: the engine orders evictions by it.
  const kvShare = request.server.auth.keys.limits(request.tenant).kvShare;
  const iterators = prompts.map((p) => engine.generate({ ...p.request, kvShare }, controller.signal)[Symbol.asyncIterator]());
  const events = merge(iterators);
  const total = { promptTokens: 0, completionTokens: 0, cachedTokens: 0 };
  let lastTextAt: number | undefined;
  // Per-text timing: time to first token, then inter-token latency.
  const sawText = (): void => {
    const now = performance.now();
    if (stats.ttftMs === undefined) {
      stats.ttftMs = now - stats.startedAt;
      metrics.timeToFirstToken.observe(stats.ttftMs / 1000);
    } else if (lastTextAt !== undefined) {
      metrics.interTokenLatency.observe((now - lastTextAt) / 1000);
    }
    lastTextAt = now;
  };
  const finished = (done: DoneEvent): void => {
    total.promptTokens += done.usage.promptTokens;
    total.completionTokens += done.usage.completionTokens;
    total.cachedTokens += done.usage.cachedTokens;
    stats.completionTokens = total.completionTokens;
    stats.finishReason = done.finishReason;
    stats.cachedTokens = total.cachedTokens;
    metrics.promptTokens.inc(done.usage.promptTokens);
    metrics.generatedTokens.inc(done.usage.completionTokens);
    // Refused before it ran (no queue time): a rejection, not a finished generation.
    const failed = done.errorCode === 'internal' || done.errorCode === 'engine_restarted';
    if (done.errorCode && !failed && done.queueMs === undefined) {
      metrics.rejected.inc({ reason: done.errorCode });
      return;
    }
    if (done.queueMs !== undefined) metrics.queueTime.observe(done.queueMs / 1000);
    metrics.finished.inc({ reason: done.finishReason });
    if (done.finishReason === 'abort') metrics.aborted.inc();
    metrics.requestDuration.observe((performance.now() - stats.startedAt) / 1000);
  };

  // Choice k of prompt p is index p * generated + k; best_of renumbers the kept ones at the end.
  const choices = new Map<number, ChoiceState>();
  /** A piece of choice `index`: its state updated, and what the piece adds (for a stream chunk). */
  const piece = (p: number, e: { index?: number; text: string; logprobs?: TokenLogprob[]; promptLogprobs?: TokenLogprob[] }, end?: FinishReason) => {
    const index = p * plan.generated + (e.index ?? 0);
    const c = choices.get(index) ?? newChoice();
    choices.set(index, c);
    let text = e.text;
    const entries: LogprobEntry[] = [];
    if (c.fresh && plan.echo) {
      text = prompts[p]!.text + text;
      if (e.promptLogprobs) entries.push(...promptEntries(decode, prompts[p]!.request.promptIds, e.promptLogprobs));
    }
    entries.push(...entriesOf(decode, e.logprobs));
    const offset = c.text.length;
    c.text += text;
    c.entries.push(...entries);
    if (end) c.finishReason = end;
    const first = c.fresh;
    c.fresh = false;
    const logprobs = plan.logprobs === undefined ? null : format.logprobs(entries, offset);
    return { index, text, first, logprobs, hasLogprobs: entries.length > 0 };
  };
  const failure = (e: DoneEvent): ApiError | undefined => (e.finishReason === 'error' ? engineError(e, maxTokensParam) : undefined);
  const logFailure = (e: DoneEvent, where: string): void => {
    if (e.errorCode === 'internal' || !e.errorCode) request.log.error({ err: e.error }, `generation failed${where}`);
    else request.log.warn({ code: e.errorCode, message: e.error }, `generation ended${where}`);
  };

  const stream = async (sse: SseStream, buffered: IteratorResult<[number, EngineEvent]>[]): Promise<void> => {
    const includeUsage = body.stream_options?.include_usage ?? false;
    const chunk = (list: unknown[], usage?: unknown) => ({
      id,
      object: format.chunkObject,
      created,
      model,
      choices: list,
      ...(includeUsage ? { usage: usage ?? null } : {}),
    });
    let failed = false;
    let replayed = 0;
    const nextEvent = () => (replayed < buffered.length ? Promise.resolve(buffered[replayed++]!) : events.next());
    for (let next = await nextEvent(); !next.done; next = await nextEvent()) {
      const [p, e] = next.value;
      if (e.type === 'admitted') continue;
      // A request of one choice ends it with `done`; one of several with a delta per choice.
      const end = e.type === 'delta' ? e.finishReason : e.finishReason !== 'error' && plan.generated === 1 ? e.finishReason : undefined;
      if (e.type === 'done') finished(e);
      const err = e.type === 'done' ? failure(e) : undefined;
      if (err && !failed) {
        failed = true;
        logFailure(e as DoneEvent, ' mid-stream');
        await sse.send(err.toBody());
        controller.abort();
      }
      if (failed || (e.type === 'done' && !end && !e.text)) continue;
      const out = piece(p, e, end);
      if (out.text || out.hasLogprobs || (out.first && plan.echo)) {
        sawText();
        await sse.send(chunk([format.chunkChoice(out.index, out.text, null, out.first, out.logprobs)]));
        out.first = false;
      }
      if (end) await sse.send(chunk([format.chunkChoice(out.index, '', end, out.first, null)]));
    }
    if (!failed && includeUsage) await sse.send(chunk([], usageOf(total)));
    stats.status = controller.signal.aborted && sse.closed ? 499 : 200;
    sse.end();
  };

  try {
    if (!body.stream) {
      for (;;) {
        const next = await events.next();
        if (next.done) break;
        const [p, e] = next.value;
        if (e.type === 'admitted') continue;
        if (e.text) sawText();
        if (e.type === 'delta') {
          piece(p, e, e.finishReason);
          continue;
        }
        finished(e);
        const err = failure(e);
        if (err) {
          logFailure(e, '');
          throw err;
        }
        if (plan.generated === 1) piece(p, e, e.finishReason);
      }
      if (controller.signal.aborted && reply.raw.destroyed) {
        stats.status = 499;
        return;
      }
      await reply.send({
        id,
        object: format.object,
        created,
        model,
        choices: pick(
          choices,
          prompts.map((p) => (p.request.promptLogprobs !== undefined ? p.request.promptIds.length : 0)),
          plan,
          format,
        ),
        usage: usageOf(total),
      });
      return;
    }

    // The event stream opens only once the engine has admitted every prompt: each refusal
    // (queue full, no KV room in time, a restart while queued) comes before it, as a status
    // with Retry-After, which clients retry; only a running request can end in an error event.
    const buffered: IteratorResult<[number, EngineEvent]>[] = [];
    const settled = new Set<number>();
    while (settled.size < prompts.length) {
      const next = await events.next();
      buffered.push(next);
      if (next.done) break;
      const [p, e] = next.value;
      const before = settled.has(p);
      settled.add(p);
      if (e.type !== 'done' || before) continue;
      finished(e);
      if (e.finishReason === 'error') throw engineError(e, maxTokensParam);
      // Ended before the stream opened and not refused: the client left while queued.
      stats.status = 499;
      return;
    }

    reply.hijack();
    const sse = new SseStream(reply.raw, services.config.sse, { 'x-request-id': String(request.id) });
    try {
      await stream(sse, buffered);
    } catch (err) {
      // Past the hijack Fastify can no longer answer for us: never leave the client hanging.
      request.log.error({ err }, 'stream failed');
      reply.raw.destroy();
    }
  } finally {
    reply.raw.off('close', onClose);
    untrack();
    release();
    // A client that left never gets Fastify's onResponse: account for the request here.
    if (controller.signal.aborted && !reply.raw.writableEnded) finishRequest(request, 499);
    // Leaving early (an error, a closed client) tells the worker to stop.
    await Promise.all(iterators.map((it) => it.return?.(undefined)));
  }
}
