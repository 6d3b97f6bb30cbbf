// GET /openapi.json — generated from the same zod schemas that validate requests.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { catalog } from '../errors.js';
import * as s from '../http/schemas.js';

const json = (schema: z.ZodType) => ({ 'application/json': { schema: z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) } });
const errors = Object.fromEntries(
  [...new Set(Object.values(catalog).map((e) => e.status))].map((status) => [
    String(status),
    {
      description: Object.values(catalog)
        .filter((e) => e.status === status)
        .map((e) => e.description)
        .join(' '),
      content: json(s.errorResponse),
    },
  ]),
);
const generation = (summary: string, body: z.ZodType, response: z.ZodType) => ({
  post: {
    summary,
    requestBody: { required: true, content: json(body) },
    responses: {
      200: {
        description: 'The completion as JSON, or with `stream: true` an SSE stream of chunks ending in `data: [DONE]`.',
        content: { ...json(response), 'text/event-stream': { schema: { type: 'string' } } },
      },
      ...errors,
    },
  },
});

export function openApiDocument(version: string) {
  return {
    openapi: '3.1.0',
    info: { title: 'kvserve', version, description: 'OpenAI-compatible text generation with a managed KV cache.' },
    // When API keys are configured every route needs one, except those that say `security: []`.
    components: {
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'An API key (API_KEYS_FILE or API_KEY); its tenant scopes sessions and cache.' },
      },
    },
    security: [{ bearerAuth: [] }],
    paths: {
      '/v1/completions': generation('Text completion', s.completionRequest, s.completionResponse),
      '/v1/chat/completions': generation('Chat completion', s.chatRequest, s.chatResponse),
      '/v1/models': { get: { summary: 'The served model', responses: { 200: { description: 'A list with one model.' } } } },
      '/tokenize': {
        post: {
          summary: 'Text or messages to token ids',
          requestBody: { content: json(s.tokenizeRequest) },
          responses: { 200: { description: '{tokens, count, max_model_len}' }, ...errors },
        },
      },
      '/detokenize': {
        post: { summary: 'Token ids to text', requestBody: { content: json(s.detokenizeRequest) }, responses: { 200: { description: '{prompt}' }, ...errors } },
      },
      '/health': { get: { summary: 'Liveness', security: [], responses: { 200: { description: 'The process serves HTTP.' } } } },
      '/health/ready': {
        get: { summary: 'Readiness', security: [], responses: { 200: { description: 'Model loaded, engine answering.' }, 503: { description: 'Not ready.' } } },
      },
    },
  };
}

export default async function openapi(app: FastifyInstance, opts: { version: string }): Promise<void> {
  const doc = openApiDocument(opts.version);
  app.get('/openapi.json', async () => doc);
}
