// Shared by /v1/completions and /v1/chat/completions: turns a validated body into an engine
// request (limits and sampling checked), runs it, and answers as JSON or as an SSE stream.
// The route supplies only how a choice looks (`text` or `message`/`delta`).
import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { DoneEvent, EngineEvent, FinishReason } from '../core/scheduler/events.js';
import type { GenerateRequest } from '../core/scheduler/sequence.js';
import { type ApiError, apiError } from '../errors.js';
import { usageOf } from './openai.js';
import { finishRequest } from './request-log.js';
import type { ChatRequest, CompletionRequest } from './schemas.js';
import type { Services } from './services.js';
import { SseStream } from './sse.js';

type Body = CompletionRequest | ChatRequest;

export interface ChoiceFormat {
  idPrefix: string;
  object: string;
  chunkObject: string;
  /** The field whose length the context check names ('prompt' or 'messages'). */
  promptParam: string;
  choice(text: string, finishReason: FinishReason | null): Record<string, unknown>;
  chunkChoice(text: string, finishReason: FinishReason | null, first: boolean): Record<string, unknown>;
}

/** A streaming request whose engine answers within this long gets a plain HTTP status (e.g. 503) instead of an SSE error event. */
const STREAM_FIRST_EVENT_WAIT_MS = 50;

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

export async function planRequest(body: Body, prompt: string, services: Services, format: ChoiceFormat, tenant: string): Promise<GenerateRequest> {
  const engine = services.engine();
  const context = engine.info.contextLength;
  const { requested, param } = maxTokensOf(body);
  checkPromptSize(services, format.promptParam, prompt.length);
  const promptIds = await engine.encode(prompt);
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

/** Runs the generation and writes the whole response (JSON or SSE). */
export async function respond(
  request: FastifyRequest,
  reply: FastifyReply,
  services: Services,
  body: Body,
  genRequest: GenerateRequest,
  format: ChoiceFormat,
): Promise<void> {
  const engine = services.engine();
  const { metrics } = services;
  const maxTokensParam = maxTokensOf(body).param;
  const id = `${format.idPrefix}-${randomUUID().replaceAll('-', '')}`;
  const created = Math.floor(Date.now() / 1000);
  const model = engine.info.id;
  const controller = new AbortController();
  // The client going away (mid-stream or before the first token) aborts the work.
  const onClose = (): void => {
    if (!reply.raw.writableFinished) controller.abort();
  };
  reply.raw.on('close', onClose);
  const untrack = services.track(controller);
  const stats = request.generation;
  stats.promptTokens = genRequest.promptIds.length;
  // The tenant's KV share travels with its request: the engine orders evictions by it.
  const kvShare = request.server.auth.keys.limits(genRequest.tenant ?? request.tenant).kvShare;
  const events = engine.generate({ ...genRequest, kvShare }, controller.signal)[Symbol.asyncIterator]();
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
    stats.completionTokens = done.usage.completionTokens;
    stats.finishReason = done.finishReason;
    stats.cachedTokens = done.usage.cachedTokens;
    metrics.promptTokens.inc(done.usage.promptTokens);
    metrics.generatedTokens.inc(done.usage.completionTokens);
    // Refused before it ran (no queue time): a rejection, not a finished generation.
    if (done.errorCode && done.errorCode !== 'internal' && done.queueMs === undefined) {
      metrics.rejected.inc({ reason: done.errorCode });
      return;
    }
    if (done.queueMs !== undefined) metrics.queueTime.observe(done.queueMs / 1000);
    metrics.finished.inc({ reason: done.finishReason });
    if (done.finishReason === 'abort') metrics.aborted.inc();
    metrics.requestDuration.observe((performance.now() - stats.startedAt) / 1000);
  };

  const stream = async (sse: SseStream, firstEvent: Promise<IteratorResult<EngineEvent>>): Promise<void> => {
    const includeUsage = body.stream_options?.include_usage ?? false;
    const chunk = (choices: unknown[], usage?: unknown) => ({
      id,
      object: format.chunkObject,
      created,
      model,
      choices,
      ...(includeUsage ? { usage: usage ?? null } : {}),
    });
    let first = true;
    for (let next = await firstEvent; !next.done; next = await events.next()) {
      const e = next.value;
      if (e.text) {
        sawText();
        await sse.send(chunk([format.chunkChoice(e.text, null, first)]));
        first = false;
      }
      if (e.type !== 'done') continue;
      finished(e);
      if (e.finishReason === 'error') {
        if (e.errorCode === 'internal' || !e.errorCode) request.log.error({ err: e.error }, 'generation failed mid-stream');
        else request.log.warn({ code: e.errorCode, message: e.error }, 'generation ended mid-stream');
        await sse.send(engineError(e, maxTokensParam).toBody());
      } else {
        await sse.send(chunk([format.chunkChoice('', e.finishReason, first)]));
        if (includeUsage) await sse.send(chunk([], usageOf(e.usage)));
      }
    }
    stats.status = controller.signal.aborted && sse.closed ? 499 : 200;
    sse.end();
  };

  try {
    if (!body.stream) {
      let text = '';
      for (;;) {
        const { value: e, done: ended } = await events.next();
        if (ended) throw new Error('generation ended without a result');
        if (e.text) {
          sawText();
          text += e.text;
        }
        if (e.type !== 'done') continue;
        finished(e);
        if (e.finishReason === 'error') {
          if (e.errorCode === 'internal' || !e.errorCode) request.log.error({ err: e.error }, 'generation failed');
          throw engineError(e, maxTokensParam);
        }
        if (controller.signal.aborted && reply.raw.destroyed) {
          stats.status = 499;
          return;
        }
        await reply.send({ id, object: format.object, created, model, choices: [format.choice(text, e.finishReason)], usage: usageOf(e.usage) });
        return;
      }
    }

    // Refusals arrive within milliseconds: answer those with a real status code before
    // committing to a 200 event stream.
    const firstEvent = events.next();
    const early = await Promise.race([firstEvent, delay(STREAM_FIRST_EVENT_WAIT_MS, undefined, { ref: false })]);
    if (early && !early.done && early.value.type === 'done' && early.value.finishReason === 'error') {
      finished(early.value);
      throw engineError(early.value, maxTokensParam);
    }

    reply.hijack();
    const sse = new SseStream(reply.raw, services.config.sse, { 'x-request-id': String(request.id) });
    try {
      await stream(sse, firstEvent);
    } catch (err) {
      // Past the hijack Fastify can no longer answer for us: never leave the client hanging.
      request.log.error({ err }, 'stream failed');
      reply.raw.destroy();
    }
  } finally {
    reply.raw.off('close', onClose);
    untrack();
    // A client that left never gets Fastify's onResponse: account for the request here.
    if (controller.signal.aborted && !reply.raw.writableEnded) finishRequest(request, 499);
    // Leaving early (an error, a closed client) tells the worker to stop.
    await events.return?.(undefined);
  }
}
