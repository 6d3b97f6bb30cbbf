// The OpenAI fields beyond sampling — n and best_of, logprobs and echo, logit_bias,
// response_format — checked against each other and the model, and turned into the engine's
// request fields plus what the response must show.
import { UnsupportedSchemaError } from '../core/sampling/grammar/index.js';
import { compileJsonObject, compileSchema } from '../core/sampling/grammar/schema.js';
import type { GenerateRequest } from '../core/scheduler/sequence.js';
import { apiError } from '../errors.js';
import type { ChatRequest, CompletionRequest } from './schemas.js';

type Body = CompletionRequest | ChatRequest;

/** What the response shows, beside what the engine is asked. */
export interface OutputPlan {
  /** Choices returned per prompt. */
  n: number;
  /** Choices generated per prompt (best_of ≥ n; the n best are returned). */
  generated: number;
  /** The prompt text (and its logprobs) go first in each choice (completions' echo). */
  echo: boolean;
  /** Alternatives shown per position; undefined: no logprobs in the response. */
  logprobs: number | undefined;
}

export type EngineFields = Pick<GenerateRequest, 'n' | 'logprobs' | 'promptLogprobs' | 'logitBias' | 'responseFormat'>;

const isCompletion = (body: Body): body is CompletionRequest => 'prompt' in body;

export function engineFields(body: Body, vocabSize: number): { fields: EngineFields; plan: OutputPlan } {
  const n = body.n ?? 1;
  let logprobs: number | undefined;
  let echo = false;
  let generated = n;
  if (isCompletion(body)) {
    logprobs = body.logprobs ?? undefined;
    echo = body.echo ?? false;
    if (body.max_tokens === 0 && !echo) throw apiError('invalid_request', 'max_tokens: 0 is allowed only with echo (scoring the prompt)', 'max_tokens');
    if (body.best_of != null) {
      if (body.best_of < n) throw apiError('invalid_request', `best_of (${body.best_of}) must be at least n (${n})`, 'best_of');
      if (body.best_of > n && body.stream) throw apiError('invalid_request', 'best_of > n cannot be streamed', 'best_of');
      generated = body.best_of;
    }
  } else {
    if (body.top_logprobs != null && body.logprobs !== true) throw apiError('invalid_request', 'top_logprobs requires logprobs: true', 'top_logprobs');
    if (body.logprobs === true) logprobs = body.top_logprobs ?? 0;
  }
  const fields: EngineFields = {};
  if (generated > 1) fields.n = generated;
  // best_of ranks choices by their tokens' logprobs, so they are computed even if not shown.
  if (logprobs !== undefined || generated > n) fields.logprobs = logprobs ?? 0;
  if (echo && logprobs !== undefined) fields.promptLogprobs = logprobs;
  if (body.logit_bias) {
    const bias: [number, number][] = [];
    for (const [key, value] of Object.entries(body.logit_bias)) {
      const id = Number(key);
      if (!(id < vocabSize)) throw apiError('invalid_request', `logit_bias: token id ${key} is outside the vocabulary (0..${vocabSize - 1})`, 'logit_bias');
      bias.push([id, value]);
    }
    if (bias.length > 0) fields.logitBias = bias;
  }
  const format = body.response_format;
  if (format && format.type !== 'text') {
    checkFormat(format);
    fields.responseFormat = format;
  }
  return { fields, plan: { n, generated, echo, logprobs } };
}

/** A schema the grammar cannot enforce is refused here, naming the keywords (the engine compiles it again for its vocabulary). */
function checkFormat(format: NonNullable<Body['response_format']>): void {
  try {
    if (format.type === 'json_object') compileJsonObject();
    else if (format.type === 'json_schema') compileSchema(format.json_schema.schema ?? true, { strict: format.json_schema.strict === true });
  } catch (err) {
    const param = format.type === 'json_schema' ? 'response_format.json_schema.schema' : 'response_format';
    const message = err instanceof UnsupportedSchemaError ? err.message : `invalid JSON schema: ${(err as Error).message}`;
    throw apiError('invalid_request', message, param);
  }
}
