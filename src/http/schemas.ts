// Request and response shapes of the API, declared once with zod: they validate bodies,
// type the handlers and generate /openapi.json. Unknown fields are ignored, as OpenAI and
// other OpenAI-compatible servers do; known fields are checked strictly.
import { z } from 'zod';

/** A field that changes what a client expects back and that kvserve does not implement: a 400 naming it, never silently dropped. */
const refuse = (field: string) =>
  z
    .unknown()
    .refine((v) => v == null, { error: `${field} is not supported by this server` })
    .optional()
    .describe('Not supported: refused with a 400.');
const refused = {
  tools: refuse('tools'),
  tool_choice: refuse('tool_choice'),
  functions: refuse('functions'),
  function_call: refuse('function_call'),
  audio: refuse('audio'),
  prediction: refuse('prediction'),
};

const jsonSchemaFormat = z.object({
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, { error: 'a-z, A-Z, 0-9, _ and -, at most 64 characters' }),
  description: z.string().optional(),
  schema: z.record(z.string(), z.unknown()).optional(),
  strict: z.boolean().nullish(),
});
export const responseFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }),
  z.object({ type: z.literal('json_object') }),
  z.object({ type: z.literal('json_schema'), json_schema: jsonSchemaFormat }),
]);

const tokenIds = z.array(z.number().int().min(0)).min(1);

const samplingFields = {
  model: z.string().min(1).optional().describe('The served model id; optional, defaults to it.'),
  max_tokens: z.number().int().min(1).nullish().describe('Most tokens to generate.'),
  temperature: z.number().min(0).max(2).nullish().describe('0 = greedy. Default 1.'),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish().describe('0 or -1 disables.'),
  min_p: z.number().min(0).max(1).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullish().describe('Same seed and request, same text.'),
  stop: z
    .union([z.string(), z.array(z.string()).max(16)])
    .nullish()
    .describe('Up to 16 strings; generation ends before the first match, which is not returned.'),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  n: z.number().int().min(1).max(128).nullish().describe('Choices to generate; the prompt is computed once and its KV cache copied into each.'),
  logit_bias: z
    .record(z.string().regex(/^\d+$/, { error: 'keys must be token ids' }), z.number().min(-100).max(100))
    .nullish()
    .describe('Token id → bias (−100…100) added to its logit before sampling.'),
  response_format: responseFormat.nullish().describe('Structured output by constrained decoding: the output always parses (and validates against the schema).'),
  ...refused,
  user: z.string().nullish(),
  ignore_eos: z.boolean().nullish().describe('Keep generating past end-of-sequence tokens (as vLLM).'),
  session_id: z
    .string()
    .min(1)
    .max(256)
    .nullish()
    .describe("kvserve: names a session; its KV cache is kept after the request and reused by the next request whose prompt starts with the session's tokens."),
};

export const completionRequest = z.object({
  ...samplingFields,
  prompt: z
    .union([
      z.string(),
      tokenIds,
      z
        .array(z.union([z.string(), tokenIds]))
        .min(1)
        .max(64),
    ])
    .describe('The text to continue, as text or token ids; an array of those is a batch (n choices each).'),
  max_tokens: z.number().int().min(0).nullish().describe('Most tokens to generate; 0 (with echo) scores the prompt only.'),
  logprobs: z.number().int().min(0).max(20).nullish().describe("Each token's log-probability and its k most likely alternatives (raw model distribution)."),
  echo: z.boolean().nullish().describe('Return the prompt before the completion (with its logprobs when logprobs is set; the first is null).'),
  best_of: z.number().int().min(1).max(128).nullish().describe('Generate best_of choices and return the n with the highest mean token logprob.'),
  suffix: z.null({ error: 'suffix is not supported' }).optional(),
});
export type CompletionRequest = z.infer<typeof completionRequest>;

const textPart = z.object({ type: z.literal('text', { error: 'only text content parts are supported' }), text: z.string() });
const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(textPart)]),
  name: z.string().optional(),
});

export const chatRequest = z.object({
  ...samplingFields,
  messages: z.array(message).min(1),
  max_completion_tokens: z.number().int().min(1).nullish().describe('Alias of max_tokens (newer OpenAI name).'),
  logprobs: z.boolean().nullish().describe("Each output token's log-probability (raw model distribution)."),
  top_logprobs: z.number().int().min(0).max(20).nullish().describe('With logprobs: the k most likely alternatives at each position.'),
});
export type ChatRequest = z.infer<typeof chatRequest>;
export type ChatMessage = z.infer<typeof message>;

export const tokenizeRequest = z.object({
  model: z.string().optional(),
  prompt: z.string().optional(),
  messages: z.array(message).min(1).optional(),
  add_generation_prompt: z.boolean().optional(),
});
export const detokenizeRequest = z.object({
  model: z.string().optional(),
  tokens: z.array(z.number().int().min(0)),
});

const usage = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int() }),
});
const topLogprob = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number().int()) });
const chatLogprob = topLogprob.extend({ top_logprobs: z.array(topLogprob) });
const legacyLogprobs = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number().nullable()),
  top_logprobs: z.array(z.record(z.string(), z.number()).nullable()),
  text_offset: z.array(z.number().int()),
});
const finishReason = z.enum(['stop', 'length', 'abort', 'error']).nullable();

export const completionResponse = z.object({
  id: z.string(),
  object: z.literal('text_completion'),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(z.object({ index: z.number().int(), text: z.string(), finish_reason: finishReason, logprobs: legacyLogprobs.nullable() })),
  usage: usage.optional(),
});

export const chatResponse = z.object({
  id: z.string(),
  object: z.literal('chat.completion'),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(
    z.object({
      index: z.number().int(),
      message: z.object({ role: z.literal('assistant'), content: z.string() }),
      finish_reason: finishReason,
      logprobs: z.object({ content: z.array(chatLogprob) }).nullable(),
    }),
  ),
  usage,
});

export const errorResponse = z.object({
  error: z.object({ message: z.string(), type: z.string(), param: z.string().nullable(), code: z.string().nullable() }),
});

/** "messages[0].content" from a zod issue path. */
export function paramOf(path: readonly PropertyKey[]): string | null {
  let out = '';
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : out ? `.${String(key)}` : String(key);
  return out || null;
}

const bytesOf = z.object({ bytes: z.number().int().min(0), capacity_bytes: z.number().int().min(0) });
const kinds = z.object({ bytes: z.number().int().min(0), entries: z.number().int().min(0) });
const byReason = z.object({ lru: z.number().int().min(0), ttl: z.number().int().min(0), deleted: z.number().int().min(0) });
const tierName = z.enum(['ram', 'compressed', 'disk', 'remote']);

/** GET /v1/kv: the KV cache in counts and sizes (never token contents); the sessions are the caller's tenant's. */
export const kvResponse = z.object({
  object: z.literal('kv'),
  pool: bytesOf
    .extend({
      pinned_entries: z.number().int().min(0),
      by_kind: z.object({ active: kinds, session: kinds, prefix: kinds }),
    })
    .describe('The RAM pool, service-wide: running sequences (active), sessions and prefix blocks share one budget.'),
  tiers: z
    .object({
      ram: bytesOf,
      compressed: bytesOf.nullable(),
      disk: bytesOf.nullable(),
      remote: z
        .object({ connected: z.boolean(), sent_bytes: z.number().int().min(0), received_bytes: z.number().int().min(0) })
        .nullable()
        .describe("The shared tier in Redis (its memory is Redis's to bound): connection and traffic."),
    })
    .describe('Bytes against budget by tier; null when a lower tier is off.'),
  lookups: z.object({ hit: z.number().int(), partial: z.number().int(), miss: z.number().int() }),
  reused_tokens: z.number().int().min(0).describe('Prompt tokens served from the cache since start.'),
  computed_tokens: z.number().int().min(0).describe('Prompt tokens prefilled since start.'),
  hit_rate: z.number().min(0).max(1).nullable().describe('reused_tokens / (reused_tokens + computed_tokens); null before any request.'),
  evictions: z.object({ count: byReason, bytes: byReason }).describe('Cumulative since start, by reason.'),
  sessions: z.array(
    z.object({
      id: z.string(),
      tokens: z.number().int().min(0),
      bytes: z.number().int().min(0),
      created: z.number().int().describe('Unix seconds.'),
      last_used: z.number().int().describe('Unix seconds.'),
      age_seconds: z.number().int().min(0).describe('Since created.'),
      pinned: z.boolean().describe('In use by a running request.'),
      tier: tierName,
    }),
  ),
});
export type KvResponse = z.infer<typeof kvResponse>;
